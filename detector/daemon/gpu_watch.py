"""The daemon's GPU telemetry: NVML and/or a DCGM exporter sampled every ``gpu_sample_s`` on a
thread of its own, Slurm polled every ``slurm_poll_s``; the samples and snapshots of the last
``gpu_keep_s`` are kept (bounded in time), judged by the telemetry detectors at every report,
exported as metrics and, with ``gpu_log``, appended to a telemetry log ``detector analyze
--gpu-log`` reads."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections import deque

import numpy as np

from detector.alerts import Alert
from detector.config import Config
from detector.detect.gpu_theft import GpuInputs, GpuUnallocated, busy_unheld, judge_telemetry
from detector.errors import TelemetryError
from detector.telemetry import slurm_live
from detector.telemetry.allocations import OPEN_END, read_map
from detector.telemetry.dcgm import DcgmScraper, job_allocations
from detector.telemetry.holdings import Holdings
from detector.telemetry.record_log import gpu_line, process_line
from detector.telemetry.samples import READINGS, GpuSamples, ProcessSamples, Telemetry, concat, take

log = logging.getLogger("detector.gpu")
WARN_EVERY_S = 60.0


class GpuWatch:
    def __init__(self, cfg: Config, metrics, nvml=None):
        d = cfg.daemon
        self.cfg, self.metrics = cfg, metrics
        self.host = d.gpu_host or socket.gethostname().split(".")[0]
        self.keep_ns = int(d.gpu_keep_s * 1e9)
        self.nvml = None
        if d.gpu_telemetry:
            from detector.telemetry.nvml import NvmlSampler

            self.nvml = NvmlSampler(nvml)
        self.dcgm = DcgmScraper(d.dcgm_url, self.host) if d.dcgm_url else None
        self.slurm = slurm_live.available() if d.slurm_poll_s > 0 else None
        self.static = read_map(cfg.site.gpu_allocations, cfg.site.timezone) if cfg.site.gpu_allocations else None
        self.lock = threading.Lock()
        self.names = Telemetry(hosts=[self.host])  # host ids of the samples kept
        self.gpus: deque[GpuSamples] = deque()  # one small chunk per sample, in time order
        self.procs: deque[ProcessSamples] = deque()
        self.snapshots: deque = deque()  # (allocations of the hosts sampled, (start, end))
        self.counted_upto: dict[tuple[str, int], int] = {}  # unallocated seconds exported up to this sample
        self.log_fh = open(d.gpu_log, "a", encoding="utf-8") if d.gpu_log else None  # noqa: SIM115 (kept open)
        self.threads: list[threading.Thread] = []
        self.warned: dict[str, float] = {}
        self.last_dcgm = None  # the job labels of the last DCGM snapshot, and which it is
        if self.nvml is None and self.dcgm is None:
            raise TelemetryError("daemon", None, "GPU telemetry needs gpu_telemetry = true or dcgm_url")
        log.info("GPU telemetry of %s: %s; allocations: %s", self.host,
                 " and ".join(x for x, on in (("NVML", self.nvml), ("DCGM", self.dcgm)) if on),
                 " + ".join(x for x, on in ((" ".join(self.slurm or ()), self.slurm),
                                            (cfg.site.gpu_allocations, self.static)) if on) or "none (nothing judged)")

    def start(self, stop: threading.Event) -> None:
        self.threads = [threading.Thread(target=self._sample_loop, args=(stop,), name="gpu-telemetry", daemon=True)]
        if self.slurm:  # scontrol may take seconds on a large cluster: never in the sampler's way
            self.threads.append(threading.Thread(target=self._slurm_loop, args=(stop,), name="slurm-poll", daemon=True))
        for t in self.threads:
            t.start()

    def _sample_loop(self, stop: threading.Event) -> None:
        step = self.cfg.daemon.gpu_sample_s
        while not stop.is_set():
            began = time.monotonic()
            self._guarded("sample", lambda: self.sample(time.time_ns()))
            stop.wait(max(0.0, step - (time.monotonic() - began)))

    def _slurm_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._guarded("slurm", self.poll_slurm)
            stop.wait(self.cfg.daemon.slurm_poll_s)

    def _guarded(self, source: str, step) -> None:
        """Run one step of a loop; whatever a source answers (an HTTP reply that is not one, a
        driver error), the thread lives on: the failure is counted and logged."""
        try:
            step()
        except Exception as exc:  # noqa: BLE001 (a thread that dies would stop sampling unseen)
            self.metrics.telemetry_errors.labels(source).inc()
            self._warn(source, f"GPU telemetry ({source}) failed: {type(exc).__name__}: {exc}")

    def sample(self, now_ns: int) -> None:
        """One reading of every source, kept (and logged); a source that fails is counted."""
        gpus, procs, jobs = [], [], []
        if self.nvml is not None:
            g, p = self.nvml.sample()
            gpus += [(self.host, x) for x in g]
            procs += [(self.host, x) for x in p]
        if self.dcgm is not None:
            try:
                g, jobs, bad = self.dcgm.scrape()
                gpus += [(x.pop("host"), x) for x in g]
                if bad:
                    self.metrics.telemetry_errors.labels("dcgm").inc(bad)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                self.metrics.telemetry_errors.labels("dcgm").inc()
                self._warn("dcgm", f"DCGM exporter {self.dcgm.url}: {exc}")
        with self.lock:
            if gpus:
                self.gpus.append(GpuSamples.of([self.names.host_id(h) for h, _ in gpus], [x["gpu"] for _, x in gpus],
                                               [x.get("uuid") for _, x in gpus], [now_ns] * len(gpus),
                                               {k: [x.get(k, np.nan) for _, x in gpus] for k in READINGS}))
            if procs:
                self.procs.append(ProcessSamples(
                    np.array([self.names.host_id(h) for h, _ in procs], np.int32),
                    np.array([x["gpu"] for _, x in procs], np.int16), np.array([x.get("uuid") for _, x in procs], object),
                    np.full(len(procs), now_ns, np.int64), np.array([x["pid"] for _, x in procs], np.int64),
                    np.array([x.get("command") for _, x in procs], object),
                    np.array([x.get("used_mib", np.nan) for _, x in procs], float),
                    np.array([x["job"] for _, x in procs], np.int64)))
            if jobs:
                self._dcgm_jobs(jobs, now_ns)
            self._trim(now_ns)
        for host, x in gpus:
            self.metrics.gpu_util.labels(host, str(x["gpu"])).set(x.get("util", float("nan")))
            self.metrics.gpu_power.labels(host, str(x["gpu"])).set(x.get("power_w", float("nan")))
        if self.log_fh is not None:
            self._log(now_ns, gpus, procs)

    def _dcgm_jobs(self, jobs: list, now_ns: int) -> None:
        """The exporter's job labels as allocations: while they stay the same, the last
        snapshot's time is stretched rather than a snapshot kept per sample."""
        end = now_ns + int(2 * self.cfg.daemon.gpu_sample_s * 1e9)
        if self.snapshots and self.last_dcgm == (jobs, id(self.snapshots[-1])):
            found, (start, _) = self.snapshots[-1]
            self.snapshots[-1] = ([a._replace(end_ns=end) for a in found], (start, end))
        else:
            self.snapshots.append((job_allocations(jobs, now_ns, end), (now_ns, end)))
        self.last_dcgm = (jobs, id(self.snapshots[-1]))

    def poll_slurm(self) -> None:
        try:
            found, span = slurm_live.poll(self.slurm, self.cfg.daemon.slurm_poll_s)
        except TelemetryError as exc:
            self.metrics.telemetry_errors.labels("slurm").inc()
            self._warn("slurm", str(exc))
            return
        with self.lock:
            mine = set(self.names.hosts)  # a cluster's other nodes are not judged here
            self.snapshots.append(([a for a in found if a.host in mine], span))

    def _warn(self, source: str, message: str) -> None:
        """Log a failing source once a minute, not at every sample (the metric counts each)."""
        now = time.monotonic()
        if now - self.warned.get(source, -WARN_EVERY_S) >= WARN_EVERY_S:
            self.warned[source] = now
            log.warning("%s", message)

    def _trim(self, now_ns: int) -> None:
        horizon = now_ns - self.keep_ns
        for q in (self.gpus, self.procs):
            while q and q[0].ts_ns[0] < horizon:
                q.popleft()
        while self.snapshots and self.snapshots[0][1][1] < horizon:
            self.snapshots.popleft()

    def _log(self, now_ns: int, gpus, procs) -> None:
        try:
            for host, x in gpus:
                self.log_fh.write(gpu_line(now_ns, host, x["gpu"], x.get("uuid"), x) + "\n")
            for host, x in procs:
                self.log_fh.write(process_line(now_ns, host, x["gpu"], x.get("uuid"), x["pid"], x.get("command"),
                                               x.get("used_mib"), x["job"], None) + "\n")
            self.log_fh.flush()
        except OSError as exc:
            self.metrics.telemetry_errors.labels("gpu_log").inc()
            log.error("%s: cannot write the GPU log: %s", self.cfg.daemon.gpu_log, exc.strerror)

    def inputs(self, model=None) -> GpuInputs:
        """What is kept, as the telemetry detectors take it."""
        with self.lock:
            t = Telemetry(hosts=list(self.names.hosts), gpu_parts=[concat(list(self.gpus), GpuSamples.empty())],
                          process_parts=[concat(list(self.procs), ProcessSamples.empty())])
            snapshots = list(self.snapshots)
        allocations = [a for found, _ in snapshots for a in found]
        coverage = [span for _, span in snapshots]
        if self.static is not None:
            allocations += self.static
            coverage.append((-OPEN_END, OPEN_END))
        holdings = Holdings(allocations, coverage) if coverage else None
        now = time.time_ns()
        return GpuInputs(t, holdings, self.cfg.site.addresses, model, now, now - self.keep_ns)

    def judge(self, cfg: Config, model=None) -> list[Alert]:
        """The telemetry detectors' alerts over what is kept; also exports the unallocated seconds."""
        inputs = self.inputs(model)
        self._count_unallocated(inputs, cfg)
        return judge_telemetry(inputs, cfg.detect, cfg.disabled_detectors)

    def _count_unallocated(self, inputs: GpuInputs, cfg: Config) -> None:
        g, holdings = inputs.telemetry.gpus, inputs.holdings
        if holdings is None or not len(g.ts_ns):
            return
        g = take(g, np.flatnonzero(g.gpu >= 0))
        p = cfg.detect.get(GpuUnallocated.name) or GpuUnallocated.Params()
        free = busy_unheld(g, inputs.telemetry.hosts, holdings, p.busy_util)
        step = self.cfg.daemon.gpu_sample_s
        for h, gpu in set(zip(g.host.tolist(), g.gpu.tolist())):
            key = (inputs.telemetry.hosts[h], gpu)
            mine = (g.host == h) & (g.gpu == gpu) & (g.ts_ns > self.counted_upto.get(key, -1))
            if mine.any():
                self.counted_upto[key] = int(g.ts_ns[mine].max())
                n = int((free & mine).sum())
                if n:
                    self.metrics.gpu_unallocated.labels(key[0], str(gpu)).inc(n * step)

    def close(self) -> None:
        for t in self.threads:
            t.join(timeout=2.0)
        if self.nvml is not None:
            self.nvml.close()
        if self.log_fh is not None:
            self.log_fh.close()
