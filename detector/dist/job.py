"""``detector analyze ARCHIVE... --cluster SPEC``: the client's side of a distributed run.

It starts the census and partition tasks (:mod:`detector.dist.partition`), consumes the
finished partitions in file order while later ones still run (records and events to the
detectors, shared packets through the stitching flow table), and ends as ``run_analyze`` does:
alerts in time order, summary, exit status.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import shutil
import tempfile
import time

import numpy as np

from detector import __version__
from detector.alerts import Alert
from detector.backend import CPU, Backend
from detector.config import Config
from detector.detect.corroboration import settle
from detector.dist import cluster as dcluster
from detector.dist.detect_group import GroupResult, detect_group, groups, ordered_feed
from detector.dist.partition import (
    SHARDS,
    Census,
    PartitionResult,
    analyze_file,
    census_file,
    file_stamp,
    shared_hashes,
    single_thread,
    stitch_shard,
)
from detector.errors import CaptureError, DetectorError, OutputError
from detector.flows.engine import FlowEngine, PacketCounts
from detector.output.flow_writers import open_flow_writer
from detector.pipeline.analyze_job import AlertSink, AnalyzeResult, analysis_result
from detector.pipeline.flows_job import close_outputs
from detector.pipeline.ingest import InputLog, InputStatus, file_size
from detector.pipeline.stages import Stages, flow_config, time_ordered
from detector.progress import Progress
from detector.site_inference import infer_local_hosts
from detector.sources import expand_inputs, open_capture

log = logging.getLogger("detector.dist")

TASK_RETRIES = 2  # a task that raised is tried this many more times (a lost worker's tasks are rerun anyway)
# the partitions' records and events as detectors read them: a work folder written by another
# format is not reused (2: next-hop rows carry host ids; 3: openers' and next hops' addresses
# are Arrow strings)
FEED_FORMAT = 3


def work_folder(work_dir: str | None, alerts_out: str | None, remote: bool) -> tuple[str, bool, bool]:
    """The folder tasks write to (absolute: workers resolve paths on their own), whether it
    stays after a successful run, and whether it is a temporary folder nobody can name again. A named one stays (a later run reuses what is there);
    the default one (``ALERTS.work``, or a temporary folder) is removed once the run has
    finished."""
    if work_dir:
        folder, keep = work_dir, True
    elif alerts_out and alerts_out != "-":
        folder, keep = alerts_out + ".work", False
    elif remote:
        raise DetectorError("--cluster with a remote scheduler needs --work-dir (a folder every worker can write) "
                            "or -o ALERTS (then ALERTS.work is used)")
    else:
        return tempfile.mkdtemp(prefix="detector-work-"), False, True
    folder = os.path.abspath(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".writable")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.unlink(probe)
    except OSError as exc:
        raise DetectorError(f"--work-dir {folder}: cannot write there: {exc.strerror}") from None
    return folder, keep, False


def run_distributed(inputs: list[str], cfg: Config, cluster: str, alerts_out: str | None = "-",
                    flows_out: str | None = None, flows_format: str = "parquet", backend: Backend = CPU,
                    progress: bool | None = None, extra_detectors=(), min_severity: str = "low", model=None,
                    work_dir: str | None = None, keep_detectors: tuple[str, ...] = ()) -> AnalyzeResult:
    """Analyse the captures ``inputs`` on the Dask cluster ``cluster`` (see
    :func:`detector.dist.cluster.parse`); the alerts equal :func:`run_analyze`'s. The
    detectors named in ``keep_detectors`` come back from the workers finished, in the
    result's ``detectors`` (the report reads their state)."""
    t0 = time.perf_counter()
    kind, _ = dcluster.parse(cluster)
    files = [f if f == "-" else os.path.abspath(f) for f in expand_inputs(inputs)]
    if "-" in files:
        raise DetectorError("--cluster reads files: standard input (-) cannot be shared out to workers")
    work, keep, scratch = work_folder(work_dir, alerts_out, remote=kind != "local")
    sink = AlertSink(alerts_out) if alerts_out is not None else None
    flow_writer = open_flow_writer(flows_out, flows_format) if flows_out else None
    stages = Stages(cfg, CPU, model, extra_detectors, flow_writer, detect_thread=False)  # accounts no packets
    # the configured detectors run on the workers; the client keeps the extra ones (the report's)
    names = [d.name for d in stages.detectors[:len(stages.detectors) - len(extra_detectors)]]
    stages.detectors = stages.detectors[len(names):]
    run = _Run(files, work, stages)
    bar = Progress(2 * sum(file_size(f) for f in files), enabled=progress)
    output_error: OutputError | None = None
    interrupted = False
    alerts: list[Alert] = []
    try:
        try:
            with dcluster.connect(cluster, gpu=backend.is_gpu) as client:
                run.cluster = dcluster.describe(client)
                run.seconds["start"] = run.lap()
                run.census(client, cfg, bar)
                run.partitions(client, cfg, backend, bar)
                run.detect(client, cfg, names, keep_detectors)
        except KeyboardInterrupt:
            interrupted = True
        by_name = {name: a for g in run.groups for name, a in g.alerts.items()}
        alerts = time_ordered(settle([a for name in names for a in by_name.get(name, [])] +
                                     [a for d in stages.detectors for a in d.finish()]))
        if sink is not None:
            sink.write_all(alerts, min_severity)
    except OutputError as exc:
        output_error = exc
    except DetectorError:
        if scratch:
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        bar.close()
        output_error = close_outputs((sink, flow_writer), output_error)
    stages.flows_seen = run.flows
    result = analysis_result(run.inputs, run.counts, stages, alerts, time.perf_counter() - t0, backend, model,
                             output_error, interrupted, run.tap_stats())
    result.detectors = [d for g in run.groups for d in g.kept] + stages.detectors
    for g in run.groups:  # the workers' detectors dropped these at their caps
        result.summary["detector_evictions"].update(g.evictions)
    complete = not interrupted and len(run.results) == len(files)
    if interrupted and not run.groups:
        result.warnings.append("interrupted before the detectors had run: no alerts were written")
    if complete and not keep:
        shutil.rmtree(work, ignore_errors=True)
    elif complete:
        run.prune()
    else:
        result.warnings.append(f"finished partitions are kept in {work}: run again with --work-dir {work} "
                               "to reuse them")
    if run.evicted:
        result.warnings.append(f"{run.evicted:,} flows were evicted from full flow tables (max_flows): the run may "
                               "differ from one pass; raise [flows] max_flows")
    result.summary["cluster"] = {**run.cluster, "partitions": len(files), "reused_partitions": run.reused,
                                 "evicted_flows": run.evicted,
                                 "shared_flow_hashes": run.shared_count, "shared_packets": run.shared_packets,
                                 "seconds": run.seconds,
                                 "work_dir": work if (keep or not complete) else None}
    return result


