"""The L7 tap run on only the packets :func:`detector.l7.select.candidates` keeps (what a GPU copies
back) finds exactly what it finds on whole batches: every scenario, every shared capture."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detector.config import FlowConfig
from detector.flows.engine import FlowEngine
from detector.l7.events import Events, PacketArrays
from detector.l7.select import candidates
from detector.l7.tap import L7Tap
from detector.pipeline.ingest import Ingest
from kernels import l7_select as ks
from tests.conftest import CORPUS, corpus_files


def subset(b, cols, n):
    sig, fid = np.empty(n, np.uint8), np.empty(n, np.uint64)
    ks.classify_payloads(b.buf, b.off, cols, n, sig, fid)
    idx = np.flatnonzero(candidates(np, cols, sig, n))
    sub = dataclasses.replace(b, off=b.off[idx], caplen=b.caplen[idx], wirelen=b.wirelen[idx], ts_ns=b.ts_ns[idx],
                              link=b.link[idx])
    return sub, type(cols)(*(c[:n][idx] for c in cols)), len(idx)


def plain(ev: Events) -> dict:
    """The events as plain values; ``tcp_rexmit`` left out: the resent-sequence table needs every
    data segment and sees only the candidates on a GPU (README, limitations)."""
    out = {}
    for f in dataclasses.fields(Events):
        if f.name == "tcp_rexmit":
            continue
        v = getattr(ev, f.name)
        out[f.name] = {k: a.tolist() for k, a in v.cols.items()} if isinstance(v, PacketArrays) else v
    return out


def both_ways(path, batch_size=2048) -> tuple[list, list, int, int]:
    """Events of the tap over whole batches and over candidates only; packets seen by each."""
    engine = FlowEngine(dataclasses.replace(FlowConfig(), batch_size=batch_size))
    whole, part = L7Tap(), L7Tap()
    got_whole, got_part, n_whole, n_part = [], [], 0, 0
    for b in Ingest([str(path)], batch_size).batches():
        engine.process(b)
        cols, n = engine.cols, b.n
        got_whole.append(plain(whole.process(b, cols, n)))
        sub, sub_cols, k = subset(b, cols, n)
        got_part.append(plain(part.process(sub, sub_cols, k)))
        n_whole, n_part = n_whole + n, n_part + k
    got_whole.append(plain(whole.flush()))
    got_part.append(plain(part.flush()))
    return got_whole, got_part, n_whole, n_part


def test_every_scenario_gives_the_same_events_from_fewer_packets(synth_dir):
    paths = sorted(synth_dir.glob("*.pcap"))
    assert len(paths) > 20
    seen = kept = 0
    kinds = set()
    for path in paths:
        whole, part, n, k = both_ways(path)
        assert whole == part, path.name
        kinds |= {name for ev in whole for name, v in ev.items() if v}
        seen, kept = seen + n, kept + k
    assert kept < seen // 2, (kept, seen)  # bulk transfers' later packets stay on the device
    assert {"dns", "dhcp", "tls", "ssh", "mining", "shell", "arp", "icmp"} <= kinds, kinds


def test_bulk_transfer_packets_are_left_out(tmp_path):
    """A long TCP transfer: its first packets and its odd ones, not its bulk."""
    from tests import flow_cases as fc

    path = tmp_path / "long.pcap"
    path.write_bytes(fc.long_flow(5000))
    whole, part, n, k = both_ways(path)
    assert whole == part and n == 5000 and k < 100


@pytest.mark.corpus
@pytest.mark.parametrize("path", corpus_files() or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"capture corpus not found at {CORPUS}"))], ids=lambda p: p.name if p else "absent")
def test_shared_captures_give_the_same_events(path):
    whole, part, _, _ = both_ways(path)
    assert whole == part


def test_many_arrays_come_back_in_one_copy_as_they_were():
    from kernels.host_copy import to_host

    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 255, 7).astype(np.uint8), rng.random((3, 5)), np.zeros(0, np.int64),
              rng.integers(-9, 9, 11).astype(np.int16), rng.random(4) > 0.5, np.arange(6, dtype=np.uint64)[::2]]
    got = to_host(np, arrays)
    assert [g.dtype for g in got] == [a.dtype for a in arrays] and [g.shape for g in got] == [a.shape for a in arrays]
    assert all(np.array_equal(g, a) for g, a in zip(got, arrays))
    assert all(g.ctypes.data % g.dtype.itemsize == 0 for g in got)  # aligned to each item size
    assert to_host(np, []) == []


@pytest.mark.cudasim
def test_gpu_engine_taps_and_builds_records_as_the_host_would(synth_dir):
    """Simulator: the GPU engine's candidates (signatures from the device kernel) give the tap's
    whole-batch events, and records finished on the device equal those finished on the host."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"):
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before Numba is imported (make test runs these)")
    from detector.backend import select_backend
    from detector.flows.gpu_engine import GpuFlowEngine
    from detector.flows.records import RecordBuilder
    from detector.flows.table import EmittedFlows
    from detector.pipeline.tap_input import host_columns, tap_input

    for name in ("access-remote-shell", "theft-stratum", "scan-ports", "mitm-arp-spoof"):
        cfg = dataclasses.replace(FlowConfig(), batch_size=512, local_nets=("10.0.0.0/8",))
        engine, builder = GpuFlowEngine(cfg, select_backend("gpu")), RecordBuilder(cfg)
        whole, part = L7Tap(), L7Tap()
        got_whole, got_part, emitted = [], [], []
        for b in Ingest([str(synth_dir / f"{name}.pcap")], 512).batches():
            emitted += engine.process(b)
            got_whole.append(plain(whole.process(b, host_columns(engine, b.n), b.n)))
            sub, cols = tap_input(engine, b)
            got_part.append(plain(part.process(sub, cols, sub.n)))
        records = 0
        for em in emitted + engine.finish():
            assert em.device is not None
            on_host = EmittedFlows(*(getattr(em, a) for a in EmittedFlows._ARRAYS))
            rb = builder.build(em)
            assert rb.equals(builder.build(on_host)), name
            records += rb.num_rows
        assert records > 0 and got_whole == got_part, name
