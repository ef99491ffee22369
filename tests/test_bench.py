"""``detector bench``: the JSON follows benchmarks/bench.schema.json, the chart is a real PNG
with a bar per measured tool, missing peers get rows saying so, and the README's performance
table is the one generated from the committed run. Speeds are not asserted here (benchmarks
report ratios; these machines are noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.bench import report
from detector.bench.tools import tools
from detector.cli import main

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "benchmarks" / "bench.schema.json"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    out, png, md = d / "r.json", d / "r.png", d / "r.md"
    code = main(["bench", "--quick", "--packets", "20000", "--work", str(d / "work"), "-o", str(out), "--plot",
                 str(png), "--markdown", str(md), "-q", "--only", "detector-cpu-1core", "detector-cpu-1core-process",
                 "detector-gpu", "detector-cpu-1core-snap128", "detector-gpu-snap128", "dpkt", "scapy", "zeek"])
    assert code == 0
    return json.loads(out.read_text()), png, md


def test_quick_run_json_follows_the_schema(quick_run):
    doc, _, _ = quick_run
    report.validate(doc, SCHEMA)
    rows = {r["tool"]: r for r in doc["results"]}
    assert set(rows) == {"detector-cpu-1core", "detector-cpu-1core-process", "detector-gpu", "detector-cpu-1core-snap128",
                         "detector-gpu-snap128", "dpkt", "scapy", "zeek"}
    # the same traffic cut to 128 bytes a packet: as many packets and flows, fewer bytes to read
    snap = rows["detector-cpu-1core-snap128"]
    assert snap["packets_per_s"] > 0 and snap["flows"] == doc["input"]["flows"]
    assert doc["input"]["packets"] == 20000 and rows["detector-cpu-1core"]["flows"] == doc["input"]["flows"]
    assert rows["detector-cpu-1core"]["packets_per_s"] > 0 and "dpkt" in rows["detector-cpu-1core"]["ratio_to"]
    assert "extrapolated" in rows["scapy"]["notes"]
    for gpu in ("detector-gpu", "detector-gpu-snap128"):
        if rows[gpu]["packets_per_s"] is None:
            assert "GPU" in rows[gpu]["notes"]
    assert set(doc["stages"]["stages"]) == {"read", "decode", "flows", "l7", "features", "scoring", "output"}


def test_quick_run_chart_is_a_png_with_a_bar_per_measured_tool(quick_run, tmp_path):
    doc, png, md = quick_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    measured = [r["tool"] for r in doc["results"] if r["packets_per_s"]]
    assert report.plot(doc, str(tmp_path / "again.png")) == len(measured) >= 3
    table = md.read_text()
    assert all(f"| {r['tool']} |" in table for r in doc["results"])


def test_a_missing_peer_is_a_row_that_says_so(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    rows = {t.name: t for t in tools(tmp_path / "x.pcap", tmp_path, 1000, True, (False, "no usable GPU: test"))}
    for name in ("tshark", "nfpcapd", "softflowd", "suricata", "zeek", "argus"):
        assert not rows[name].runnable and "not installed" in rows[name].notes
    assert not rows["detector-gpu"].runnable and rows["detector-gpu"].notes == "no usable GPU: test"


def test_schema_rejects_a_result_without_its_figures():
    doc = {"benchmark": "detector bench", "date": "2026-11-26", "repeat": 1,
           "machine": {"cpu": "x", "cores": 1, "memory_mb": 1, "gpu": None, "versions": {}, "python": "3",
                       "platform": "p"},
           "input": {"file": "f", "bytes": 1, "packets": 1, "wire_bytes": 1, "flows": 1},
           "results": [{"tool": "dpkt", "packets_per_s": 10, "gbit_per_s": 1.0, "flows": 1, "peak_rss_mb": 1.0,
                        "notes": ""}]}
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        report.validate(doc, SCHEMA)  # a measured row needs its seconds and ratios
    doc["results"][0].update({"seconds": 0.1, "ratio_to": {"dpkt": 1.0}})
    report.validate(doc, SCHEMA)


def test_readme_performance_table_is_generated_from_the_committed_run(tmp_path):
    text = (REPO / "README.md").read_text()
    assert report.README_BEGIN in text
    block = text.split(report.README_BEGIN, 1)[1].split(report.README_END, 1)[0].strip()
    runs = sorted((REPO / "benchmarks" / "results").glob("*-bench-*.json"))
    assert runs, "no committed detector bench run"
    docs = [json.loads(p.read_text()) for p in runs]
    assert block in [report.markdown(d).strip() for d in docs]


def test_unknown_tool_and_bad_input_are_usage_errors(tmp_path, capsys):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    assert main(["bench", "--quick", "--input", str(bad), "--work", str(tmp_path / "w"), "-q"]) == 2
    assert "bad.pcap" in capsys.readouterr().err
    assert main(["bench", "--quick", "--packets", "2000", "--work", str(tmp_path / "w"), "-q", "--only",
                 "detector-cpu-1core", "dpkkt"]) == 2
    err = capsys.readouterr().err
    assert "unknown tool(s) dpkkt" in err and "dpkt" in err


def test_barrier_waits_for_the_whole_group_and_gives_up_after_its_timeout(tmp_path, monkeypatch):
    import threading

    from detector.bench import scaling

    monkeypatch.delenv(scaling.BARRIER_ENV, raising=False)
    assert scaling.wait_at_barrier() is None  # outside a group
    (tmp_path / "ready-1").touch()  # the sibling is ready: this one goes on, together
    monkeypatch.setenv(scaling.BARRIER_ENV, f"{tmp_path}:2")
    monkeypatch.setattr(scaling, "BARRIER_TIMEOUT", 60.0)
    assert scaling.wait_at_barrier() is True
    assert len(list(tmp_path.glob("ready-*"))) == 2
    # siblings that never come (they failed): the timeout lets this one go on, alone
    monkeypatch.setenv(scaling.BARRIER_ENV, f"{tmp_path}:4")
    monkeypatch.setattr(scaling, "BARRIER_TIMEOUT", 0.05)
    out = []
    waiter = threading.Thread(target=lambda: out.append(scaling.wait_at_barrier()), daemon=True)
    waiter.start()
    waiter.join(60)  # a guard against hanging the suite, not a timing
    assert out == [False]


def test_scaling_says_why_it_is_empty(tmp_path, monkeypatch):
    from detector.bench import scaling

    monkeypatch.setattr(scaling.shutil, "which", lambda name: None)
    s = scaling.measure_scaling(tmp_path / "x.pcap", tmp_path, 1)
    assert "speedup" not in s
    assert "taskset" in s["note"] or "fewer than two cores" in s["note"]
    assert report.scaling_lines(s) == ["", f"Two cores: not measured ({s['note']})."]
    committed = REPO / "benchmarks" / "results" / "2026-11-26-bench-vm-5.json"
    report.validate({**json.loads(committed.read_text()), "scaling": s}, SCHEMA)


def test_a_round_where_one_run_went_on_alone_or_failed_is_dropped(monkeypatch):
    from detector.bench import scaling

    def runs(*docs):
        it = iter(docs)
        monkeypatch.setattr(scaling, "run_timed", lambda cmd, env: next(it))

    ok = {"rc": 0, "json": {"seconds": 0.5, "together": True}}
    runs(ok, {"rc": 0, "json": {"seconds": 0.7, "together": True}})
    assert scaling._together([["a"], ["b"]], {}) == 0.7  # the slower one counts
    runs(ok, {"rc": 0, "json": {"seconds": 0.3, "together": False}})
    assert scaling._together([["a"], ["b"]], {}) is None
    runs(ok, {"rc": 1, "json": None})
    assert scaling._together([["a"], ["b"]], {}) is None


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2 or not __import__("shutil").which("taskset"),
                    reason="needs two cores to run on, and taskset to pin the runs")
def test_scaling_runs_one_core_two_threads_and_two_independent_runs_side_by_side(tmp_path):
    from detector.bench.run import generated_capture
    from detector.bench.scaling import measure_scaling

    capture = generated_capture(tmp_path, 20000)
    s = measure_scaling(capture, tmp_path, 1)
    runs = s["seconds"]  # which runs were made; their times are not asserted
    assert set(runs) == {"one_core", "two_threads", "two_independent"}
    one, sec = runs["one_core"], runs
    assert s["speedup"] == {"two_threads": round(one / sec["two_threads"], 2),
                            "two_independent": round(2 * one / sec["two_independent"], 2)}
    assert s["memory_copy_speedup"] > 0 and len(s["cores"]) == 2
    # every run wrote the whole capture's flows
    import pyarrow.parquet as pq

    counts = {p.name: pq.read_metadata(p).num_rows for p in tmp_path.glob("scale-*.parquet")}
    assert len(counts) == 4 and len(set(counts.values())) == 1
    committed = REPO / "benchmarks" / "results" / "2026-11-26-bench-vm-5.json"  # the first run with the section
    doc = {**json.loads(committed.read_text()), "scaling": s}
    report.validate(doc, SCHEMA)
    table = report.markdown(doc)
    assert "sharing nothing (the ceiling)" in table and f"{s['speedup']['two_threads']:.2f}x" in table
