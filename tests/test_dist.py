"""``detector analyze --cluster``: Dask-distributed analysis of an archive equals one pass.

A synthetic site's capture is cut into a rotating capture's files, with flows and a beaconing
incident crossing the cuts; a LocalCluster of 2 worker processes must give the same alerts and
the same flow records, field by field, as the single-process run. Also: a corrupt file in the
archive, reuse of finished partitions after a restart, bad ``--cluster`` values, and the
property the exactness rests on (detectors' results do not depend on how input is batched).
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("distributed", reason="the 'dist' extra (dask[distributed]) is not installed")

from detector.cli import main  # noqa: E402
from detector.config import load_config  # noqa: E402
from detector.dist.cluster import parse  # noqa: E402
from detector.dist.job import run_distributed  # noqa: E402
from detector.errors import DetectorError  # noqa: E402
from detector.pipeline.analyze_job import run_analyze  # noqa: E402
from detector.sources import first_timestamp  # noqa: E402
from tests.capture_files import split_pcap  # noqa: E402


def _flows(path):
    return pq.read_table(path).sort_by([("uid", "ascending"), ("ts", "ascending")])


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    d = tmp_path_factory.mktemp("archive")
    assert main(["synth", "theft-beaconing", "-o", str(d / "synth"), "--packets", "12000"]) == 0
    files = split_pcap(d / "synth" / "theft-beaconing.pcap", d / "capture", 4, stem="login01")
    cfg = load_config(str(d / "synth" / "site.toml"))
    single = run_analyze([str(d / "capture")], cfg, None, str(d / "single.parquet"), progress=False)
    return d, files, cfg, single


def test_cluster_equals_single_process(archive):
    d, files, cfg, single = archive
    dist = run_distributed([str(d / "capture")], cfg, "local:2", None, str(d / "dist.parquet"), progress=False)
    assert dist.exit_code == single.exit_code == 0
    info = dist.summary["cluster"]
    assert info["workers"] == 2 and info["partitions"] == 4
    assert info["shared_flow_hashes"] > 0 and info["shared_packets"] > 0  # flows did cross the cuts
    # what the test is about: flows and a beaconing incident span several files
    cuts = [first_timestamp(str(f)) for f in files[1:]]
    one, two = _flows(d / "single.parquet"), _flows(d / "dist.parquet")
    start = one.column("ts").cast(pa.int64()).to_numpy()
    end = start + (one.column("duration").fill_null(0).to_numpy() * 1e9).astype("int64")
    assert any(((start < c) & (end > c)).any() for c in cuts)
    beacons = [a for a in single.alerts if a.technique == "beaconing"]
    assert beacons and sum(beacons[0].ts_ns < c < beacons[0].ts_end_ns for c in cuts) >= 2
    # the same alerts, the same flow records field by field, the same totals
    assert [a.to_json() for a in dist.alerts] == [a.to_json() for a in single.alerts]
    assert one.equals(two)
    for key in ("packets", "ip_packets", "flows", "alerts", "alerts_by_category"):
        assert dist.summary[key] == single.summary[key], key


def test_cluster_cli_with_a_corrupt_file_reports_it_and_exit_1(archive, tmp_path, capsys):
    d, files, cfg, single = archive
    arch = tmp_path / "arch"
    arch.mkdir()
    for f in files:
        (arch / f.name).write_bytes(f.read_bytes())
    (arch / "login01-999.pcap").write_bytes(files[0].read_bytes()[:3000])  # cut short mid-record
    code = main(["analyze", str(arch), "--cluster", "local:2", "--config", str(d / "synth" / "site.toml"),
                 "-o", str(tmp_path / "alerts.jsonl"), "--stats", str(tmp_path / "stats.json"),
                 "--report", str(tmp_path / "report.html"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "login01-999.pcap" in err and "offset" in err and "Traceback" not in err
    assert "cluster: 2 worker(s), 5 partition(s)" in err
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert any(a["technique"] == "beaconing" for a in alerts)
    page = (tmp_path / "report.html").read_text()
    assert "login01-999.pcap" in page
    beacons = page.split('id="beaconing"')[1].split('id="bindings"')[0]
    assert "10.10.1.13" in beacons and "<svg" in beacons  # the beaconing detector came back from its worker
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["bad_inputs"] == 1 and stats["cluster"]["partitions"] == 5
    assert not (tmp_path / "alerts.jsonl.work").exists()  # the default work folder goes when the run completes


def test_a_restarted_run_reuses_finished_partitions(archive, tmp_path):
    d, files, cfg, single = archive
    work = tmp_path / "work"
    first = run_distributed([str(d / "capture")], cfg, "local:2", None, progress=False, work_dir=str(work))
    assert first.summary["cluster"]["reused_partitions"] == 0
    parts = sorted(p for p in work.iterdir() if p.name.startswith("part-"))
    assert len(parts) == 4
    for p in parts[2:]:  # as if the run had died with two partitions still running
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    again = run_distributed([str(d / "capture")], cfg, "local:2", None, progress=False, work_dir=str(work))
    assert again.summary["cluster"]["reused_partitions"] == 2
    assert [a.to_json() for a in again.alerts] == [a.to_json() for a in single.alerts]
    # a changed file is analysed again, not taken from the folder
    files[0].write_bytes(files[0].read_bytes())
    third = run_distributed([str(d / "capture")], cfg, "local:2", None, progress=False, work_dir=str(work))
    assert third.summary["cluster"]["reused_partitions"] == 3


@pytest.mark.parametrize("spec", ["local:0", "local:x", "bogus", "http://example"])
def test_bad_cluster_values_are_usage_errors(spec, tmp_path, capsys):
    with pytest.raises(DetectorError, match="--cluster"):
        parse(spec)
    assert main(["analyze", str(tmp_path), "--cluster", spec, "-q"]) == 2
    assert "--cluster" in capsys.readouterr().err


def test_cluster_refuses_stdin_and_work_dir_needs_cluster(tmp_path, capsys):
    assert main(["analyze", "-", "--cluster", "local:1", "-q"]) == 2
    assert "standard input" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--work-dir", str(tmp_path / "w"), "-q"]) == 2
    assert "--cluster" in capsys.readouterr().err


SCENARIOS = ("dos-reflection", "dos-syn-flood", "scan-ports", "access-ssh-bruteforce", "theft-stratum",
             "mitm-arp-spoof", "exfil-dns-tunnel", "mitm-tls-cert")


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    d = tmp_path_factory.mktemp("scen")
    assert main(["synth", *SCENARIOS, "-o", str(d), "--packets", "6000"]) == 0
    return d


@pytest.mark.parametrize("name", SCENARIOS)
def test_alerts_do_not_depend_on_batching(scenarios, name, monkeypatch):
    """A distributed run hands the detectors the same records and events in other groupings
    than one pass does: the detectors must not care (this caught order-dependent evidence)."""
    import detector.flows.engine as engine

    cfg = load_config(str(scenarios / "site.toml"))
    path = [str(scenarios / f"{name}.pcap")]
    base = [a.to_json() for a in run_analyze(path, cfg, None, progress=False).alerts]
    assert base
    for group, batch in ((1, 65536), (1, 1000), (engine.RECORD_GROUP, 777)):
        monkeypatch.setattr(engine, "RECORD_GROUP", group)
        small = dataclasses.replace(cfg, flows=dataclasses.replace(cfg.flows, batch_size=batch))
        assert [a.to_json() for a in run_analyze(path, small, None, progress=False).alerts] == base, (group, batch)


class _DieOnce:
    """A worker plugin that kills its worker process the first time a task named
    ``prefix...`` starts (a marker file makes it once per test, across restarted workers)."""

    def __init__(self, prefix: str, marker: str):
        self.prefix, self.marker = prefix, marker

    def transition(self, key, start, finish, **kwargs):
        import os

        if finish == "executing" and str(key).startswith(self.prefix) and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)


def test_a_lost_worker_costs_nothing(archive, tmp_path):
    """The worker running a partition dies mid-task: Dask runs the task elsewhere and the
    alerts are still one pass's."""
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import WorkerPlugin

    d, files, cfg, single = archive
    plugin = type("DieOnce", (_DieOnce, WorkerPlugin), {})("partition-1-", str(tmp_path / "died"))
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as c:
        c.register_plugin(plugin)
        dist = run_distributed([str(d / "capture")], cfg, cluster.scheduler_address, None, progress=False,
                               work_dir=str(tmp_path / "work"))
    assert (tmp_path / "died").exists()  # a worker did die
    assert dist.exit_code == 0 and not dist.errors
    assert [a.to_json() for a in dist.alerts] == [a.to_json() for a in single.alerts]
    assert dist.summary["flows"] == single.summary["flows"]


