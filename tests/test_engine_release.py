"""At the end of input the flow engines hand back their table's memory before the detectors
report (a flood's table was most of a run's peak), keeping their counts."""

from __future__ import annotations

import dataclasses

import pytest

from detector.config import FlowConfig
from detector.flows.engine import FlowEngine
from detector.flows.scan_engine import ScanFlowEngine
from detector.pipeline.ingest import Ingest
from tests import flow_cases as fc


@pytest.mark.parametrize("engine_cls", [FlowEngine, ScanFlowEngine])
def test_a_released_engine_keeps_its_eviction_count_and_holds_no_table(tmp_path, engine_cls):
    path = tmp_path / "rnd.pcap"
    path.write_bytes(fc.random_tcp(7, n=1500, keys=64))
    cfg = dataclasses.replace(FlowConfig(), max_flows=16, batch_size=256)
    engine = engine_cls(cfg)
    for batch in Ingest([str(path)], cfg.batch_size).batches():
        engine.process(batch)
    records = sum(len(e) for e in engine.finish_groups())
    evicted = engine.evicted
    assert records and evicted > 0  # (the table of 16 overflowed)
    engine.release()
    assert engine.evicted == evicted and engine.active_flows == 0
    assert not getattr(engine, "shards", None) and getattr(engine, "table", None) is None
