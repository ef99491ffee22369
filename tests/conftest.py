from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from detector.config import FlowConfig
from detector.pipeline.flows_job import run_flows

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("DETECTOR_CORPUS", REPO.parent / "shared" / "pcaps"))
ZEEK_TRACES = Path(os.environ.get("DETECTOR_ZEEK_TRACES", REPO.parent / "shared" / "traces-zeek"))


@pytest.fixture
def corpus() -> Path:
    """The shared capture corpus (``../shared/pcaps``); tests using it skip when it is absent."""
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"capture corpus not found at {CORPUS}")
    return CORPUS


def corpus_files() -> list[Path]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name not in ("MANIFEST.tsv", "README.md"))


def capture_span(rec: dict):
    """A record's ``duration`` field: the span of its packets' capture timestamps (not wall time)."""
    return rec["duration"]


class FlowRun:
    def __init__(self, result, table):
        self.result = result
        self.table = table
        # timestamps as integer nanoseconds: exact, and Python's datetime cannot hold them
        ts = table["ts"].cast("int64")
        self.rows = table.set_column(table.schema.get_field_index("ts"), "ts", ts).to_pylist()
        for row in self.rows:
            row["ts_ns"] = row["ts"]

    @property
    def summary(self) -> dict:
        return self.result.summary

    def one(self, **match) -> dict:
        found = [r for r in self.rows if all(r[k] == v for k, v in match.items())]
        assert len(found) == 1, f"expected one flow matching {match}, found {len(found)}: {found}"
        return found[0]

    def total_packets(self) -> int:
        return sum(r["orig_pkts"] + r["resp_pkts"] for r in self.rows)


@pytest.fixture
def flows(tmp_path):
    """``flows(data_or_paths, **config)`` runs the flow job and returns a :class:`FlowRun`."""

    def run(inputs, **cfg) -> FlowRun:
        if isinstance(inputs, bytes):
            p = tmp_path / f"in{len(list(tmp_path.iterdir()))}.pcap"
            p.write_bytes(inputs)
            inputs = [str(p)]
        elif isinstance(inputs, (str, Path)):
            inputs = [str(inputs)]
        out = tmp_path / f"flows{len(list(tmp_path.iterdir()))}.parquet"
        config = dataclasses.replace(FlowConfig(), **cfg).validate()
        result = run_flows([str(i) for i in inputs], str(out), "parquet", config, progress=False)
        return FlowRun(result, pq.read_table(out))

    return run


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """Every ``detector synth`` scenario, small (3000 background packets), seed 5."""
    from detector.cli import main

    d = tmp_path_factory.mktemp("scenarios")
    assert main(["synth", "all", "-o", str(d), "--packets", "3000", "--seed", "5"]) == 0
    return d