@pytest.mark.parametrize("name", ["mitm-dns-spoof", "access-remote-shell", "theft-stratum", "scan-ports"])
def test_cluster_equals_single_process_on_attacks_cut_into_files(scenarios_more, name, tmp_path):
    """Attacks whose evidence is spread over flows handled by different tasks (a DNS query and
    its spoofed answer, a shell session and its marker packets, a miner's session) still give
    one pass's alerts: each batch's events reach the detectors merged back into time order."""
    cfg = load_config(str(scenarios_more / "site.toml"))
    arch = tmp_path / name
    split_pcap(scenarios_more / f"{name}.pcap", arch, 3)
    single = run_analyze([str(arch)], cfg, None, progress=False)
    dist = run_distributed([str(arch)], cfg, "local:2", None, progress=False)
    assert single.alerts and [a.to_json() for a in dist.alerts] == [a.to_json() for a in single.alerts]
    assert dist.summary["flows"] == single.summary["flows"]


@pytest.fixture(scope="module")
def scenarios_more(tmp_path_factory):
    d = tmp_path_factory.mktemp("scen2")
    assert main(["synth", "mitm-dns-spoof", "access-remote-shell", "theft-stratum", "scan-ports", "-o", str(d),
                 "--packets", "6000"]) == 0
    return d


