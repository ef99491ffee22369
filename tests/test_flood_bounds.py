"""Under a spoofed SYN flood (issue 21): the flow engine hands the flows it ends at the end
of input on a bounded group at a time, with the records of ending them all at once; and
analyze reports the flood on its port, with the caps its detectors reached."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from detector.config import FlowConfig, load_config
from detector.flows.engine import END_GROUP, FlowEngine
from detector.flows.records import FLOW_SCHEMA, RecordBuilder
from detector.flows.table import EmittedFlows
from detector.pipeline.analyze_job import run_analyze
from detector.pipeline.ingest import Ingest


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    from detector.synth.encode import encode
    from detector.synth.scenarios import SCENARIOS

    sc = SCENARIOS["bench-syn-flood"](packets=150_000, seed=3)
    path = tmp_path_factory.mktemp("flood") / "flood.pcap"
    path.write_bytes(encode(sc.packets, sc.pool))
    return path


def records(path, end, threads=1):
    cfg = FlowConfig(threads=threads)
    engine, builder = FlowEngine(cfg), RecordBuilder(cfg)
    ingest = Ingest([str(path)], cfg.batch_size)
    during = [e for b in ingest.batches() for e in engine.process(b)]
    ending = end(engine)
    table = pa.Table.from_batches([builder.build(e) for e in during + ending], schema=FLOW_SCHEMA)
    return table.sort_by([("uid", "ascending")]), ending


def all_at_once(engine):
    """The end of input as it was before groups: every shard's flows ended, then one part."""
    for shard in engine.shards:
        shard.expire_idle(engine.last_ts)
        shard.flush()
    parts = [e for shard in engine.shards for e in shard.drain()]
    return [EmittedFlows.concat(parts)] if len(parts) > 1 else parts


def test_the_end_of_input_is_handed_on_in_bounded_groups_with_the_same_records(flood):
    whole, at_once = records(flood, all_at_once)
    assert len(at_once) == 1
    grouped, groups = records(flood, lambda e: list(e.finish_groups()))
    assert len(groups) >= 2  # about 148k flows still open at the end: more than one group
    assert max(len(g) for g in groups) <= END_GROUP + 32768  # a group, and one output buffer's rows
    assert grouped.equals(whole)
    assert whole.num_rows > 140_000


def test_the_shards_of_several_flow_threads_end_in_groups_too(flood):
    whole, _ = records(flood, all_at_once, threads=3)
    grouped, groups = records(flood, lambda e: list(e.finish_groups()), threads=3)
    assert grouped.equals(whole)
    assert len(groups) >= 2 and max(len(g) for g in groups) <= 2 * END_GROUP + 32768
    assert min(len(g) for g in groups[:-1]) >= END_GROUP  # small leftovers of a shard wait for the next


def test_analyze_names_the_flooded_port_and_the_caps_reached(flood, tmp_path):
    cfg_path = tmp_path / "caps.toml"
    cfg_path.write_text("[detect.port_scan]\nmax_contacts = 10000\n")
    result = run_analyze([str(flood)], load_config(str(cfg_path)), None, progress=False)
    (alert,) = [a for a in result.alerts if a.technique == "syn_flood"]
    assert alert.dst_port == 443 and alert.evidence["ports"] == [443]
    assert result.summary["detector_evictions"]["port_scan"] >= 2 * (140_000 - 10_000)
    json.dumps(result.summary)  # the summary stays JSON
