"""GPU telemetry live: NVML (a stand-in module here, the real one on a GPU machine), a DCGM
exporter's metrics, Slurm's commands polled, and the daemon raising gpu_unallocated."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import sys
import threading
import time

import pytest

from detector.config import Config, load_config
from detector.daemon.metrics import Metrics
from detector.telemetry import slurm_live
from detector.telemetry.dcgm import job_allocations, parse_exposition
from detector.telemetry.nvml import NvmlSampler
from detector.telemetry.samples import NO_JOB, UNKNOWN_JOB
from tests.fake_nvml import fake_nvml

NS = 10**9


def proc_tree(tmp_path, cgroups: dict[int, str]):
    for pid, text in cgroups.items():
        (tmp_path / str(pid)).mkdir(parents=True)
        (tmp_path / str(pid) / "cgroup").write_text(text + "\n")
    return str(tmp_path)


def test_nvml_sampler_reads_every_gpu_and_process(tmp_path):
    nvml = fake_nvml(2)
    nvml.state[1].update(util=100, power_mw=282500, procs=[(4242, 2210 << 20, b"/dev/shm/xmrig"), (51, None, b"py")])
    nvml.state[0]["procs"] = [(77, 1 << 30, b"python3")]
    proc = proc_tree(tmp_path, {4242: "0::/user.slice/user-1001.slice/session-7.scope",
                                77: "0::/system.slice/slurmstepd.scope/job_81232/step_0/user/task_0"})
    s = NvmlSampler(nvml, proc=proc)
    gpus, procs = s.sample()
    assert [g["gpu"] for g in gpus] == [0, 1] and gpus[1]["uuid"] == "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd"
    assert gpus[1]["util"] == 100 and gpus[1]["power_w"] == 282.5 and gpus[1]["mem_used_mib"] == 2210
    assert gpus[1]["sm_mhz"] == 1980 and gpus[1]["mem_mhz"] == 2619
    assert math.isnan(gpus[1]["pcie_tx_kbs"])  # NVML_ERROR_NOT_SUPPORTED: not read, not zero
    by_pid = {p["pid"]: p for p in procs}
    assert by_pid[4242]["job"] == NO_JOB and by_pid[4242]["command"] == "/dev/shm/xmrig"
    assert by_pid[77]["job"] == 81232 and by_pid[77]["used_mib"] == 1024
    assert by_pid[51]["job"] == UNKNOWN_JOB and math.isnan(by_pid[51]["used_mib"])  # no cgroup read
    s.close()
    assert nvml.calls == {"init": 1, "shutdown": 1}


def test_nvml_without_a_driver_is_a_clear_error():
    from detector.errors import ConfigError

    with pytest.raises(ConfigError, match="NVML"):
        NvmlSampler(fake_nvml(no_driver=True))


@pytest.mark.gpu
def test_real_nvml_api():
    """The calls NvmlSampler makes, against nvidia-ml-py and a real driver."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pytest.skip("no NVIDIA driver here")
    pynvml.nvmlShutdown()
    s = NvmlSampler()
    gpus, _ = s.sample()
    s.close()
    assert gpus and all(0 <= g["util"] <= 100 and g["power_w"] > 0 and g["uuid"].startswith("GPU-") for g in gpus)


