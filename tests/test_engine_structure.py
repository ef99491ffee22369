"""The data-parallel flow engine's shape does not depend on its input: per accounted range it
waits for the device a fixed number of times and calls the array library a bounded number of
times (each call is one or a few kernel launches on CuPy), whether the range is full or not and
whether it holds one flow of thousands of packets or hundreds of small ones.

The array library is NumPy behind a counting proxy; the engine cannot tell it from NumPy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detector.config import FlowConfig
from detector.flows.scan_engine import ScanFlowEngine
from detector.pipeline.ingest import Ingest
from tests import flow_cases as fc


class CountingXp:
    """``numpy`` with every function call counted (types and constants pass through)."""

    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        v = getattr(np, name)
        if isinstance(v, type) or not callable(v):
            return v

        def counted(*a, **k):
            self.calls += 1
            return v(*a, **k)

        return counted


class Range:
    def __init__(self, packets, syncs, calls, rounds, walked):
        self.packets, self.syncs, self.calls, self.rounds, self.walked = packets, syncs, calls, rounds, walked


def ranges(path, batch_size: int) -> list[Range]:
    """What each accounted range cost: host reads, array calls, FSM rounds, walked segments."""
    xp = CountingXp()
    engine = ScanFlowEngine(dataclasses.replace(FlowConfig(), batch_size=batch_size), xp=xp)
    table, out = engine.table, []
    account = table.account

    def counted(cols, pkt_hash, a, z):
        s0, c0, r0, w0 = engine.syncs, xp.calls, table.stats.rounds, table.stats.walked_segments
        emitted = account(cols, pkt_hash, a, z)
        out.append(Range(z - a, engine.syncs - s0, xp.calls - c0, table.stats.rounds - r0,
                         table.stats.walked_segments - w0))
        return emitted

    table.account = counted
    for b in Ingest([str(path)], batch_size).batches():
        engine.process(b)
    engine.finish()
    return out


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    from detector.synth.encode import encode
    from detector.synth.scenarios import hpc_mix

    folder = tmp_path_factory.mktemp("shape")
    long, mix = folder / "long.pcap", folder / "mix.pcap"
    long.write_bytes(fc.long_flow(12_000))
    sc = hpc_mix(packets=12_000, seed=5)
    mix.write_bytes(encode(sc.packets, sc.pool))
    return {"long": long, "mix": mix}


def test_host_reads_per_range_do_not_grow_with_the_batch_or_the_longest_flow(captures):
    seen = {(name, size): ranges(path, size) for name, path in captures.items() for size in (1024, 4096, 16384)}
    assert len(seen[("long", 16384)]) == 1  # the whole 12k-packet flow in one range
    reads = {r.syncs for rs in seen.values() for r in rs if r.rounds == 1 and not r.walked}
    assert reads == {4}, reads  # group size, first plan, the round's check, final sizes


def test_array_calls_per_range_do_not_grow_with_the_batch_or_the_longest_flow(captures):
    """Calls differ only by which branches a range takes (flows ending in it, an empty table),
    never by its packets: the scans run a fixed doubling schedule."""
    long = {size: [r.calls for r in ranges(captures["long"], size)] for size in (1024, 4096, 16384)}
    mix = {size: [r.calls for r in ranges(captures["mix"], size)] for size in (1024, 4096)}
    # the first range (empty table) costs the same whether it holds 1k, 4k or all 12k packets
    assert long[1024][0] == long[4096][0] == long[16384][0]
    # later ranges of one long flow: one cost, whatever their size
    assert len(set(long[1024][1:] + long[4096][1:])) == 1
    # a mix of many flows takes a few more branches, the same ones at every batch size
    assert set(mix[1024][1:]) == set(mix[4096][1:])
    bound = max(max(v) for v in long.values())
    assert all(c <= bound * 1.05 for v in mix.values() for c in v), (bound, mix)


@pytest.mark.cudasim
def test_gpu_engine_waits_and_launches_as_often_at_every_batch_fill(tmp_path):
    """The GPU engine (kernels in Numba's simulator): host reads and its own kernel launches per
    batch are the same for batches of 256 and of 1024 packets of one long flow."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"):
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before Numba is imported (make test runs these)")
    from detector.backend import select_backend
    from detector.flows.gpu_engine import GpuFlowEngine

    path = tmp_path / "long.pcap"
    path.write_bytes(fc.long_flow(2048))
    per_batch = {}
    for size in (256, 1024):
        engine = GpuFlowEngine(dataclasses.replace(FlowConfig(), batch_size=size), select_backend("gpu"))
        costs = []
        for b in Ingest([str(path)], size).batches():
            s0, l0 = engine.syncs, engine.clock.launches
            engine.process(b)
            costs.append((engine.syncs - s0, engine.clock.launches - l0))
        assert engine.table.stats.walked_segments == 0
        per_batch[size] = costs
    assert len(per_batch[256]) == 8 and len(per_batch[1024]) == 2
    (steady,) = set(per_batch[256][1:])
    assert set(per_batch[1024][1:]) == {steady} and min(steady) > 0, per_batch
