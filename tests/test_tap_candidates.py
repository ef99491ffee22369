"""The L7 tap run on only the packets :func:`detector.l7.tap.candidates` keeps (what a GPU copies
back) finds exactly what it finds on whole batches: every scenario, every shared capture."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detector.config import FlowConfig
from detector.flows.engine import FlowEngine
from detector.l7.events import Events, PacketArrays
from detector.l7.tap import L7Tap, candidates
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
    out = {}
    for f in dataclasses.fields(Events):
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
