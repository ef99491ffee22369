"""The command line: outputs in every format, the summary, exit statuses, and CPU mode's imports."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from detector.cli import main
from detector.flows.records import FLOW_SCHEMA
from detector.output.flow_writers import ZEEK_FIELDS

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    assert main(["synth", "hpc-mix", "-o", str(d), "--packets", "5000", "--seed", "3"]) == 0
    return d / "hpc-mix.pcap"


def test_synth_is_deterministic_and_labelled(tmp_path, mix):
    assert main(["synth", "hpc-mix", "-o", str(tmp_path), "--packets", "5000", "--seed", "3"]) == 0
    assert (tmp_path / "hpc-mix.pcap").read_bytes() == mix.read_bytes()
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels["hpc-mix"]["benign"] is True and labels["hpc-mix"]["packets"] == 5000
    assert {h["role"] for h in labels["hpc-mix"]["hosts"]} >= {"login", "dtn", "compute", "gateway"}
    assert main(["synth", "hpc-mix", "-o", str(tmp_path), "--packets", "5000", "--seed", "4"]) == 0
    assert (tmp_path / "hpc-mix.pcap").read_bytes() != mix.read_bytes()


def test_parquet_output_and_stats(tmp_path, mix, capsys):
    out, stats = tmp_path / "f.parquet", tmp_path / "s.json"
    assert main(["flows", str(mix), "-o", str(out), "--stats", str(stats)]) == 0
    err = capsys.readouterr().err
    assert "5,000 packets" in err and "flows in" in err and "M packets/s" in err
    table = pq.read_table(out)
    assert table.schema.equals(FLOW_SCHEMA)
    s = json.loads(stats.read_text())
    assert s["packets"] == 5000 and s["flows"] == table.num_rows == s["flows_written"]
    assert sum(table["orig_pkts"].to_pylist()) + sum(table["resp_pkts"].to_pylist()) == s["ip_packets"]
    assert len(set(table["uid"].to_pylist())) == table.num_rows


def test_csv_output(tmp_path, mix):
    out = tmp_path / "f.csv"
    assert main(["flows", str(mix), "-o", str(out), "-q"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(rows[0]) == set(FLOW_SCHEMA.names)
    assert rows[0]["proto"] in ("tcp", "udp", "icmp")


def test_zeek_conn_log(tmp_path, mix):
    out = tmp_path / "conn.log"
    assert main(["flows", str(mix), "-o", str(out), "-q"]) == 0  # format from the suffix
    lines = out.read_text().splitlines()
    assert lines[0] == "#separator \\x09"
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    types = next(line for line in lines if line.startswith("#types")).split("\t")[1:]
    assert fields == [f for f, _ in ZEEK_FIELDS] and len(types) == len(fields)
    assert lines[-1].startswith("#close")
    data = [line.split("\t") for line in lines if not line.startswith("#")]
    assert data and all(len(row) == len(fields) for row in data)
    rec = dict(zip(fields, data[0]))
    float(rec["ts"])
    assert rec["proto"] in ("tcp", "udp", "icmp") and rec["uid"].startswith("C")
    for row in data:
        r = dict(zip(fields, row))
        span = r["duration"]  # Zeek leaves it unset for zero-length flows
        assert span == "-" or float(span) > 0
        assert r["history"] != ""


def test_python_dash_m_and_help():
    proc = subprocess.run([sys.executable, "-m", "detector", "--help"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0 and "flows" in proc.stdout and "synth" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "detector", "flows"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_gpu_backend_without_a_gpu_is_refused_clearly(tmp_path, mix, capsys):
    from detector.backend import BackendUnavailable, select_backend

    try:
        select_backend("gpu")
    except BackendUnavailable as exc:
        reason = str(exc)
    else:
        pytest.skip("a GPU (or the CUDA simulator) is usable here")
    assert main(["flows", str(mix), "-o", str(tmp_path / "x.parquet"), "--backend", "gpu"]) == 2
    assert f"--backend gpu: {reason}" in capsys.readouterr().err


def test_cpu_mode_imports_no_gpu_package(tmp_path, mix):
    code = (f"import sys; from detector.cli import main; "
            f"rc = main(['flows', {str(mix)!r}, '-o', {str(tmp_path / 'o.parquet')!r}, '--backend', 'cpu', '-q']); "
            f"bad = [m for m in ('cupy', 'cudf', 'cuml', 'numba.cuda') if m in sys.modules]; "
            f"print(rc, bad)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.stdout.strip() == "0 []", proc.stderr


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_threads_give_the_same_flows(tmp_path, mix, threads):
    conf = tmp_path / "small-batches.toml"  # flows spanning many batches, each split by shard
    conf.write_text("[flows]\nbatch_size = 512\n")
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert main(["flows", str(mix), "-o", str(a), "-q", "--threads", "1", "--config", str(conf)]) == 0
    assert main(["flows", str(mix), "-o", str(b), "-q", "--threads", str(threads), "--config", str(conf)]) == 0
    ta = pq.read_table(a).sort_by("uid")
    tb = pq.read_table(b).sort_by("uid")
    assert ta.num_rows > 50
    assert ta.equals(tb)


def test_threads_with_a_full_table_count_every_packet_once(tmp_path, mix):
    conf = tmp_path / "tiny-table.toml"
    conf.write_text("[flows]\nbatch_size = 512\nmax_flows = 24\n")
    out, stats = tmp_path / "e.parquet", tmp_path / "e.json"
    assert main(["flows", str(mix), "-o", str(out), "-q", "--threads", "3", "--config", str(conf),
                 "--stats", str(stats)]) == 0
    summary = json.loads(stats.read_text())
    t = pq.read_table(out)
    assert summary["evicted_flows"] > 0
    assert sum(t["orig_pkts"].to_pylist()) + sum(t["resp_pkts"].to_pylist()) == summary["ip_packets"]


def test_progress_bar_when_asked(tmp_path, mix, capsys):
    assert main(["flows", str(mix), "-o", str(tmp_path / "p.parquet"), "--progress"]) == 0
    assert "pkts" in capsys.readouterr().err


def test_synth_snap_length_cuts_payloads_not_sizes(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["synth", "hpc-mix", "-o", str(full), "--packets", "3000", "--seed", "5"]) == 0
    assert main(["synth", "hpc-mix", "-o", str(cut), "--packets", "3000", "--seed", "5", "--snaplen", "128"]) == 0
    from detector.sources import open_capture

    reader = open_capture(str(cut / "hpc-mix.pcap"))
    assert reader.snaplen == 128
    batch = next(reader.batches())
    assert batch.caplen.max() <= 128 and (batch.wirelen >= batch.caplen).all()
    reader.src.close()
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert main(["flows", str(full / "hpc-mix.pcap"), "-o", str(a), "-q"]) == 0
    assert main(["flows", str(cut / "hpc-mix.pcap"), "-o", str(b), "-q"]) == 0
    ta, tb = pq.read_table(a).sort_by("uid"), pq.read_table(b).sort_by("uid")
    for col in ("uid", "orig_ip_bytes", "resp_ip_bytes", "orig_bytes", "resp_bytes", "history"):
        assert ta[col].equals(tb[col]), col
