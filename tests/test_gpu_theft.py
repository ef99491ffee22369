"""gpu_unallocated, gpu_foreign_process and their join with the network's signs of theft, on
telemetry built here sample by sample, and end to end on the synthetic GPU partition."""

from __future__ import annotations

import numpy as np
import pytest

from detector.alerts import Alert
from detector.detect.gpu_theft import GpuForeignProcess, GpuInputs, GpuUnallocated, join_network
from detector.telemetry.allocations import OPEN_END, Allocation
from detector.telemetry.holdings import Holdings
from detector.telemetry.samples import NO_JOB, UNKNOWN_JOB, GpuSamples, ProcessSamples, Telemetry

NS = 10**9
T0 = 1_793_606_400 * NS
ALL_TIME = [(-OPEN_END, OPEN_END)]


class Node:
    """Telemetry of one node, written as what each GPU did when."""

    def __init__(self, t: Telemetry, name: str, gpus: int = 4, seconds: int = 1200, every: int = 10):
        self.t, self.name, self.every = t, name, every
        self.host = t.host_id(name)
        self.times = T0 + np.arange(0, seconds, every) * NS
        self.util = np.zeros((gpus, len(self.times)))

    def busy(self, gpu: int, start_s: float, end_s: float, util: float = 100.0) -> Node:
        on = (self.times >= T0 + start_s * NS) & (self.times < T0 + end_s * NS)
        self.util[gpu, on] = util
        return self

    def drop(self, start_s: float, end_s: float) -> Node:
        """The telemetry stops (nvidia-smi not running)."""
        keep = ~((self.times >= T0 + start_s * NS) & (self.times < T0 + end_s * NS))
        self.times, self.util = self.times[keep], self.util[:, keep]
        return self

    def done(self) -> None:
        gpus, n = self.util.shape
        self.t.gpu_parts.append(GpuSamples.of(np.full(gpus * n, self.host), np.repeat(np.arange(gpus), n),
                                              np.full(gpus * n, None), np.tile(self.times, gpus),
                                              {"util": self.util.ravel()}))


def process(t: Telemetry, node: str, gpu: int, pid: int, job: int, start_s: float, end_s: float, every: int = 30,
            name: str = "xmrig") -> None:
    times = T0 + np.arange(start_s, end_s, every).astype(np.int64) * NS
    n = len(times)
    t.process_parts.append(ProcessSamples(np.full(n, t.host_id(node), np.int32), np.full(n, gpu, np.int16),
                                          np.full(n, None, object), times, np.full(n, pid), np.full(n, name, object),
                                          np.full(n, 2210.0), np.full(n, job)))


def alloc(host, gpus, start_s, end_s, job, count=None):
    return Allocation(host, gpus, len(gpus) if gpus else count, T0 + int(start_s * NS),
                      OPEN_END if end_s is None else T0 + int(end_s * NS), job, str(job))


def unallocated(t, allocations, coverage=ALL_TIME, **params):
    inputs = GpuInputs(t, Holdings(allocations, coverage), {"cn1": "10.0.0.1"})
    return GpuUnallocated(GpuUnallocated.Params(**params) if params else None).judge(inputs)


def foreign(t, allocations, coverage=ALL_TIME):
    return GpuForeignProcess().judge(GpuInputs(t, Holdings(allocations, coverage), {}))


def test_a_busy_gpu_no_job_holds_is_one_alert_per_incident():
    t = Telemetry()
    Node(t, "cn1").busy(1, 100, 700).busy(2, 150, 800).done()  # two GPUs of one miner: one incident
    Node(t, "cn2").busy(0, 0, 1200).done()  # held
    process(t, "cn1", 1, 4242, NO_JOB, 100, 700)
    [a] = unallocated(t, [alloc("cn2", (0,), 0, None, 7)])
    assert (a.technique, a.severity, a.host, a.src_ip) == ("gpu_unallocated", "high", "10.0.0.1", "10.0.0.1")
    assert a.evidence["gpus"] == [1, 2] and a.evidence["node"] == "cn1"
    assert (a.ts_ns, a.ts_end_ns) == (T0 + 100 * NS, T0 + 800 * NS)  # the last sample stands for its 10 s
    assert a.evidence["busy_s"] == 650 and a.evidence["processes"][0]["pid"] == 4242
    assert a.evidence["processes"][0]["job"] == "none"


