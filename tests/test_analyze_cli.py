"""``detector analyze``: outputs, the alert schema of DESIGN.md, the summary, exit statuses,
bad input, and CPU mode's imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from detector.alerts import CATEGORIES, SEVERITIES
from detector.cli import main
from tests.test_cli import ENV

RFC3339_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
FIELDS = ["ts", "ts_end", "category", "technique", "severity", "score", "src_ip", "dst_ip", "src_port", "dst_port",
          "proto", "host", "summary", "evidence", "detector", "community_id"]


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    d = tmp_path_factory.mktemp("analyze")
    assert main(["synth", "scan-ports", "mitm-arp-spoof", "hpc-mix", "-o", str(d), "--packets", "3000",
                 "--seed", "2"]) == 0
    return d


def test_alerts_to_stdout_follow_the_schema(captures, capsys):
    assert main(["analyze", str(captures / "scan-ports.pcap"), str(captures / "mitm-arp-spoof.pcap")]) == 0
    out, err = capsys.readouterr()
    alerts = [json.loads(line) for line in out.splitlines()]
    assert {(a["category"], a["technique"]) for a in alerts} >= {("scan", "port_scan"), ("mitm", "arp_spoof")}
    for a in alerts:
        assert list(a) == FIELDS
        assert RFC3339_US.match(a["ts"]) and RFC3339_US.match(a["ts_end"]) and a["ts"] <= a["ts_end"]
        assert a["category"] in CATEGORIES and a["severity"] in SEVERITIES and 0.0 <= a["score"] <= 1.0
        assert isinstance(a["host"], str) and a["host"] and a["summary"] and isinstance(a["evidence"], dict)
        assert re.match(r"^[a-z_]+/\d+$", a["detector"])
        assert a["community_id"] is None or a["community_id"].startswith("1:")
    assert [a["ts"] for a in alerts] == sorted(a["ts"] for a in alerts)
    # the human summary goes to stderr
    assert "by severity:" in err and "by category:" in err and "top hosts" in err
    assert "no site configuration" in err  # and it says it inferred the local networks


def test_alerts_file_flows_out_stats_and_min_severity(captures, tmp_path, capsys):
    out, flows, stats = tmp_path / "a.jsonl", tmp_path / "f.parquet", tmp_path / "s.json"
    assert main(["analyze", str(captures / "scan-ports.pcap"), "-o", str(out), "--flows-out", str(flows),
                 "--stats", str(stats), "--min-severity", "high", "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert alerts and all(a["severity"] in ("high", "critical") for a in alerts)
    table = pq.read_table(flows)
    summary = json.loads(stats.read_text())
    assert table.num_rows == summary["flows"] > 1000
    # the alert's community id joins it with its flow, as with Zeek's conn.log
    cids = set(table["community_id"].to_pylist())
    assert all(a["community_id"] in cids for a in alerts if a["community_id"])


def test_benign_capture_with_site_config(captures, capsys):
    assert main(["analyze", str(captures / "hpc-mix.pcap"), "--config", str(captures / "site.toml")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "0 alert(s)" in err and "no site configuration" not in err


def test_truncated_capture_keeps_what_was_read(captures, tmp_path, capsys):
    data = (captures / "scan-ports.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 37])
    out = tmp_path / "a.jsonl"
    assert main(["analyze", str(cut), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert str(cut) in err and "offset" in err
    assert any(json.loads(line)["technique"] == "port_scan" for line in out.read_text().splitlines())


@pytest.mark.parametrize("argv,message", [
    (["--config", "/nonexistent/x.toml"], "x.toml"),
    (["--report", "/nonexistent/r.html"], "folder /nonexistent does not exist"),
    (["--model", "/nonexistent/m.model"], "m.model: cannot read"),
])
def test_usage_errors_exit_2(captures, capsys, argv, message):
    assert main(["analyze", str(captures / "hpc-mix.pcap"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_garbage_config_is_named(captures, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nlocal_nets = ["10.0.0.0/33"]\n')
    assert main(["analyze", str(captures / "hpc-mix.pcap"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "site.local_nets" in err
    bad.write_text("[detect.bruteforce]\nmin_failures = 'many'\n")
    assert main(["analyze", str(captures / "hpc-mix.pcap"), "--config", str(bad)]) == 2
    assert "min_failures" in capsys.readouterr().err


def test_unwritable_alerts_file_is_an_error_not_a_traceback(captures, capsys):
    assert main(["analyze", str(captures / "hpc-mix.pcap"), "-o", "/nonexistent-dir/a.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "/nonexistent-dir/a.jsonl" in err and "Traceback" not in err


def test_cpu_mode_analyze_imports_no_gpu_package(captures, tmp_path):
    code = (f"import sys; from detector.cli import main; "
            f"rc = main(['analyze', {str(captures / 'scan-ports.pcap')!r}, '-o', {str(tmp_path / 'a.jsonl')!r}, "
            f"'--backend', 'cpu', '-q']); "
            f"bad = [m for m in ('cupy', 'cudf', 'cuml', 'numba.cuda') if m in sys.modules]; "
            f"print(rc, bad)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.stdout.strip() == "0 []", proc.stderr