@pytest.mark.corpus
def test_cluster_equals_single_process_on_the_corpus(corpus):
    """Real captures from many capture points, overlapping in time, some sharing flows."""
    cfg = load_config(None)
    single = run_analyze([str(corpus)], cfg, None, progress=False)
    dist = run_distributed([str(corpus)], cfg, "local:2", None, progress=False)
    assert dist.summary["cluster"]["partitions"] > 10
    assert [a.to_json() for a in dist.alerts] == [a.to_json() for a in single.alerts]
    for key in ("packets", "ip_packets", "flows", "bad_inputs"):
        assert dist.summary[key] == single.summary[key], key


def test_events_of_one_batch_from_two_tasks_merge_into_time_order():
    import numpy as np

    from detector.l7.events import Ctx, DnsEvent, Events, PacketArrays, merge_events

    def dns(ts):
        return DnsEvent(Ctx(ts, f"C{ts}", True, "10.0.0.1", "10.0.0.53", 5000, 53, 17), None)

    a = Events(dns=[dns(1), dns(5)], arp=PacketArrays({"ts": np.array([2, 9]), "op": np.array([1, 1])}))
    b = Events(dns=[dns(3), dns(5)], arp=PacketArrays({"ts": np.array([4]), "op": np.array([2])}))
    m = merge_events([a, b])
    assert [e.ctx.ts_ns for e in m.dns] == [1, 3, 5, 5] and m.dns[2] is a.dns[1]  # ties keep the tasks' order
    assert m.arp["ts"].tolist() == [2, 4, 9] and m.arp["op"].tolist() == [1, 2, 1]
    assert merge_events([a]) is a and len(merge_events([]).dns) == 0