def test_held_gpus_by_index_every_gpu_or_count_are_quiet():
    t = Telemetry()
    Node(t, "cn1").busy(0, 0, 1200).busy(3, 0, 1200).done()
    Node(t, "cn2").busy(0, 0, 1200).busy(1, 0, 1200).done()
    Node(t, "cn3").busy(2, 0, 1200).done()
    allocations = [alloc("cn1", (0, 3), -10, None, 1), alloc("cn2", None, -10, 2000, 2, count=-1),
                   alloc("cn3", None, -10, None, 3, count=1)]
    assert unallocated(t, allocations) == []
    # the job on GPU 3 of cn1 ended at 400 s: its GPU stayed busy 800 s more without it
    [a] = unallocated(t, [alloc("cn1", (0,), -10, None, 1), alloc("cn1", (3,), -10, 400, 4)] + allocations[1:])
    assert a.evidence["gpus"] == [3] and a.ts_ns == T0 + 400 * NS


def test_gpus_of_unknown_index_cover_the_first_busy_ones_of_each_second():
    """sacct says 'two GPUs of cn1' without saying which: three busy GPUs leave one out."""
    t = Telemetry()
    Node(t, "cn1").busy(0, 0, 1200).busy(1, 0, 1200).busy(3, 0, 1200).done()
    assert unallocated(t, [alloc("cn1", None, -10, None, 5, count=3)]) == []
    [a] = unallocated(t, [alloc("cn1", None, -10, None, 5, count=2)])
    assert a.evidence["gpus"] == [3]


def test_the_threshold_the_minimum_time_and_gaps():
    t = Telemetry()
    Node(t, "cn1").busy(0, 0, 300).busy(1, 0, 310).busy(2, 0, 1200, util=49.0).busy(3, 0, 1200).drop(500, 560).done()
    # GPU 0: 30 busy samples of 10 s, 300 s; GPU 1: 310 s; GPU 2: under busy_util; GPU 3: busy
    # throughout, but the telemetry stops for 60 s: two runs, of 500 and 640 s
    alerts = unallocated(t, [])
    assert [(a.evidence["gpus"], a.evidence["busy_s"]) for a in alerts] == [([0, 1, 3], 500), ([3], 640)]
    assert [a.evidence["gpus"] for a in unallocated(t, [], busy_min_s=301.0)] == [[1, 3], [3]]
    assert [a.evidence["busy_s"] for a in unallocated(t, [], max_gap_s=120.0)] == [1200]
    assert unallocated(t, [], busy_min_s=700.0) == []
    assert [a.evidence["gpus"] for a in unallocated(t, [], busy_util=49.0, max_gap_s=120.0)] == [[0, 1, 2, 3]]


def test_slow_sampling_is_not_a_gap_and_rounds_hold_counted_gpus():
    """nvidia-smi -l 60: samples a minute apart are one run (max_gap_s is at least 2.5 intervals);
    one loop's rows, milliseconds apart across a second boundary, are one round for the GPUs a
    job holds by count."""
    t = Telemetry()
    Node(t, "cn1", gpus=2, seconds=3600, every=60).busy(0, 0, 3600).busy(1, 0, 3600).done()
    [a] = unallocated(t, [])
    assert a.evidence["busy_s"] == 3600
    t = Telemetry()
    node = Node(t, "cn1", gpus=2, seconds=3600, every=5)
    node.times = node.times + int(0.98 * NS)  # GPU 0 stamped at x.980 s ...
    node.busy(0, 0, 3700).busy(1, 0, 3700).done()
    t.gpu_parts[0].ts_ns[len(node.times):] += 50 * 10**6  # ... GPU 1 at x+1.030 s
    [a] = unallocated(t, [alloc("cn1", None, -10, None, 5, count=1)])
    assert a.evidence["gpus"] == [1]