class _Run:
    """The client's bookkeeping for one distributed run."""

    def __init__(self, files: list[str], work: str, stages: Stages):
        self.files, self.work, self.stages = files, work, stages
        self.inputs = InputLog()
        self.inputs.inputs = [InputStatus(f) for f in files]
        self.counts = PacketCounts()
        self.censuses: list[Census | None] = [None] * len(files)
        self.results: list[PartitionResult] = []
        self.last_ts: int | None = None
        self.shared_file = ""
        self.shared_count = self.shared_packets = self.reused = 0
        self.cluster: dict = {}
        self.done_bytes = 0
        self.packets = 0
        self._tap = {"streams_dropped": 0, "parse_errors": 0}
        self.seconds: dict[str, float] = {}
        self.flows = self.evicted = 0
        self.folders: list[str] = []  # every finished partition's and stitching shard's, in order
        self.groups: list[GroupResult] = []
        self._t = time.perf_counter()

    # -- phase 1: census -------------------------------------------------------------------
    def census(self, client, cfg: Config, bar: Progress) -> None:
        from dask.distributed import as_completed

        futures = client.map(census_file, range(len(self.files)), self.files, cfg=cfg, retries=TASK_RETRIES,
                             pure=False)
        for fut in as_completed(futures):
            try:
                c = fut.result()
            except Exception as exc:  # the task failed on every try: the file is reported, the rest goes on
                idx = futures.index(fut)
                c = Census(idx, self.files[idx], np.empty(0, np.uint64), error=_task_error(self.files[idx], exc),
                           task_failed=True)
            self.censuses[c.index] = c
            self.done_bytes += file_size(c.path)
            self.packets += c.records
            bar.update(self.done_bytes, self.packets, "census " + os.path.basename(c.path))
        ends = [c.last_ts for c in self.censuses if c is not None and c.last_ts is not None]
        self.last_ts = max(ends) if ends else None
        shared = shared_hashes([c for c in self.censuses if c is not None])
        self.shared_count = len(shared)
        digest = hashlib.sha256(shared.tobytes()).hexdigest()[:16]
        self.shared_file = os.path.join(self.work, f"shared-{digest}.npy")
        if not os.path.exists(self.shared_file):
            tmp = self.shared_file + ".tmp.npy"
            np.save(tmp, shared)
            os.replace(tmp, self.shared_file)
        self._infer_site(cfg)
        self.seconds["census"] = self.lap()

    def _infer_site(self, cfg: Config) -> None:
        """One pass takes the site's busiest hosts from its first batch: so does this run."""
        decoder = FlowEngine(flow_config(single_thread(cfg)))
        for c in self.censuses:
            if c is None or not c.records:
                continue
            try:
                reader = open_capture(c.path, cfg.flows.batch_size)
            except CaptureError:
                continue
            try:
                for b in reader.batches():
                    decoder.decode(b)
                    infer_local_hosts(self.stages.site, decoder.cols, b.n)
                    return
            except CaptureError:
                continue
            finally:
                reader.src.close()

    # -- phase 2: partitions, consumed in file order; phase 3: stitching shards -------------
    def partitions(self, client, cfg: Config, backend: Backend, bar: Progress) -> None:
        key = _digest((__version__, FEED_FORMAT, cfg, backend.name, self.last_ts, self.shared_file, SHARDS))
        futures = {}
        for i, path in enumerate(self.files):
            census = self.censuses[i]
            if census is None or census.task_failed:
                continue  # its census task failed: its flows could not be told apart; reported
            folder = os.path.join(self.work, f"part-{i:05d}-{key}")
            stamp = {**_stamp(path), "run": key}
            futures[i] = client.submit(analyze_file, i, path, cfg, backend.name, self.shared_file, self.last_ts,
                                       folder, stamp, retries=TASK_RETRIES, pure=False, key=f"partition-{i}-{key}")
        for i, path in enumerate(self.files):
            if i not in futures:
                res = PartitionResult(i, path, "")
            else:
                try:
                    res = futures[i].result()
                except Exception as exc:
                    res = PartitionResult(i, path, "", error=_task_error(path, exc))
            self._consume(res)
            self.done_bytes += file_size(res.path)  # (the census already counted the packets)
            bar.update(self.done_bytes, self.packets, os.path.basename(res.path))
        self.seconds["partitions"] = self.lap()
        if not self.shared_count:
            return
        parts = list(self.results)
        # which partitions are in decides the stitched flows: a rerun that has more is stitched again
        chain_key = _digest((key, [(p.folder, _stamp(p.path)) for p in parts]))
        stitched = [client.submit(stitch_shard, s, parts, cfg, backend.name, self.last_ts,
                                  os.path.join(self.work, f"stitch-{s:03d}-{chain_key}"), {"run": chain_key},
                                  retries=TASK_RETRIES, pure=False, key=f"stitch-{s}-{chain_key}")
                    for s in range(SHARDS)]
        for fut in stitched:
            try:
                res = fut.result()
            except Exception as exc:  # nothing to fall back on: these flows would be missing
                raise DetectorError(f"stitching the flows that cross files failed on the cluster after "
                                    f"{TASK_RETRIES + 1} tries: {type(exc).__name__}: {exc}") from None
            self._consume(res)
        self.seconds["stitch"] = self.lap()

    # -- phase 4: the detectors, in groups, over every record and event -------------------
    def detect(self, client, cfg: Config, names: list[str], keep: tuple[str, ...]) -> None:
        split = groups(names, max(1, self.cluster.get("threads", 1)))
        site = self.stages.site
        shared_site = client.scatter(site, broadcast=False)  # with the model: sent once, not per group
        futures = [client.submit(detect_group, g, self.folders, cfg, shared_site, keep, retries=TASK_RETRIES,
                                 pure=False) for g in split]
        # meanwhile the client: --flows-out and the extra detectors (the report's collector)
        stages = self.stages
        if stages.detectors or stages.flow_writer is not None:
            try:
                for rbs, events in ordered_feed(self.folders):
                    for rb, first_payload in rbs:
                        stages.feed_records(rb, first_payload)
                    stages.feed_events(events)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                raise DetectorError(f"{self.work}: a finished task's results cannot be read back ({exc}); remove "
                                    "the work folder and run again") from None
        for g, fut in zip(split, futures):
            try:
                self.groups.append(fut.result())
            except Exception as exc:
                raise DetectorError(f"detectors {', '.join(g)} failed on the cluster after {TASK_RETRIES + 1} "
                                    f"tries: {type(exc).__name__}: {exc}") from None
        self.seconds["detect"] = self.lap()

    def prune(self) -> None:
        """Drop what earlier runs left in a kept work folder and this run did not use."""
        used = {os.path.basename(f) for f in self.folders} | {os.path.basename(self.shared_file)}
        for name in os.listdir(self.work):
            if name.startswith(("part-", "stitch-", "shared-")) and name not in used:
                path = os.path.join(self.work, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)

    def lap(self) -> float:
        now = time.perf_counter()
        lap, self._t = now - self._t, now
        return round(lap, 3)

    def _consume(self, res: PartitionResult) -> None:
        if res.index >= 0:
            self.results.append(res)
            status = self.inputs.inputs[res.index]
            status.format, status.records, status.warnings = res.format, res.records, res.warnings
            census = self.censuses[res.index]
            status.error = res.error or (census.error if census is not None else None)
            self.shared_packets += res.shared_packets
            self.reused += int(res.reused)
        self.counts.records += res.accounted
        self.counts.wire_bytes += res.wire_bytes
        self.counts.by_status += np.asarray(res.by_status, np.int64)
        self._tap["streams_dropped"] += res.streams_dropped
        self._tap["parse_errors"] += res.parse_errors
        self.flows += res.flows
        self.evicted += res.evicted
        if res.folder:
            self.folders.append(res.folder)

    def tap_stats(self) -> dict:
        return dict(self._tap)  # the client's own tap sees no packets


def _digest(value) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def _stamp(path: str) -> dict:
    try:
        return file_stamp(path)
    except OSError:
        return {"path": os.path.abspath(path), "size": None, "mtime_ns": None}


def _task_error(path: str, exc: BaseException) -> CaptureError:
    log.debug("task for %s failed", path, exc_info=exc)
    return CaptureError(path, None, f"its task failed on the cluster after {TASK_RETRIES + 1} tries: "
                                    f"{type(exc).__name__}: {exc}")
