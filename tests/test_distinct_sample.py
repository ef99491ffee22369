"""The bounded address sample detectors keep: the same sample, examples and count whatever
order the values arrive in (the CPU and GPU flow tables, and different thread counts, emit flows
in different orders)."""
from __future__ import annotations

import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from detector.config import FlowConfig
from detector.detect.base import FlowView
from detector.detect.floods import Floods
from detector.detect.sample import DistinctSample
from detector.pipeline.flows_job import run_flows


def _addresses(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [f"{rnd.randint(1, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
            for _ in range(n)]


def test_below_its_size_the_sample_is_the_set_and_its_count_exact():
    values = _addresses(500, 1)
    s = DistinctSample(1000)
    s.update(values + values[:100])  # repeats are one value
    assert s.exact and s.items() == set(values) and len(s) == len(set(values))
    assert s.examples(3) == sorted(set(values))[:3]


@pytest.mark.parametrize("size", [1, 64, 1000])
def test_the_sample_does_not_depend_on_arrival_order(size):
    values = _addresses(20_000, 2) * 2
    seen = []
    for seed in range(4):
        order = values[:]
        random.Random(seed).shuffle(order)
        s = DistinctSample(size)
        s.update(order)
        seen.append((s.items(), len(s), s.exact, s.examples(10)))
    assert all(x == seen[0] for x in seen[1:])
    assert len(seen[0][0]) == size and not seen[0][2]


def test_past_its_size_the_count_is_an_estimate_within_a_few_percent():
    """KMV's relative standard error is about 1/sqrt(size - 2): 3 % at 1000; 15 % is five of them."""
    for n in (5_000, 50_000, 200_000):
        values = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n)]
        s = DistinctSample(1000)
        s.update(values)
        assert not s.exact and abs(len(s) - n) / n < 0.15, (n, len(s))


def test_syn_flood_alert_is_the_same_whatever_order_flows_arrive_in(synth_dir, tmp_path, monkeypatch):
    """More spoofed sources than the sample holds: the count, the examples and the window chosen
    must not depend on the order or the batching of the flow records."""
    out = tmp_path / "flood.parquet"
    run_flows([str(synth_dir / "dos-syn-flood.pcap")], str(out), "parquet", FlowConfig(), progress=False)
    table = pq.read_table(out)

    def alerts(order: np.ndarray, batch: int, sample: int) -> list[dict]:
        import detector.detect.floods as floods

        monkeypatch.setattr(floods, "SOURCE_SAMPLE", sample)
        det = Floods()
        for start in range(0, len(order), batch):
            for rb in table.take(order[start:start + batch]).to_batches():
                det.observe_flows(FlowView(rb))
        return [a.to_dict() for a in det.finish() if a.technique == "syn_flood"]

    n = table.num_rows
    rng = np.random.default_rng(3)
    for sample in (256, 1_000_000):
        first = alerts(np.arange(n), n, sample)
        assert first, "the scenario's flood is found"
        assert first[0]["evidence"]["sources_exact"] == (sample > first[0]["evidence"]["sources"])
        for order, batch in ((np.arange(n)[::-1], 997), (rng.permutation(n), 4096), (rng.permutation(n), 50)):
            assert alerts(order, batch, sample) == first


@pytest.mark.parametrize("size", [8, 1000])
def test_merged_samples_are_the_sample_of_all_the_values(size):
    rng = random.Random(size)
    values = [f"10.0.{rng.randrange(40)}.{rng.randrange(256)}" for _ in range(3000)]
    one = DistinctSample(size)
    one.update(values)
    parts = [DistinctSample(size) for _ in range(3)]
    for k, v in enumerate(values):
        parts[rng.randrange(3) if k % 7 else 0].add(v)
    parts[2].merge(parts[0])
    parts[2].merge(parts[1])
    merged = parts[2]
    assert (merged.items(), len(merged), merged.exact) == (one.items(), len(one), one.exact)


def test_flood_alerts_from_merged_partitions_are_the_one_pass_alerts(synth_dir, tmp_path, monkeypatch):
    """Each partition of the records in its own detector, merged in any order: the alerts of
    one detector over all of them (spoofed sources past the sample, and reflection)."""
    import detector.detect.floods as floods

    monkeypatch.setattr(floods, "SOURCE_SAMPLE", 256)
    out = tmp_path / "flood.parquet"
    run_flows([str(synth_dir / "dos-syn-flood.pcap"), str(synth_dir / "dos-reflection.pcap")], str(out), "parquet",
              FlowConfig(), progress=False)
    table = pq.read_table(out)
    one = Floods()
    for rb in table.to_batches():
        one.observe_flows(FlowView(rb))
    expected = [a.to_dict() for a in one.finish()]
    assert {a["technique"] for a in expected} == {"syn_flood", "reflection"}
    rng = np.random.default_rng(8)
    for order in ([0, 1, 2], [2, 0, 1]):
        part_of = rng.integers(0, 3, table.num_rows)
        parts = [Floods() for _ in range(3)]
        for k, det in enumerate(parts):
            for rb in table.filter(part_of == k).to_batches(max_chunksize=500):
                det.observe_flows(FlowView(rb))
        merged = parts[order[0]]
        for k in order[1:]:
            merged.merge(parts[k])
        assert sorted(map(str, (a.to_dict() for a in merged.finish()))) == sorted(map(str, expected))