def test_only_the_time_the_allocations_speak_for_is_judged():
    t = Telemetry()
    Node(t, "cn1").busy(0, 0, 1200).done()
    assert unallocated(t, [], coverage=[(T0 + 910 * NS, T0 + 2000 * NS)]) == []  # 290 s judged: under busy_min_s
    [a] = unallocated(t, [], coverage=[(T0 + 600 * NS, T0 + 2000 * NS)])
    assert a.ts_ns == T0 + 600 * NS
    assert GpuUnallocated().judge(GpuInputs(t, None, {})) == []  # no allocation source: nothing judged


def test_foreign_processes():
    t = Telemetry()
    allocations = [alloc("cn1", (0, 1), 0, None, 10), alloc("cn1", (2,), 0, None, 11), alloc("cn2", None, 0, None, 12, 2)]
    process(t, "cn1", 0, 100, 10, 0, 600, name="python3")  # its own job: fine
    process(t, "cn1", 1, 101, NO_JOB, 60, 600)  # from an SSH session: foreign
    process(t, "cn1", 2, 102, 10, 0, 600, name="python3")  # job 10's process on job 11's GPU
    process(t, "cn1", 3, 103, NO_JOB, 0, 600)  # on a GPU nobody holds: gpu_unallocated's to tell
    process(t, "cn1", 1, 104, UNKNOWN_JOB, 0, 600)  # cgroup not read: not judged
    process(t, "cn2", 1, 105, 12, 0, 600, name="python3")  # counts only: any GPU of the job's node
    process(t, "cn2", 0, 106, 99, 0, 600)  # a job that holds nothing on cn2
    process(t, "cn2", 0, 107, NO_JOB, 0, 600, name="/usr/bin/nv-hostengine")  # monitoring
    alerts = {a.evidence["pid"]: a for a in foreign(t, allocations)}
    assert sorted(alerts) == [101, 102, 106]
    assert alerts[101].evidence["process_job"] is None and alerts[101].evidence["jobs_holding"] == ["10", "11"]
    assert "in no job" in alerts[101].summary and alerts[101].ts_ns == T0 + 60 * NS
    assert alerts[102].evidence["process_job"] == 10 and alerts[102].evidence["gpus"] == [2]
    assert "of job 99" in alerts[106].summary and alerts[106].technique == "gpu_foreign_process"
    # the job ends at 300 s: process 100 is on a GPU nobody holds from then on, not a foreign one
    ended = [alloc("cn1", (0, 1), 0, 300, 10)] + allocations[1:]
    assert sorted(a.evidence["pid"] for a in foreign(t, ended)) == [101, 102, 106]


def _net(technique, src, start_s, end_s):
    return Alert(T0 + start_s * NS, T0 + end_s * NS, "compute_theft", technique, "high", 0.9, technique, "x", src,
                 src_ip=src)


def _gpu(start_s, end_s, host="10.0.0.1", node="cn1"):
    return Alert(T0 + start_s * NS, T0 + end_s * NS, "compute_theft", "gpu_unallocated", "high", 0.85, "gpu",
                 "gpu_unallocated/1", host, src_ip=host if host != node else None, evidence={"node": node})


def test_join_with_the_network_makes_both_critical():
    stratum, far, other = _net("stratum", "10.0.0.1", 100, 200), _net("beaconing", "10.0.0.1", 5000, 6000), \
        _net("compute_outbound", "10.0.0.9", 100, 200)
    port_scan = Alert(T0, T0, "scan", "port_scan", "medium", 0.5, "scan", "x", "10.0.0.1", src_ip="10.0.0.1")
    gpu = _gpu(150, 1000)
    alerts = [stratum, far, other, port_scan, gpu]
    out = join_network(alerts)
    assert [a.severity for a in out] == ["critical", "high", "high", "medium", "critical"]
    assert out[0].evidence["joined_with"][0]["technique"] == "gpu_unallocated"
    assert [j["technique"] for j in out[4].evidence["joined_with"]] == ["stratum"]
    assert gpu.severity == "high" and "joined_with" not in stratum.evidence  # copies, not changed in place
    # a node known by name only meets the network's alerts by that name
    assert join_network([stratum, _gpu(150, 1000, host="cn1")])[0].severity == "high"
    assert join_network([_net("stratum", "cn1", 0, 10), _gpu(150, 1000, host="cn1")])[1].severity == "critical"
    assert join_network([stratum]) == [stratum]