EXPOSITION = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-1a2b",pci_bus_id="00000000:1B:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node17",hpc_job="81234"} 97
DCGM_FI_DEV_GPU_UTIL{gpu="1", UUID="GPU-9f8e", device="nvidia1", modelName="NVIDIA H100 80GB HBM3", Hostname="node17"} 100
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-1a2b",Hostname="node17",DCGM_FI_DRIVER_VERSION="550.90.07",hpc_job="81234"} 412.370000
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-9f8e",Hostname="node17"} 2210
DCGM_FI_PROF_PCIE_TX_BYTES{gpu="1",UUID="GPU-9f8e",Hostname="node17"} 1843200
DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-aaaa"} 1980
DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-1a2b",Hostname="node17"} 0
this is not a metric line
DCGM_FI_DEV_GPU_UTIL{gpu="x",Hostname="node17"} 5
"""


def test_dcgm_exposition():
    gpus, jobs, bad = parse_exposition(EXPOSITION, "scraped-host")
    by = {(g["host"], g["gpu"]): g for g in gpus}
    assert by[("node17", 0)]["util"] == 97 and by[("node17", 0)]["power_w"] == pytest.approx(412.37)
    assert by[("node17", 1)]["mem_used_mib"] == 2210 and by[("node17", 1)]["pcie_tx_kbs"] == 1843.2
    assert by[("scraped-host", 0)] == {"host": "scraped-host", "gpu": 0, "uuid": "GPU-aaaa", "sm_mhz": 1980}
    assert jobs == [("node17", 0, 81234)] and bad == 2
    [a] = job_allocations(jobs, 10, 20)
    assert (a.host, a.gpus, a.job, a.start_ns, a.end_ns) == ("node17", (0,), 81234, 10, 20)


def fake_command(tmp_path, name: str, output: str, status: int = 0) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    (folder / "out.json").write_text(output)
    script = folder / name
    script.write_text(f"#!/bin/sh\n/bin/cat '{folder / 'out.json'}'\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(folder)


def test_slurm_polled_through_its_commands(tmp_path, monkeypatch):
    doc = {"jobs": [{"job_id": 7, "nodes": "cn[01-02]", "job_state": ["RUNNING"], "start_time": {"set": True,
                     "infinite": False, "number": 1_700_000_000}, "gres_detail": ["gpu:2(IDX:0-1)", "gpu:1(IDX:3)"]}],
           "last_update": {"set": True, "number": 1}}
    monkeypatch.setenv("PATH", fake_command(tmp_path, "scontrol", json.dumps(doc)))
    command = slurm_live.available()
    assert command == ("scontrol", "show", "job", "-d", "--json")
    before = time.time_ns()
    found, (lo, hi) = slurm_live.poll(command, 30.0)
    assert [(a.host, a.gpus) for a in found] == [("cn01", (0, 1)), ("cn02", (3,))]
    assert before <= lo <= time.time_ns() and hi - lo == 60 * NS  # now, as this host sees it; twice the poll
    monkeypatch.setenv("PATH", fake_command(tmp_path, "scontrol", "nope", status=1))
    with pytest.raises(Exception, match="exit status 1"):
        slurm_live.poll(command, 30.0)


def _gpu_config(tmp_path, **daemon) -> Config:
    empty = tmp_path / "gpus.map"
    empty.write_text("# no GPU is allocated on this node\n")
    cfg = load_config(None)
    return dataclasses.replace(
        cfg, site=dataclasses.replace(cfg.site, gpu_allocations=str(empty), host_names=("node17=10.0.0.17",)),
        detect={"gpu_unallocated": dataclasses.replace(cfg.detect.get("gpu_unallocated") or _params(), busy_min_s=0.3,
                                                       max_gap_s=1.0)},
        daemon=dataclasses.replace(cfg.daemon, **{
            "gpu_telemetry": True, "gpu_host": "node17", "metrics": "", "slurm_poll_s": 0,
            "state": str(tmp_path / "state.db"), "alerts": str(tmp_path / "alerts.jsonl"), **daemon}).validate())


def _params():
    from detector.detect.gpu_theft import GpuUnallocated

    return GpuUnallocated.Params()


def test_gpu_watch_judges_and_counts(tmp_path):
    from detector.daemon.gpu_watch import GpuWatch

    nvml = fake_nvml(2)
    nvml.state[1].update(util=100, procs=[(4242, 2210 << 20, b"xmrig")])
    log = tmp_path / "gpu.jsonl"
    cfg = _gpu_config(tmp_path, gpu_log=str(log), gpu_keep_s=3.0, gpu_sample_s=0.1)
    metrics = Metrics()
    watch = GpuWatch(cfg, metrics, nvml=nvml)
    t0 = 1_800_000_000 * NS
    for k in range(5):
        watch.sample(t0 + k * NS // 10)
    [a] = watch.judge(cfg)
    assert (a.technique, a.host, a.evidence["gpus"], a.evidence["node"]) == ("gpu_unallocated", "10.0.0.17", [1],
                                                                          "node17")
    assert a.evidence["processes"][0]["command"] == "xmrig"
    value = metrics.registry.get_sample_value("detector_gpu_unallocated_seconds_total", {"host": "node17", "gpu": "1"})
    assert value == pytest.approx(0.5)
    assert metrics.registry.get_sample_value("detector_gpu_utilization", {"host": "node17", "gpu": "1"}) == 100
    watch.judge(cfg)  # the same samples are not counted twice
    assert metrics.registry.get_sample_value("detector_gpu_unallocated_seconds_total",
                                             {"host": "node17", "gpu": "1"}) == pytest.approx(0.5)
    for k in range(5, 60):  # the window is bounded: 3 s of samples kept
        watch.sample(t0 + k * NS // 10)
    assert sum(len(c.ts_ns) for c in watch.gpus) == 2 * 31
    watch.close()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 60 * 3 and {x["kind"] for x in lines} == {"gpu", "process"}


def test_daemon_on_a_gpu_node_raises_gpu_unallocated(tmp_path, monkeypatch):
    """What the GPU machine's end-to-end test does with a real kernel and NVML: the daemon,
    started with GPU telemetry only and an empty allocation map, reports a busy GPU within
    busy_min_s plus two samples."""
    from detector.backend import CPU
    from detector.daemon.service import Daemon

    nvml = fake_nvml(1)
    nvml.state[0]["util"] = 100
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    cfg = _gpu_config(tmp_path, gpu_sample_s=0.05, report_s=0.1)
    daemon = Daemon(cfg, CPU)
    daemon.start()
    runner = threading.Thread(target=daemon.run)
    started = time.monotonic()
    runner.start()
    alerts = tmp_path / "alerts.jsonl"
    try:
        while time.monotonic() - started < 20 and not (alerts.exists() and alerts.read_text()):
            time.sleep(0.05)
    finally:
        daemon.stop.set()
        runner.join(10)
    [first, *_] = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert (first["technique"], first["host"], first["severity"]) == ("gpu_unallocated", "10.0.0.17", "high")
    assert nvml.calls["shutdown"] == 1
    assert os.path.exists(tmp_path / "state.db")


@pytest.mark.gpu
def test_daemon_sees_a_real_gpu_kept_busy(tmp_path):
    """On a GPU machine: a CuPy kernel keeps GPU 0 busy for about 90 s, no job holds it (an empty
    allocation map); the daemon's NVML source sees it and raises gpu_unallocated within
    busy_min_s plus two samples (and the report that follows)."""
    cupy = pytest.importorskip("cupy")
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pytest.skip("no NVIDIA driver here")
    from detector.backend import CPU
    from detector.daemon.service import Daemon

    busy_min_s, sample_s, report_s = 10.0, 1.0, 1.0
    cfg = _gpu_config(tmp_path, gpu_sample_s=sample_s, report_s=report_s)
    cfg = dataclasses.replace(cfg, detect={"gpu_unallocated": dataclasses.replace(_params(), busy_min_s=busy_min_s)})
    stop_kernel = threading.Event()
    started = []

    def burn():
        a = cupy.random.random((4096, 4096), dtype=cupy.float32)
        began = time.monotonic()
        while not stop_kernel.is_set() and time.monotonic() - began < 90:
            for _ in range(20):
                a = a @ a
                a /= cupy.linalg.norm(a)
            cupy.cuda.runtime.deviceSynchronize()
            if not started:
                started.append(time.time_ns())

    kernel = threading.Thread(target=burn)
    kernel.start()
    daemon = Daemon(cfg, CPU)
    daemon.start()
    runner = threading.Thread(target=daemon.run)
    runner.start()
    alerts = tmp_path / "alerts.jsonl"
    try:
        while kernel.is_alive() and not (alerts.exists() and alerts.read_text()):
            time.sleep(0.2)
        seen_ns = time.time_ns()
    finally:
        daemon.stop.set()
        runner.join(30)
        stop_kernel.set()
        kernel.join(30)
    [first, *_] = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert first["technique"] == "gpu_unallocated" and 0 in first["evidence"]["gpus"]
    assert (seen_ns - started[0]) / 1e9 <= busy_min_s + 2 * sample_s + report_s + 2.0  # + the daemon's start


def test_gpu_watch_scrapes_a_dcgm_exporter(tmp_path):
    """A DCGM exporter over HTTP: its GPUs are sampled under the host names its labels give, its
    hpc_job labels hold GPUs, and an exporter that cannot be reached is counted, not fatal."""
    import http.server

    from detector.daemon.gpu_watch import GpuWatch

    class Exporter(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = EXPOSITION.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        cfg = _gpu_config(tmp_path, gpu_telemetry=False, dcgm_url=url, gpu_sample_s=0.1, gpu_host="scraped-host")
        cfg = dataclasses.replace(cfg, site=dataclasses.replace(cfg.site, gpu_allocations=""))
        metrics = Metrics()
        watch = GpuWatch(cfg, metrics)
        t0 = time.time_ns() - 10 * NS
        for k in range(5):
            watch.sample(t0 + k * NS // 10)
        alerts = watch.judge(cfg)
        # node17's GPU 0 is held by job 81234 (its hpc_job label); GPU 1, busy, is held by nobody
        assert [(a.technique, a.evidence["node"], a.evidence["gpus"]) for a in alerts] == [
            ("gpu_unallocated", "node17", [1])]
        assert metrics.registry.get_sample_value("detector_gpu_power_watts", {"host": "node17", "gpu": "0"}) == \
            pytest.approx(412.37)
        errors = metrics.registry.get_sample_value("detector_telemetry_errors_total", {"source": "dcgm"})
        assert errors == 5 * 2  # the two lines of each scrape that are not metrics
    finally:
        server.shutdown()
        server.server_close()
    watch.sample(t0 + NS)  # the exporter is gone
    assert metrics.registry.get_sample_value("detector_telemetry_errors_total", {"source": "dcgm"}) == errors + 1
    watch.close()
