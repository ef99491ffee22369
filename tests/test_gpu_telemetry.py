"""GPU telemetry and allocations as read: nvidia-smi CSV logs (each unit style, bad lines,
local time), detector's own process log, cgroup paths of Slurm jobs, Slurm host lists, Slurm's
JSON as 23.02 to 24.11 write it, and the allocation map."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detector.errors import TelemetryError
from detector.telemetry.allocations import OPEN_END, parse_indices, read_map
from detector.telemetry.cgroup import slurm_job
from detector.telemetry.hostlist import expand
from detector.telemetry.nvidia_smi import LogSpec, read_log, to_utc
from detector.telemetry.record_log import process_line, read_record_log
from detector.telemetry.samples import NO_JOB, UNKNOWN_JOB, Telemetry
from detector.telemetry.slurm import gpu_detail, read_slurm

NS = 10**9
T = 1_741_079_702  # 2025-03-04 09:15:02 UTC


def utc(text: str) -> int:
    import datetime as dt

    t = dt.datetime.strptime(text, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)
    return (int(t.timestamp()) * 10**6 + t.microsecond) * 1000


def read(tmp_path, text: str, name: str = "node17.csv", zone: str = "UTC") -> Telemetry:
    path = tmp_path / name
    path.write_text(text)
    t = Telemetry()
    read_log(LogSpec.parse(str(path)), t, zone)
    return t


WITH_UNITS = """\
timestamp, index, uuid, utilization.gpu [%], utilization.memory [%], memory.used [MiB], power.draw [W], clocks.current.sm [MHz], clocks.current.memory [MHz]
2025/03/04 09:15:02.417, 0, GPU-1a2b3c4d-0000-1111-2222-333344445555, 87 %, 41 %, 30512 MiB, 412.37 W, 1755 MHz, 2619 MHz
2025/03/04 09:15:02.419, 1, GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff, 0 %, 0 %, 4 MiB, [N/A], 210 MHz, [Not Supported]
"""


def test_query_gpu_log_with_units(tmp_path):
    g = read(tmp_path, WITH_UNITS).gpus
    assert g.gpu.tolist() == [0, 1] and g.uuid[1] == "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"
    assert g.ts_ns.tolist() == [utc("2025/03/04 09:15:02.417"), utc("2025/03/04 09:15:02.419")]
    assert g.util.tolist() == [87, 0] and g.mem_util.tolist() == [41, 0] and g.mem_used_mib.tolist() == [30512, 4]
    assert g.power_w[0] == pytest.approx(412.37) and math.isnan(g.power_w[1])  # unreadable is not zero
    assert g.sm_mhz.tolist() == [1755, 210] and g.mem_mhz[0] == 2619 and math.isnan(g.mem_mhz[1])


def test_nounits_any_subset_and_order_and_aliases(tmp_path):
    text = ("clocks.sm [MHz], power.draw [W], timestamp, utilization.gpu [%], index\n"
            "1410, 250.5, 2025/03/04 09:15:02.417, 99, 3\n"
            "1410, N/A, 2025/03/04 09:15:03.417, , 3\n")
    g = read(tmp_path, text).gpus
    assert g.gpu.tolist() == [3, 3] and g.sm_mhz.tolist() == [1410, 1410] and g.power_w[0] == 250.5
    assert g.util[0] == 99 and math.isnan(g.util[1]) and math.isnan(g.power_w[1])  # empty and N/A: not read
    assert np.isnan(g.mem_used_mib).all()  # not asked for


def test_bad_lines_are_counted_and_named_and_repeated_headers_skipped(tmp_path):
    header = WITH_UNITS.splitlines()[0]
    text = WITH_UNITS + "\n" + "garbage\n" + header + "\n" + \
        "2025/03/04 09:15:03.417, 0, GPU-1a2b3c4d-0000-1111-2222-333344445555, lots %, 41 %, 30512 MiB, 1 W, 1 MHz, 1 MHz\n" + \
        "2025-03-04T09:15:04, 0, GPU-1a2b3c4d-0000-1111-2222-333344445555, 5 %, 41 %, 30512 MiB, 1 W, 1 MHz, 1 MHz\n" + \
        "2025/03/04 09:15:05.417, 0, GPU-1a2b3c4d-0000-1111-2222-333344445555, 5 %, 41 %, 30512 W, 1 W, 1 MHz, 1 MHz\n" + \
        "2025/03/04 09:15:06.417, 0, GPU-1a2b3c4d-0000-1111-2222-333344445555, 6 %, 41 %, 30512 MiB, 1 W, 1 MHz, 1 MHz\n" + \
        "2025/03/04 09:15:07.4"  # nvidia-smi killed mid-line
    t = read(tmp_path, text)
    assert t.gpus.util.tolist() == [87, 0, 6]
    assert t.bad_lines == 5
    where = [p.split(": ")[1] for p in t.problems]
    assert where == ["line 5", "line 7", "line 8", "line 9", "line 11"]
    assert "not a number" in t.problems[1] and "timestamp" in t.problems[2] and "fields" in t.problems[0]
    assert all(p.startswith(str(tmp_path / "node17.csv")) for p in t.problems)


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("index, name\n0, foo\n", "not an nvidia-smi"),
    ("2025/03/04 09:15:02.417, 0, 87 %\n", "not an nvidia-smi"),  # --format=csv,noheader: fields unknown
    ("index, utilization.gpu [%]\n0, 87 %\n", "no timestamp"),
])
def test_unusable_logs_name_the_file(tmp_path, text, why):
    with pytest.raises(TelemetryError, match=why) as err:
        read(tmp_path, text)
    assert str(tmp_path / "node17.csv") in str(err.value)


def test_missing_log_is_an_error_naming_it(tmp_path):
    with pytest.raises(TelemetryError, match="cannot read"):
        read_log(LogSpec.parse(str(tmp_path / "nope.csv")), Telemetry())


def test_compute_apps_log_and_uuid_to_index(tmp_path):
    t = Telemetry()
    gpu = tmp_path / "node17.csv"
    gpu.write_text(WITH_UNITS)
    apps = tmp_path / "apps.csv"
    apps.write_text("timestamp, gpu_uuid, pid, process_name, used_gpu_memory [MiB]\n"
                    "2025/03/04 09:15:03.101, GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff, 48213, /usr/bin/python3, 28790 MiB\n"
                    "2025/03/04 09:15:03.101, GPU-0000, 48377, vllm-worker, [N/A]\n")
    assert read_log(LogSpec.parse(f"{apps}@node17"), t) == "processes"
    assert read_log(LogSpec.parse(str(gpu)), t) == "gpu"
    p = t.processes
    assert t.hosts == ["node17"] and p.pid.tolist() == [48213, 48377] and p.name.tolist() == ["/usr/bin/python3",
                                                                                             "vllm-worker"]
    assert p.gpu.tolist() == [1, -1]  # the GPU log gives the first UUID's index; the other is unknown
    assert p.used_mib[0] == 28790 and math.isnan(p.used_mib[1]) and (p.job == UNKNOWN_JOB).all()


def test_host_comes_from_the_argument_or_the_file_stem(tmp_path):
    assert LogSpec.parse("/logs/cn0012.csv") == LogSpec("/logs/cn0012.csv", "cn0012")
    assert LogSpec.parse("/logs/a.csv@10.10.100.12") == LogSpec("/logs/a.csv", "10.10.100.12")
    odd = tmp_path / "gpu@night.csv"  # a file whose name holds an @ is that file
    odd.write_text("")
    assert LogSpec.parse(str(odd)) == LogSpec(str(odd), "gpu@night")


def test_local_times_take_the_configured_zone(tmp_path):
    text = ("timestamp, index, utilization.gpu [%]\n"
            "2025/03/30 01:59:59.000, 0, 1 %\n"  # Berlin: CET (UTC+1) ...
            "2025/03/30 03:00:00.000, 0, 1 %\n"  # ... then CEST (UTC+2) after the clocks go forward
            "2025/07/01 12:00:00.250, 0, 1 %\n")
    berlin = read(tmp_path, text, zone="Europe/Berlin").gpus.ts_ns.tolist()
    assert berlin == [utc("2025/03/30 00:59:59.000"), utc("2025/03/30 01:00:00.000"), utc("2025/07/01 10:00:00.250")]
    assert read(tmp_path, text).gpus.ts_ns.tolist()[2] == utc("2025/07/01 12:00:00.250")  # default UTC
    naive = np.array([utc("2025/10/26 02:30:00.000")])  # the hour that happens twice: the first one
    assert to_utc(naive, "Europe/Berlin").tolist() == [utc("2025/10/26 00:30:00.000")]


def test_record_log_round_trip_and_bad_lines(tmp_path):
    path = tmp_path / "processes.jsonl"
    path.write_text("\n".join([
        process_line(T * NS, "cn1", 2, "GPU-x", 4242, "xmrig", 2210.0, 81232, "0::/...job_81232/step_0"),
        process_line(T * NS + 1000, "cn1", 2, "GPU-x", 4243, "sh", None, NO_JOB, "0::/user.slice"),
        process_line(T * NS + 2000, "cn1", 2, "GPU-x", 4244, "sh", 1.0, UNKNOWN_JOB, None),
        '{"ts": "2025-03-04T09:15:02", "host": "cn1", "kind": "process", "pid": 1}',  # no zone
        '{"kind": "gpu"', "",
    ]) + "\n")
    t = Telemetry()
    read_record_log(str(path), "fallback", t)
    p = t.processes
    assert p.job.tolist() == [81232, NO_JOB, UNKNOWN_JOB] and p.pid.tolist() == [4242, 4243, 4244]
    assert p.ts_ns.tolist() == [T * NS, T * NS + 1000, T * NS + 2000] and math.isnan(p.used_mib[1])
    assert t.bad_lines == 2 and [x.split(": ")[1] for x in t.problems] == ["line 4", "line 5"]


# -- cgroups, host lists ---------------------------------------------------------------------
@pytest.mark.parametrize("text, job", [
    ("0::/system.slice/slurmstepd.scope/job_981/step_batch/user/task_0", 981),  # cgroup v2
    ("0::/system.slice/slurmstepd.scope/job_77/step_0/user/task_special", 77),
    ("0::/system.slice/cn0001_slurmstepd.scope/job_5/step_extern/user/task_0", 5),  # several slurmd
    ("0::/docker/abc/system.slice/slurmstepd.scope/job_6/step_interactive/user/task_0", 6),  # in a container
    ("12:pids:/user.slice\n11:devices:/slurm/uid_1000/job_1234/step_0/task_0\n4:memory:/slurm/uid_1000/job_1234/step_0",
     1234),  # cgroup v1, one line per controller
    ("7:freezer:/slurm_cn0003/uid_0/job_42/step_batch", 42),
    ("0::/user.slice/user-1000.slice/session-3.scope", NO_JOB),
    ("0::/system.slice/sshd.service", NO_JOB),
    ("0::/system.slice/slurmd.service", NO_JOB),
    ("0::/home/job_12/work", NO_JOB),  # a directory called job_ outside Slurm's tree
])
def test_slurm_job_from_cgroup(text, job):
    assert slurm_job(text) == job


def test_host_lists_expand_as_slurm_does():
    assert expand("cn[0001-0003,0007],gpu01") == ["cn0001", "cn0002", "cn0003", "cn0007", "gpu01"]
    assert expand("cn[098-101]") == ["cn098", "cn099", "cn100", "cn101"]
    assert expand("rack[1-2]-node[01-02]") == ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]
    assert expand("a1 b2,c[3-4]") == ["a1", "b2", "c3", "c4"]
    for bad in ("cn[1-", "cn[a-b]", "cn[5-2]", "cn]"):
        with pytest.raises(ValueError):
            expand(bad)


# -- Slurm -----------------------------------------------------------------------------------
def _set(n):
    return {"set": True, "infinite": False, "number": n}


UNSET = {"set": False, "infinite": False, "number": 0}


def sacct_job(job_id, nodes, start, end, gpus, v39=False, **extra):
    tres = [{"type": "cpu", "name": "", "id": 1, "count": 8}, {"type": "gres", "name": "gpu", "id": 1001, "count": gpus}]
    if gpus:
        tres.append({"type": "gres", "name": "gpu:a100", "id": 1002, "count": gpus})  # typed: not counted twice
    state = {"current": "COMPLETED" if end else "RUNNING", "reason": "None"} if v39 else \
        {"current": ["COMPLETED" if end else "RUNNING"], "reason": "None"}
    return {"job_id": job_id, "nodes": nodes, "state": state,
            "array": {"job_id": 0, "task_id": UNSET, "task": ""}, "het": {"job_id": 0, "job_offset": UNSET},
            "time": {"start": start, "end": end, "elapsed": 0, "limit": _set(60)},
            "tres": {"allocated": tres if start else [], "requested": tres}, **extra}


@pytest.mark.parametrize("v39", [True, False])
def test_sacct_gives_gpu_counts_per_node(tmp_path, v39):
    path = tmp_path / "sacct.json"
    path.write_text(json.dumps({"jobs": [
        sacct_job(10, "cn[01-02]", T, T + 3600, 6, v39),  # 6 GPUs on 2 nodes: 3 each
        sacct_job(11, "cn03", T + 10, 0, 1, v39),  # still running
        sacct_job(12, "None assigned", 0, 0, 4, v39),  # pending: never ran
        sacct_job(13, "cn04", T, T + 60, 0, v39,  # an array task, no GPUs
                  array={"job_id": 9, "task_id": _set(4), "task": "4"}),
    ]}))
    allocs, span = read_slurm(str(path))
    got = sorted((a.host, a.gpus, a.count, a.start_ns, a.end_ns, a.job, a.label) for a in allocs)
    assert got == [("cn01", None, 3, T * NS, (T + 3600) * NS, 10, "10"), ("cn02", None, 3, T * NS, (T + 3600) * NS, 10, "10"),
                   ("cn03", None, 1, (T + 10) * NS, OPEN_END, 11, "11"), ("cn04", None, 0, T * NS, (T + 60) * NS, 13, "9_4")]
    assert span[0] < 0 and span[1] >= (T + 3600) * NS  # all time up to the dump


def test_squeue_and_scontrol_give_indices(tmp_path):
    jobs = [
        {"job_id": 20, "nodes": "cn[01-02]", "job_state": ["RUNNING"], "start_time": _set(T), "end_time": _set(T + 60),
         "gres_detail": ["gpu:a100:2(IDX:0-1)", "gpu:a100:3(IDX:0,2-3),nic:1(IDX:0)"]},
        {"job_id": 21, "nodes": "cn03", "job_state": "RUNNING", "start_time": T, "end_time": T + 60,  # v0.0.39
         "gres_detail": [], "tres_alloc_str": "cpu=4,mem=8G,node=1,billing=4,gres/gpu=2,gres/gpu:a100=2"},
        {"job_id": 22, "nodes": "cn04", "job_state": ["PENDING"], "start_time": _set(T + 999), "gres_detail": []},
        {"job_id": 23, "nodes": "cn05", "job_state": ["RUNNING", "COMPLETING"], "start_time": _set(T),
         "gres_detail": ["gpu(CNT:2)"], "het_job_id": _set(23), "het_job_offset": _set(1)},
    ]
    path = tmp_path / "squeue.json"
    path.write_text(json.dumps({"jobs": jobs, "last_update": _set(T + 30)}))
    allocs, span = read_slurm(str(path))
    got = sorted((a.host, a.gpus, a.count, a.start_ns, a.end_ns, a.label) for a in allocs)
    # a snapshot speaks for the time after it, and its jobs hold their GPUs from their start to then
    end = (T + 30 + 120) * NS
    assert got == [("cn01", (0, 1), 2, T * NS, end, "20"), ("cn02", (0, 2, 3), 3, T * NS, end, "20"),
                   ("cn03", None, 2, T * NS, end, "21"), ("cn05", None, 2, T * NS, end, "23+1")]
    assert span == ((T + 30) * NS, end)


def test_gres_detail_entries():
    assert gpu_detail("gpu:h100:4(IDX:0-3)") == ((0, 1, 2, 3), 0)
    assert gpu_detail("gpu:1(IDX:5),shard:a100:2(2/10,0/10)") == ((5,), 0)
    assert gpu_detail("gpu(CNT:2)") == (None, 2)
    assert gpu_detail("nic:1(IDX:0)") == ((), 0)  # no GPU held on this node


@pytest.mark.parametrize("text, why", [
    ("{", "not JSON"), ('{"meta": {}}', "no 'jobs' list"), ('{"jobs": [1]}', r"jobs\[0\]"),
    ('{"jobs": [{"job_id": 1, "nodes": "cn[1-", "time": {"start": 5, "end": 0}}]}', r"job 1"),
])
def test_bad_slurm_dumps_name_the_file(tmp_path, text, why):
    path = tmp_path / "dump.json"
    path.write_text(text)
    with pytest.raises(TelemetryError, match=why) as err:
        read_slurm(str(path))
    assert str(path) in str(err.value)


def test_allocation_map(tmp_path):
    path = tmp_path / "gpus.map"
    path.write_text("# host gpus start end job\n"
                    "cn0012  0-1,3  2025-03-04T09:15:02Z  2025-03-04T10:15:02Z  81234\n"
                    "cn[0013-0014]  *  2025-03-04T10:15:02  -  81235   # local time, still running\n"
                    "cn0020  n=2  1741079702  1741083302.5  81236\n")
    got = [(a.host, a.gpus, a.count, a.start_ns, a.end_ns, a.job, a.label) for a in read_map(str(path), "Europe/Berlin")]
    assert got == [("cn0012", (0, 1, 3), 3, T * NS, (T + 3600) * NS, 81234, "81234"),
                   ("cn0013", None, -1, (T + 3600 - 3600) * NS, OPEN_END, 81235, "81235"),
                   ("cn0014", None, -1, (T + 3600 - 3600) * NS, OPEN_END, 81235, "81235"),
                   ("cn0020", None, 2, T * NS, int((T + 3600.5) * NS), 81236, "81236")]
    assert parse_indices("3,0-1") == (0, 1, 3)


@pytest.mark.parametrize("line, why", [
    ("cn1 0 2025-03-04T09:15:02Z -", "expected 5 fields"),
    ("cn1 x 2025-03-04T09:15:02Z - 5", "not GPU indices"),
    ("cn1 0 yesterday - 5", "Invalid isoformat"),
    ("cn1 0 1741083302 1741079702 5", "ends before it starts"),
    ("cn1 0 1741079702 - job5", "the job id as cgroups name it"),
    ("cn1 0 1741079702 - 81230_4", "an array task's own id"),
    ("cn1 n=-1 1741079702 - 5", "not GPU indices"),
])
def test_bad_allocation_map_lines_are_errors_naming_the_line(tmp_path, line, why):
    path = tmp_path / "gpus.map"
    path.write_text("# header\n" + line + "\n")
    with pytest.raises(TelemetryError, match=why) as err:
        read_map(str(path))
    assert f"{path}: line 2:" in str(err.value)


def test_odd_values_are_bad_lines_not_wrong_ones(tmp_path):
    text = ("timestamp, index, utilization.gpu [%]\n"
            "2026/02/30 10:00:00.000, 0, 5 %\n"  # no such day (strptime would read 2 March)
            "2026/02/28 10:00:00.000, 40000, 5 %\n"  # no such GPU index (an int16 would wrap)
            "2026/02/28 10:00:01.000, 1, 5 %\n")
    t = read(tmp_path, text)
    assert t.gpus.gpu.tolist() == [1] and t.bad_lines == 2
    assert "not a valid date" in t.problems[0] and "up to 4095" in t.problems[1]


def test_a_process_name_in_another_encoding_is_read(tmp_path):
    path = tmp_path / "apps.csv"
    path.write_bytes(b"timestamp, gpu_uuid, pid, process_name, used_gpu_memory [MiB]\n"
                     b"2025/03/04 09:15:03.101, GPU-x, 48213, /home/j\xfcrgen/train.py, 28790 MiB\n")
    t = Telemetry()
    read_log(LogSpec.parse(str(path)), t)
    assert t.processes.name.tolist() == ["/home/j\ufffdrgen/train.py"] and t.bad_lines == 0


def test_record_log_writes_json_and_refuses_out_of_range_values(tmp_path):
    from detector.telemetry.record_log import gpu_line

    line = gpu_line(T * NS, "cn1", 0, None, {"util": 5.0, "power_w": math.nan})
    assert json.loads(line)["power_w"] is None and "NaN" not in line
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join([line,
                               '{"ts": "2026-11-02T08:00:00Z", "host": "cn1", "kind": "gpu", "gpu": 70000}',
                               '{"ts": "2026-11-02T08:00:00Z", "host": "cn1", "kind": "process", "pid": 99999999999}',
                               '{"ts": "9999-12-31T00:00:00Z", "host": "cn1", "kind": "gpu", "gpu": 0}']) + "\n")
    t = Telemetry()
    read_record_log(str(path), "x", t)
    assert len(t.gpus.ts_ns) == 1 and t.bad_lines == 3 and math.isnan(t.gpus.power_w[0])