# -- end to end: the synthetic GPU partition ------------------------------------------------
@pytest.fixture(scope="module")
def gpu_site(tmp_path_factory):
    from detector.cli import main

    d = tmp_path_factory.mktemp("gpu")
    assert main(["synth", "theft-gpu-unallocated", "theft-gpu-foreign", "theft-stratum", "benign-dtn", "-o", str(d),
                 "--packets", "2000", "--seed", "3"]) == 0
    return d


def _analyze(d, name, *extra):
    from detector.cli import main

    out = d / f"{name}.jsonl"
    tel = d / "telemetry" / name
    code = main(["analyze", str(d / f"{name}.pcap"), "--config", str(d / "site.toml"), "-o", str(out), "-q",
                 "--gpu-log", str(tel / "gpu"), "--gpu-log", str(tel / "processes.jsonl"), *extra])
    import json

    return code, [json.loads(line) for line in out.read_text().splitlines()]


def test_synthetic_gpu_partition_end_to_end(gpu_site):
    d = gpu_site
    slurm = ("--slurm", str(d / "telemetry" / "theft-gpu-unallocated" / "sacct.json"))
    code, alerts = _analyze(d, "theft-gpu-unallocated", *slurm)
    assert code == 0 and [(a["technique"], a["host"], a["evidence"]["gpus"]) for a in alerts] == [
        ("gpu_unallocated", "10.10.100.4", [0, 1, 2, 3])]
    code, alerts = _analyze(d, "theft-gpu-foreign", "--slurm", str(d / "telemetry" / "theft-gpu-foreign" / "sacct.json"))
    assert [(a["technique"], a["evidence"]["pid"], a["evidence"]["gpus"]) for a in alerts] == [
        ("gpu_foreign_process", 66877, [2])]
    code, alerts = _analyze(d, "theft-stratum", "--slurm", str(d / "telemetry" / "theft-stratum" / "sacct.json"))
    by = {a["technique"]: a for a in alerts}
    assert by["gpu_unallocated"]["severity"] == by["stratum"]["severity"] == "critical"
    assert "stratum" in [j["technique"] for j in by["gpu_unallocated"]["evidence"]["joined_with"]]
    code, alerts = _analyze(d, "benign-dtn", "--slurm", str(d / "telemetry" / "benign-dtn" / "sacct.json"))
    # training that breathes, an idle node, a job ending: quiet
    assert code == 0 and [a for a in alerts if a["category"] == "compute_theft"] == []
    # without allocations nothing is judged (every busy GPU would look stolen), and the summary says so
    code, alerts = _analyze(d, "theft-gpu-unallocated")
    assert alerts == []


def test_a_missing_or_bad_telemetry_file_stops_with_a_message(gpu_site, capsys):
    from detector.cli import main

    d = gpu_site
    assert main(["analyze", str(d / "benign-dtn.pcap"), "-q", "--gpu-log", str(d / "nope.csv")]) == 2
    assert f"{d / 'nope.csv'}: cannot read" in capsys.readouterr().err
    bad = d / "sacct-bad.json"
    bad.write_text("{")
    assert main(["analyze", str(d / "benign-dtn.pcap"), "-q", "--slurm", str(bad)]) == 2
    assert f"{bad}: line 1: not JSON" in capsys.readouterr().err
    log = d / "cn0099.csv"
    log.write_text("timestamp, index, utilization.gpu [%]\n2026/11/02 09:00:01.000, 0, 5 %\nbroken line\n")
    out = d / "warn.jsonl"
    assert main(["analyze", str(d / "benign-dtn.pcap"), "-q", "-o", str(out), "--gpu-log", str(log)]) == 0
    assert f"warning: {log}: line 3:" in capsys.readouterr().err


