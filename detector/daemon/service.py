"""The daemon's main loop: sources in, the analysis stages, alerts out through the gate, the
outbox and the sinks; state in SQLite; signals.

Threads: a live capture runs in its own thread and hands micro-batches over through a bounded
queue (when the pipeline falls behind, the capture thread waits, the kernel ring fills and the
kernel drops and counts packets: backpressure ends in counted drops, never in unbounded
memory). Everything else (rotating files, Zeek logs, reporting, state) runs in the main thread,
so the analysis state has a single writer.

Every ``report_s`` the detectors are asked for alerts; the gate lets out what is new; those
alerts, the gate's changes and the positions in Zeek logs are committed in one transaction,
then delivered to each sink from the outbox (each sink's progress is kept, so a sink that was
down gets what it missed, and a crash re-sends at most the last delivery). A rotating file is
marked processed in the same transaction as the alerts it produced.

Every ``epoch_s`` the detectors' state is summarised (a final report) and started afresh,
seeded with what they pinned, so detector memory is bounded in time as well as size; with a
site model that is not frozen, the closed host windows of the epoch update its baselines
(never from a window that looks unusual) and the model is saved in the state database.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter

from detector.alerts import SEVERITY_RANK
from detector.backend import Backend
from detector.config import Config, load_config
from detector.daemon.folder import CaptureFile, RotatingFolder
from detector.daemon.gate import AlertGate
from detector.daemon.exports import ExportInput
from detector.daemon.metrics import Metrics
from detector.daemon.sinks import SinkError, open_sinks
from detector.daemon.state import State
from detector.daemon.zeek import ZeekLog, conn_batch, dns_events
from detector.detect.gpu_theft import join_network
from detector.errors import CaptureError, ConfigError, DetectorError
from detector.l7.events import Events
from detector.pipeline.stages import Stages, time_ordered
from detector.sources import open_capture

log = logging.getLogger("detector.daemon")
PINS_EVERY_S = 60.0
STOP_WAIT_S = 5.0


class Daemon:
    def __init__(self, cfg: Config, backend: Backend, config_path: str | None = None, overrides: dict | None = None,
                 model_key: bytes | None = None):
        self.cfg, self.backend, self.config_path = cfg, backend, config_path
        self.overrides = overrides or {}
        self.model_key = model_key
        d = cfg.daemon
        if not d.sources:
            raise ConfigError("no source: set daemon.iface, daemon.pcap_dir, daemon.zeek_conn, daemon.zeek_dns, "
                              "daemon.flow_listen, daemon.gpu_telemetry or daemon.dcgm_url (or --iface, --pcap-dir, "
                              "--zeek-log, --flow-listen, --gpu-telemetry)", config_path, "daemon")
        self.state = State(d.state_path())
        self.model = self._starting_model(d.model, model_key)
        # inline: every batch's metrics read the detectors' eviction counts, and site inference
        # on the first batch changes what they read (overlap here is a named follow-up)
        self.ipfix = None
        if d.ipfix_export:
            from detector.exports.ipfix_out import IpfixExporter

            try:
                self.ipfix = IpfixExporter(d.ipfix_export, template_every_s=d.ipfix_template_s)
            except OSError as exc:  # (UDP: a name that does not resolve; TCP connects when it sends)
                raise ConfigError(f"{d.ipfix_export}: {exc.strerror or exc}", config_path,
                                  "daemon.ipfix_export") from None
        # flow records, also sent as IPFIX to the site's collector when configured
        self.stages = Stages(cfg, backend, self.model, detect_thread=False, flow_writer=self.ipfix)
        self.stages.site.clock_ns = time.time_ns() if d.iface else None
        self.stages.site.window_flows_max = d.window_flows_max
        self.pins = self._merged_pins(self.state.pins())
        self.stages.detectors = self.stages.new_detectors(self.pins)
        self.gate = AlertGate(d.renotify_s)
        self.gate.restore(self.state.incidents())
        self.metrics = Metrics()
        self.metrics.backend.labels(backend.name, backend.device or "cpu").set(1)
        self.metrics.up.set(time.time())
        self.exports = ExportInput(d, self.metrics) if d.flow_listen else None
        self.gpu = None
        if d.gpu_telemetry or d.dcgm_url:
            from detector.daemon.gpu_watch import GpuWatch

            self.gpu = GpuWatch(cfg, self.metrics)
            profile = getattr(self.model, "gpu", None)
            if profile is not None and d.gpu_keep_s < 2 * profile.window_s:
                log.warning("daemon.gpu_keep_s (%.0f s) keeps less than two GPU windows of the model (%.0f s): "
                            "gpu_profile judges only windows whose samples are all kept", d.gpu_keep_s,
                            profile.window_s)
        self.sinks = open_sinks(d)
        self.sent_upto = {s.name: self.state.sink_progress(s.name) for s in self.sinks}
        self.folder = RotatingFolder(d.pcap_dir, d.pcap_glob, self.state, d.settle_s) if d.pcap_dir else None
        self.zeek = [(kind, ZeekLog(path, self.state)) for kind, path in (("conn", d.zeek_conn), ("dns", d.zeek_dns))
                     if path]
        self.queue: queue.Queue = queue.Queue(d.queue_batches)
        self.stop = threading.Event()
        self.reload_asked = threading.Event()
        self.capture = None
        self.capture_thread = None
        self.capture_error: Exception | None = None
        self._last = Counter()
        self._evicted: dict[str, int] = {}  # per detector, as last exported
        self.epoch_started = time.monotonic()
        self.files_done = 0
        self.alerts_sent = 0
        self.unmarked: dict[CaptureFile, tuple[int, str | None]] = {}  # processed, not yet recorded
        self._last_forget = 0.0

    # -- set-up --------------------------------------------------------------------------------------
    def _starting_model(self, path: str, key: bytes | None):
        """The model learned online from ``path`` (kept in the state), or ``path`` itself when it
        is a model the state did not start from (a retrained one), or None."""
        from detector.baseline.site_model import SiteModel
        from models.store import ModelError, file_digest

        if not path:
            return self.state.load_model(key)
        digest = file_digest(path)
        if digest is None:
            raise ModelError(path, "cannot read the model file")
        if self.state.meta("model_source") != digest:
            model = SiteModel.load(path, key)
            with self.state.transaction() as db:
                self.state.set_meta(db, "model_source", digest)
                db.execute("DELETE FROM model")
            log.info("site model: starting from %s", path)
            return model
        # the same file as before: what was learned from it online, if anything (a frozen model
        # learns nothing and is read from its file again)
        return self.state.load_model(key) or SiteModel.load(path, key)

    def _merged_pins(self, stored: dict) -> dict:
        pins = dict(self.model.pins) if self.model is not None else {}
        pins.update(stored)
        return pins

    def start(self) -> None:
        d = self.cfg.daemon
        if d.metrics:
            self.metrics.serve(d.metrics)
        if d.iface:
            from detector.daemon.live import LiveCapture

            self.capture = LiveCapture(d.iface, d.snaplen, d.bpf, d.promisc, d.ring_mb, d.batch_packets, d.batch_s)
            self.capture_thread = threading.Thread(target=self._capture_loop, name="capture", daemon=True)
            self.capture_thread.start()
        if self.gpu is not None:
            self.gpu.start(self.stop)
        if self.exports is not None:
            self.exports.collector.start(self.stop)
        log.info("detector run: %s; state %s; backend %s", ", ".join(d.sources), self.state.path, self.backend.name)

    def _capture_loop(self) -> None:
        try:
            for batch in self.capture.batches(self.stop):
                # the pipeline may be behind: then this waits, the kernel ring absorbs, then drops
                # and counts (after stop, the main thread is draining the queue)
                self.queue.put(batch)
        except Exception as exc:  # reported by the main loop, which stops
            self.capture_error = exc
            self.stop.set()

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        """Until SIGTERM/SIGINT (or a failure, reported): then flush and save; exit status."""
        failure = None
        try:
            self._loop()
        except DetectorError as exc:
            failure = exc
            log.error("%s: stopping", exc)
        code = self.shutdown()
        return 1 if failure is not None else code

    def _loop(self) -> None:
        d = self.cfg.daemon
        last_report = last_poll = last_pins = last_stats = time.monotonic()
        while not self.stop.is_set():
            if self.reload_asked.is_set():
                self.reload_asked.clear()
                self.reload()
            try:
                batch = self.queue.get(timeout=min(d.poll_s, d.report_s, 0.2))
            except queue.Empty:
                batch = None
            if batch is not None and batch.n:
                self._process(batch)
            now = time.monotonic()
            if self.capture is not None and now - last_stats >= 1.0:  # flows expire on the wall clock
                last_stats = now
                clock = time.time_ns()
                self.stages.site.clock_ns = clock
                self.stages.expire(clock)
                self._count()
                self._kernel_stats()
            if now - last_poll >= d.poll_s:
                last_poll = now
                self._poll_files()
                self._poll_zeek()
                if self.exports is not None:
                    self.exports.poll(self.stages)
            if now - last_report >= d.report_s:
                last_report = now
                self.report(save_pins=now - last_pins >= PINS_EVERY_S)
                if now - last_pins >= PINS_EVERY_S:
                    last_pins = now
            if now - self.epoch_started >= d.epoch_s:
                self.new_epoch()

    def _process(self, batch) -> None:
        t0 = time.perf_counter()
        self.stages.process(batch)
        self.metrics.batch_latency.observe(time.perf_counter() - t0)
        self._count()

    def _count(self) -> None:
        engine = self.stages.engine
        c = engine.counts
        m = self.metrics
        now = {"packets": c.records, "bytes": c.wire_bytes, "flows": self.stages.flows_seen, "bad": c.bad}
        for key, counter in (("packets", m.packets), ("bytes", m.bytes), ("flows", m.flows_expired),
                             ("bad", m.drops.labels("unreadable"))):
            counter.inc(now[key] - self._last[key])
        self._last = Counter(now)
        m.flows_active.set(engine.active_flows)
        m.evictions.set(engine.evicted)
        m.queue.set(self.queue.qsize())
        for d in self.stages.detectors:
            n = d.evictions
            if n > self._evicted.get(d.name, 0):
                m.detector_evictions.labels(d.name).inc(n - self._evicted.get(d.name, 0))
                self._evicted[d.name] = n
        m.window_drops.set(sum(d.collector.windows.dropped_flows for d in self.stages.detectors
                               if d.name == "host_anomaly" and d.collector is not None))

    def _kernel_stats(self) -> None:
        try:
            _, drops = self.capture.statistics()
        except OSError:
            return
        if drops:
            self.metrics.drops.labels("kernel").inc(drops)

    # -- rotating files ------------------------------------------------------------------------------
    def _poll_files(self) -> None:
        if self.folder is None:
            return
        if self.unmarked:  # processed, but the state could not record it: record it now
            self.report()
        listing = self.folder.listing()
        for f in self.folder.ready(listing=listing):
            if self.stop.is_set():
                return
            if f not in self.unmarked:
                self._process_file(f)
        self._forget_gone_files(listing)

    def _forget_gone_files(self, listing) -> None:
        now = time.monotonic()
        if now - self._last_forget < 600:
            return
        self._last_forget = now
        try:
            with self.state.transaction() as db:
                self.state.forget_files_except(db, {(f.path, f.inode) for f in listing})
        except sqlite3.Error as exc:
            log.error("%s: cannot prune the file records (%s)", self.state.path, exc)

    def _process_file(self, f: CaptureFile) -> None:
        packets, error = 0, None
        try:
            # read, not mapped: a ring buffer may truncate its oldest file under us
            reader = open_capture(f.path, self.cfg.flows.batch_size, mapped=False)
            try:
                for batch in reader.batches():
                    packets += batch.n
                    self._process(batch)
                    if self.stop.is_set():  # not marked: read again, from its start, after a restart
                        log.info("%s: stopped part-way; it will be read again", f.path)
                        return
            finally:
                reader.src.close()
        except CaptureError as exc:
            error = str(exc)
            self.metrics.input_errors.inc()
            log.error("%s (what came before was analysed)", exc)
        last = self.stages.engine.last_ts
        if last is not None:  # flows the file ended go to the detectors now, not when a batch fills
            self.stages.expire(last)
        self.files_done += 1
        self.metrics.files.inc()
        self.unmarked[f] = (packets, error)
        self.report(save_pins=True)

    # -- Zeek logs -----------------------------------------------------------------------------------
    def _poll_zeek(self) -> None:
        for kind, z in self.zeek:
            try:
                records, _ = z.read()
            except OSError as exc:
                self.metrics.input_errors.inc()
                log.error("%s: cannot read: %s (tried again at the next poll)", z.path, exc.strerror or exc)
                continue
            if not records:
                continue
            self.metrics.zeek_records.labels(kind).inc(len(records))
            if kind == "conn":
                rb, bad = conn_batch(records, self.stages.site.is_local)
                if rb is not None:
                    self.stages.flows_seen += rb.num_rows
                    self.stages.feed_flow_batch(rb)
            else:
                self.stages.feed_events(Events(dns=dns_events(records)))

    # -- alerts and state ----------------------------------------------------------------------------
    def report(self, save_pins: bool = False) -> None:
        """New alerts into the outbox, with the state that goes with them, in one transaction;
        then delivery."""
        d = self.cfg.daemon
        found = self.stages.report()
        if self.gpu is not None:
            found = time_ordered(join_network(found + self.gpu.judge(self.cfg, self.model)))
        alerts = self.gate.admit(found, time.time_ns())
        floor = SEVERITY_RANK[d.min_severity]
        alerts = [a for a in alerts if a.severity_rank >= floor]
        for a in alerts:
            self.metrics.alerts.labels(a.category, a.severity).inc()
        lines = [a.to_json() for a in alerts]
        changes, forgotten = self.gate.take_changes()
        try:
            with self.state.transaction() as db:
                self.state.queue_alerts(db, lines)
                self.state.save_incidents(db, changes, forgotten)
                for _, z in self.zeek:
                    z.commit(db)
                if save_pins:
                    self.state.save_pins(db, self._learned())
                for f, (packets, error) in self.unmarked.items():
                    self.state.mark_file(db, f.path, f.inode, f.size, f.mtime_ns, packets, error)
            self.unmarked.clear()
        except sqlite3.Error as exc:
            self.gate.keep_changes(changes, forgotten)  # written with the next report
            # a full disk, say: the alerts still go out, straight to the sinks; what the state
            # would have recorded is retried with the next report
            self.metrics.state_errors.inc()
            log.error("%s: cannot write the state database (%s); alerts are sent without being queued",
                      self.state.path, exc)
            self._send_direct([a.to_dict() for a in alerts], lines)
            self.alerts_sent += len(alerts)
            return
        self.alerts_sent += len(alerts)
        self.deliver()

    def _send_direct(self, records: list[dict], lines: list[str]) -> None:
        for sink in self.sinks:
            try:
                sink.send(records, lines)
            except SinkError as exc:
                self.metrics.sink_errors.labels(sink.name).inc()
                log.error("%s (alerts lost for this sink)", exc)

    def _learned(self) -> dict:
        pins = dict(self.pins)
        for det in self.stages.detectors:
            got = det.learned()
            if got:
                pins[det.name] = got
        return pins

    def deliver(self) -> None:
        try:
            self._deliver()
        except sqlite3.Error as exc:
            self.metrics.state_errors.inc()
            log.error("%s: cannot update the outbox (%s); delivery is retried", self.state.path, exc)

    def _deliver(self) -> None:
        """Each sink gets the queued alerts after its own progress (a sink that is down holds
        back no other); alerts every sink has are deleted."""
        moved = False
        for sink in self.sinks:
            while True:
                rows = self.state.pending_alerts(self.sent_upto.get(sink.name, 0))
                if not rows:
                    break
                try:
                    sink.send([json.loads(line) for _, line in rows], [line for _, line in rows])
                except SinkError as exc:
                    self.metrics.sink_errors.labels(sink.name).inc()
                    log.error("%s (the alerts stay queued and are sent again)", exc)
                    break
                self.sent_upto[sink.name] = rows[-1][0]
                moved = True
        last = self.state.db.execute("SELECT MAX(id) FROM outbox").fetchone()[0]
        if last is not None and (moved or not self.sinks):
            done = min((self.sent_upto.get(s.name, 0) for s in self.sinks), default=last)
            with self.state.transaction() as db:
                for name, upto in self.sent_upto.items():
                    self.state.set_sink_progress(db, name, upto)
                db.execute("DELETE FROM outbox WHERE id <= ?", (done,))
        self.metrics.outbox.set(self.state.outbox_size())

    def new_epoch(self) -> None:
        """Summarise and restart the detectors (their state stays bounded in time)."""
        self.report()
        self._update_model()
        self.pins = self._learned()
        self._save_learning()
        self._count()  # the old detectors' last evictions, before their counts restart
        self._evicted.clear()
        self.stages.detectors = self.stages.new_detectors(self.pins)
        self.epoch_started = time.monotonic()

    def _save_learning(self) -> None:
        """Pins and the online model into the state database."""
        try:
            with self.state.transaction() as db:
                self.state.save_pins(db, self._learned())
                if self.model is not None and not self.model.frozen:
                    self.state.save_model(db, self.model, self.model_key)
        except (sqlite3.Error, OSError) as exc:
            self.metrics.state_errors.inc()
            log.error("%s: cannot save pins and baselines (%s)", self.state.path, exc)

    def _update_model(self) -> None:
        model = self.model
        if model is None or model.frozen:
            return
        for det in self.stages.detectors:
            if det.name == "host_anomaly" and det.collector is not None:
                hosts, _, X = det.closed_windows()
                learned = model.update(hosts, X, [self.stages.site.role(h) for h in hosts])
                log.info("site model: learned from %d of %d closed host windows", learned, len(X))

    # -- signals -------------------------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: read the configuration again (the old one stays if the new one has an error)
        and reopen the output files (after logrotate moved them)."""
        if self.config_path is not None:
            try:
                new = apply_overrides(load_config(self.config_path), self.overrides)
            except ConfigError as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
                new = None
            if new is not None:
                self._apply(new)
                return
        for sink in self.sinks:
            try:
                sink.reopen()
            except SinkError as exc:
                log.error("%s (alerts for it stay queued)", exc)

    def _apply(self, new: Config) -> None:
        """A reloaded configuration: new sinks first (if one cannot be opened, nothing
        changes), then the rest. Sources, flow-table and site settings need a restart."""
        old = self.cfg
        if _sources(new.daemon) != _sources(old.daemon) or new.flows != old.flows or new.site != old.site:
            log.warning("reload: [flows], [site] and the sources take effect on restart; the rest is applied")
        new = dataclasses.replace(new, flows=old.flows, site=old.site, daemon=dataclasses.replace(
            new.daemon, **{k: getattr(old.daemon, k) for k in SOURCE_KEYS}))
        try:
            sinks = open_sinks(new.daemon)
        except SinkError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            return
        for sink in self.sinks:
            sink.close()
        self.sinks = sinks
        self.sent_upto = {s.name: self.state.sink_progress(s.name) for s in sinks}
        self.cfg = new
        self.gate.renotify_ns = int(new.daemon.renotify_s * 1e9)
        if (new.detect, new.disabled_detectors) != (old.detect, old.disabled_detectors):
            self.stages.cfg = new
            self.new_epoch()
        log.info("configuration reloaded from %s", self.config_path)

    def shutdown(self) -> int:
        """Flush open flows and pending alerts, save the state; exit status."""
        self.stop.set()
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:  # what the capture already handed over, and its last batch
            alive = self.capture_thread is not None and self.capture_thread.is_alive()
            try:
                batch = self.queue.get(timeout=0.1) if alive else self.queue.get_nowait()
            except queue.Empty:
                if alive:
                    continue
                break
            if batch.n:
                self._process(batch)
        if self.capture_thread is not None:
            self.capture_thread.join(timeout=1.0)
        if self.gpu is not None:
            self.gpu.close()
        if self.exports is not None:
            self.exports.collector.close()
            self.exports.poll(self.stages)  # what was received before the stop
        open_flows = self.stages.engine.active_flows
        self.stages.flush()
        self.stages.site.clock_ns = None  # every window is judged at the end
        self.report(save_pins=True)
        self._update_model()
        self._save_learning()
        for sink in self.sinks:
            sink.close()
        for _, z in self.zeek:
            z.close()
        if self.capture is not None:
            self.capture.close()
        self.state.close()
        if self.ipfix is not None:
            self.ipfix.close()
        c = self.stages.engine.counts
        print(f"detector run: stopped: {c.records:,} packets, {self.stages.flows_seen:,} flows ({open_flows:,} "
              f"open flows flushed at exit), {self.alerts_sent:,} alerts, {self.files_done:,} files", file=sys.stderr,
              flush=True)
        if self.capture_error is not None:
            log.error("live capture failed: %s", self.capture_error)
            return 1
        return 0

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_asked.set())


SOURCE_KEYS = ("iface", "pcap_dir", "zeek_conn", "zeek_dns", "flow_listen", "ipfix_export", "ipfix_template_s",
               "gpu_telemetry", "dcgm_url", "gpu_log", "gpu_host", "state")


def _sources(d) -> tuple:
    return tuple(getattr(d, k) for k in SOURCE_KEYS)


def apply_overrides(cfg: Config, overrides: dict) -> Config:
    """Command-line flags over the file's ``[daemon]`` section, validated again."""
    if not overrides:
        return cfg
    daemon = dataclasses.replace(cfg.daemon, **overrides).validate(None)
    return dataclasses.replace(cfg, daemon=daemon)