# -- gpu_profile -----------------------------------------------------------------------------
def test_gpu_windows_features():
    from detector.telemetry.gpu_windows import GPU_FEATURES, gpu_windows

    t = Telemetry()
    Node(t, "cn1", gpus=2, seconds=1200, every=10).busy(0, 0, 600).busy(1, 0, 1200, util=80.0).busy(1, 0, 100).done()
    process(t, "cn1", 1, 7, 5, 0, 600, every=10)
    process(t, "cn1", 1, 8, 5, 300, 400, every=10)
    nodes, gpus, starts, X = gpu_windows(t, 600 * NS)
    f = {name: X[:, k] for k, name in enumerate(GPU_FEATURES)}
    assert nodes == ["cn1"] * 4 and gpus.tolist() == [0, 0, 1, 1] and (starts - T0).tolist() == [0, 600 * NS] * 2
    assert f["util_mean"].tolist() == [100, 0, pytest.approx((10 * 100 + 50 * 80) / 60), 80]
    assert f["util_std"][0] == 0 and f["util_p10"].tolist() == [100, 0, 80, 80] and f["busy_share"].tolist() == [1, 0, 1, 1]
    assert f["processes"].tolist() == [0, 0, 2, 0]


@pytest.fixture(scope="module")
def gpu_model(gpu_site):
    """A site model trained on 8 hours of the GPU partition's benign telemetry (10-minute windows)."""
    from detector.cli import main
    from detector.synth import telemetry as tel
    from detector.synth.scenarios import T0_NS

    d = gpu_site
    tel.write(d / "train-telemetry", "hpc-mix", T0_NS - 86400 * NS, T0_NS - 86400 * NS, None, 11, before_s=0,
              after_s=8 * 3600)
    model = d / "gpu.model"
    assert main(["train", str(d / "benign-dtn.pcap"), "--config", str(d / "site.toml"), "-o", str(model), "-q",
                 "--gpu-log", str(d / "train-telemetry" / "gpu"), "--gpu-log",
                 str(d / "train-telemetry" / "processes.jsonl"), "--gpu-window", "600"]) == 0
    return model


def test_gpu_profile_finds_miners_and_folds_into_the_theft_it_corroborates(gpu_site, gpu_model, tmp_path):
    from detector.baseline.site_model import SiteModel

    d = gpu_site
    assert SiteModel.load(str(gpu_model)).gpu.windows_trained == 20 * 48  # 20 GPUs, 8 h of 10-minute windows
    off = tmp_path / "off.toml"
    off.write_text('[detect]\ndisabled = ["gpu_unallocated", "gpu_foreign_process"]\n\n' + (d / "site.toml").read_text())
    for name, node, gpus in (("theft-gpu-unallocated", "cn0004", [0, 1, 2, 3]), ("theft-gpu-foreign", "cn0003", [2])):
        slurm = ("--slurm", str(d / "telemetry" / name / "sacct.json"))
        code, alerts = _analyze(d, name, "--model", str(gpu_model), *slurm, "--config", str(off))
        [a] = alerts
        assert (a["technique"], a["evidence"]["node"], a["evidence"]["gpus"], a["severity"]) == (
            "gpu_profile", node, gpus, "medium")
        assert a["evidence"]["deviations"] and "unlike the site's busy GPUs" in a["summary"]
        code, alerts = _analyze(d, name, "--model", str(gpu_model), *slurm)
        [a] = alerts  # one incident: the profile corroborates the theft
        assert a["technique"] != "gpu_profile" and a["evidence"]["corroborated_by"][0]["technique"] == "gpu_profile"
    code, alerts = _analyze(d, "benign-dtn", "--model", str(gpu_model), "--slurm",
                            str(d / "telemetry" / "benign-dtn" / "sacct.json"))
    assert [a for a in alerts if a["category"] == "compute_theft"] == []


def test_site_models_without_a_gpu_profile_still_load(gpu_site, tmp_path):
    from detector.baseline.site_model import SiteModel
    from detector.cli import main

    d = gpu_site
    plain = tmp_path / "plain.model"
    assert main(["train", str(d / "benign-dtn.pcap"), "-o", str(plain), "-q"]) == 0
    assert SiteModel.load(str(plain)).gpu is None
    code, alerts = _analyze(d, "theft-gpu-unallocated", "--model", str(plain))
    assert code == 0


def test_report_draws_each_nodes_gpus_over_the_jobs_holding_them(gpu_site):
    import re

    d = gpu_site
    report = d / "gpu-report.html"
    code, alerts = _analyze(d, "theft-gpu-unallocated", "--slurm", str(d / "telemetry" / "theft-gpu-unallocated" /
                                                                        "sacct.json"), "--report", str(report))
    page = report.read_text()
    section = page[page.index('id="gpus"'):]
    titles = re.findall(r'aria-label="([^"]+): SM utilisation"', section)
    assert titles[0] == "cn0004 (alert)" and sorted(titles[1:]) == ["cn0001", "cn0002", "cn0003", "cn0012"]
    spans = re.findall(r'<rect class="span"[^>]*><title>([^<]+)</title>', section)
    assert sorted(spans) == ["job 81230", "job 81230", "job 81231", "job 81232"]  # cn0001, cn0002; two on cn0003
    assert section.count('class="series"') == 5 * 4  # a line per GPU


def test_successive_snapshots_and_one_job_from_two_sources(tmp_path):
    """squeue snapshots every 120 s: a job in the first and gone from the next holds its GPU
    only until the next one; the same job from sacct (a count) and from scontrol (indices) is
    counted once."""
    import json

    from detector.telemetry.slurm import parse_doc

    def snapshot(at_s, jobs):
        doc = {"jobs": [{"job_id": j, "nodes": "cn1", "job_state": ["RUNNING"], "start_time": int(T0 // NS) - 60,
                         "gres_detail": [f"gpu:1(IDX:{g})"]} for j, g in jobs]}
        return parse_doc(json.loads(json.dumps(doc)), T0 + at_s * NS, "squeue", snapshot_s=120.0)

    t = Telemetry()
    Node(t, "cn1", gpus=2).busy(0, 130, 1200).busy(1, 0, 1200).done()  # a miner on GPU 0 after job 7 ends
    snaps = [snapshot(0, [(7, 0), (8, 1)])] + [snapshot(s, [(8, 1)]) for s in range(120, 1200, 120)]
    holdings = Holdings([a for found, _ in snaps for a in found], [span for _, span in snaps])
    [a] = GpuUnallocated().judge(GpuInputs(t, holdings, {}))
    assert a.evidence["gpus"] == [0] and a.ts_ns == T0 + 130 * NS
    # job 8 from sacct (1 GPU, index unknown) and from a snapshot (GPU 1): a miner on GPU 0 still shows
    counted = alloc("cn1", None, -60, None, 8, count=1)
    [a] = unallocated(t, [counted] + [x for found, _ in snaps for x in found if x.job == 8])
    assert a.evidence["gpus"] == [0] and a.ts_ns == T0 + 130 * NS


def test_a_node_given_by_its_address_is_the_node_slurm_names(gpu_site, tmp_path):
    """--gpu-log FILE@ADDRESS: [site] host_names maps the address to the node Slurm allocates."""
    import shutil

    from detector.cli import main

    d = gpu_site
    tel = d / "telemetry" / "benign-dtn"
    log = tmp_path / "anything.csv"
    shutil.copy(tel / "gpu" / "cn0003.csv", log)  # jobs 81231 and 81232 keep its GPUs busy
    out = tmp_path / "alerts.jsonl"
    assert main(["analyze", str(d / "benign-dtn.pcap"), "--config", str(d / "site.toml"), "-q", "-o", str(out),
                 "--gpu-log", f"{log}@10.10.100.3", "--slurm", str(tel / "sacct.json")]) == 0
    assert "gpu_" not in out.read_text()


def test_what_cannot_be_judged_is_said(gpu_site, tmp_path, capsys):
    from detector.cli import main

    d = gpu_site
    uuid_only = tmp_path / "cn0007.csv"
    uuid_only.write_text("timestamp, uuid, utilization.gpu [%]\n2026/11/02 09:00:01.000, GPU-abc, 100 %\n")
    mig = tmp_path / "cn0008.csv"
    mig.write_text("timestamp, index, utilization.gpu [%]\n2026/11/02 09:00:01.000, 0, [N/A]\n"
                   "2026/11/02 09:00:02.000, 0, [N/A]\n")
    assert main(["analyze", str(d / "benign-dtn.pcap"), "-q", "-o", str(tmp_path / "a.jsonl"), "--gpu-log",
                 str(uuid_only), "--gpu-log", str(mig)]) == 0
    err = capsys.readouterr().err
    assert "1 GPU sample(s) give no index" in err and "never reported their utilisation (cn0008 GPU 0" in err
