"""Small kernels checked against Python's own implementations."""

from __future__ import annotations

import base64
import hashlib
import ipaddress

import communityid
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.flow_records import CID_LEN, community_id
from kernels.sha1 import sha1_short
from kernels.textfmt import write_base64, write_ip


def words(addr: str) -> tuple[np.uint64, np.uint64]:
    ip = ipaddress.ip_address(addr)
    v = int(ip) if ip.version == 6 else (0xFFFF << 32) | int(ip)
    return np.uint64(v >> 64), np.uint64(v & (2**64 - 1))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=55))
def test_sha1_matches_hashlib(msg):
    out = np.zeros(20, np.uint8)
    sha1_short(np.frombuffer(msg, np.uint8) if msg else np.zeros(0, np.uint8), len(msg), np.zeros(80, np.int64),
               out, 0)
    assert out.tobytes() == hashlib.sha1(msg).digest()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_base64_matches_stdlib(data):
    dst = np.zeros(64, np.uint8)
    end = write_base64(dst, 0, np.frombuffer(data, np.uint8) if data else np.zeros(0, np.uint8), 0, len(data))
    assert dst[:end].tobytes() == base64.b64encode(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_address_text_matches_ipaddress(ip):
    hi, lo = words(str(ip))
    dst = np.zeros(64, np.uint8)
    end = write_ip(dst, 0, hi, lo)
    text = dst[:end].tobytes().decode()
    if ip.version == 6 and ip.ipv4_mapped is not None:
        assert text == str(ip.ipv4_mapped)  # shown as IPv4, as the decoder stores IPv4
    else:
        assert text == str(ip)


def cid(o, r, op, rp, proto):
    o_hi, o_lo = words(o)
    r_hi, r_lo = words(r)
    dst = np.zeros(CID_LEN, np.uint8)
    community_id(o_hi, o_lo, r_hi, r_lo, op, rp, proto, 0, np.zeros(64, np.uint8), np.zeros(80, np.int64),
                 np.zeros(20, np.uint8), dst, 0)
    return dst.tobytes().decode()


REF = communityid.CommunityID()
CASES = [
    (("10.0.0.1", "10.0.0.2", 1234, 80, 6), communityid.FlowTuple.make_tcp("10.0.0.1", "10.0.0.2", 1234, 80)),
    (("10.0.0.2", "10.0.0.1", 80, 1234, 6), communityid.FlowTuple.make_tcp("10.0.0.2", "10.0.0.1", 80, 1234)),
    (("10.0.0.1", "10.0.0.1", 9000, 80, 17), communityid.FlowTuple.make_udp("10.0.0.1", "10.0.0.1", 9000, 80)),
    (("2001:db8::1", "2001:db8::2", 5000, 53, 17), communityid.FlowTuple.make_udp("2001:db8::1", "2001:db8::2",
                                                                                   5000, 53)),
    (("10.0.0.1", "10.0.0.2", 4000, 4001, 132), communityid.FlowTuple.make_sctp("10.0.0.1", "10.0.0.2", 4000, 4001)),
    (("10.0.0.9", "10.0.0.2", 8, 0, 1), communityid.FlowTuple.make_icmp("10.0.0.9", "10.0.0.2", 8, 0)),
    (("10.0.0.2", "10.0.0.9", 0, 8, 1), communityid.FlowTuple.make_icmp("10.0.0.2", "10.0.0.9", 0, 0)),
    (("10.0.0.9", "10.0.0.2", 3, 1, 1), communityid.FlowTuple.make_icmp("10.0.0.9", "10.0.0.2", 3, 1)),
    (("10.0.0.9", "10.0.0.2", 9, 10, 1), communityid.FlowTuple.make_icmp("10.0.0.9", "10.0.0.2", 9, 0)),
    (("fe80::1", "ff02::1", 128, 129, 58), communityid.FlowTuple.make_icmp6("fe80::1", "ff02::1", 128, 0)),
    (("fe80::1", "ff02::1", 135, 136, 58), communityid.FlowTuple.make_icmp6("fe80::1", "ff02::1", 135, 0)),
    (("fe80::1", "ff02::1", 1, 4, 58), communityid.FlowTuple.make_icmp6("fe80::1", "ff02::1", 1, 4)),
    (("10.0.0.1", "10.0.0.2", 0, 0, 47), communityid.FlowTuple(47, "10.0.0.1", "10.0.0.2")),
]


@pytest.mark.parametrize("ours, theirs", CASES)
def test_community_id_matches_reference(ours, theirs):
    assert cid(*ours) == REF.calc(theirs)


@pytest.mark.parametrize("nshards", [2, 3, 16])
def test_each_shard_collects_its_rows_in_capture_order_and_every_row_has_one_shard(nshards):
    from kernels.flowtable import packet_shard, rows_of_shard

    rng = np.random.default_rng(nshards)
    h = rng.integers(0, 2**64 - 1, size=1000, dtype=np.uint64, endpoint=True)
    h[:3] = [0, 2**64 - 1, 2**63]  # the ends of the hash range, and non-flow packets' 0
    n = 900  # rows past n are not looked at
    shard = ((h[:n] >> np.uint64(40)).astype(object) * nshards) >> 24  # exact, in Python integers
    assert all(packet_shard(x, nshards) == s for x, s in zip(h[:n], shard))
    seen = []
    for k in range(nshards):
        rows = np.full(1000, -1, dtype=np.int64)
        m = rows_of_shard(h, n, nshards, k, rows)
        assert list(rows[:m]) == [i for i in range(n) if shard[i] == k]  # every row of shard k, in order
        assert 0 < m < n
        seen += list(rows[:m])
    assert sorted(seen) == list(range(n))


def test_a_failing_flow_thread_task_waits_for_the_others():
    import time

    from detector.config import FlowConfig
    from detector.flows.engine import FlowEngine

    engine = FlowEngine(FlowConfig(threads=3, max_flows=64))
    done = []

    def task(k):
        if k == 0:
            raise RuntimeError("shard 0 failed")
        time.sleep(0.2)
        done.append(k)

    with pytest.raises(RuntimeError):
        engine._run_parallel(task, [(0,), (1,), (2,)])
    assert sorted(done) == [1, 2]  # the other shards' tasks had ended before the error reached the caller
    engine.finish()


def _two_thread_engine_and_batch(tmp_path):
    from detector.config import FlowConfig
    from detector.flows.engine import FlowEngine
    from detector.sources import open_capture
    from detector.synth.encode import encode
    from detector.synth.scenarios import hpc_mix

    sc = hpc_mix(packets=300, seed=2)
    path = tmp_path / "m.pcap"
    path.write_bytes(encode(sc.packets, sc.pool))
    batch = next(open_capture(str(path), 256).batches())
    engine = FlowEngine(FlowConfig(threads=2, max_flows=4096, batch_size=256))
    assert engine.pipelined
    return engine, batch


def _packets_in_flows(emitted) -> int:
    from kernels import flowstate as fsd

    return sum(int(em.st[:, fsd.ORIG + fsd.D_PKTS].sum() + em.st[:, fsd.RESP + fsd.D_PKTS].sum()) for em in emitted)


def test_a_ctrl_c_while_two_threads_account_waits_for_the_accounting(tmp_path, monkeypatch):
    """Two threads: a Ctrl-C while the caller waits for the accounting thread reaches the
    caller only once that accounting ended (finish() then flushes the same table)."""
    import time

    import detector.flows.engine as engine_mod

    engine, batch = _two_thread_engine_and_batch(tmp_path)
    shard = engine.shards[0]
    real, running, accounted = shard.follow, [], []

    def slow(*args, **kw):
        running.append(1)
        time.sleep(0.3)  # still accounting when the Ctrl-C comes
        accounted.append(real(*args, **kw))
        running.pop()
        return accounted[-1]

    real_wait, calls = engine_mod.wait, []

    def ctrl_c_in_first_wait_for_the_worker(futures, *args, **kw):  # a Ctrl-C, without signals or timing
        if len(futures) > 1 and not calls:  # the worker's future, and the pool's own marker
            calls.append(1)
            raise KeyboardInterrupt
        return real_wait(futures, *args, **kw)

    shard.follow = slow
    monkeypatch.setattr(engine_mod, "wait", ctrl_c_in_first_wait_for_the_worker)
    with pytest.raises(KeyboardInterrupt):
        engine.process(batch)
    assert accounted == [batch.n] and not running
    assert engine.counts.records == batch.n  # counted once accounted, so flows and counts agree
    assert _packets_in_flows(engine.finish()) == engine.counts.ip


def test_a_ctrl_c_while_decoding_stops_the_accounting_thread_and_counts_what_it_accounted(tmp_path, monkeypatch):
    """Two threads: the decoding thread is interrupted half-way through a batch. The accounting
    thread, waiting for rows that will not come, is told to stop; the caller gets the Ctrl-C
    once it stopped, and the counts are those of the rows it accounted (however far it got)."""
    from kernels import handoff as hk

    engine, batch = _two_thread_engine_and_batch(tmp_path)
    real = hk.decode_publishing

    def half_then_ctrl_c(buf, off, caplen, wirelen, ts_ns, link, start, stop, *rest):
        real(buf, off, caplen, wirelen, ts_ns, link, start, stop // 2, *rest)
        raise KeyboardInterrupt

    monkeypatch.setattr(hk, "decode_publishing", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        engine.process(batch)
    assert engine.progress[hk.STOP] == 1
    c = engine.counts
    assert c.records <= batch.n // 2 and int(c.by_status.sum()) == c.records
    assert _packets_in_flows(engine.finish()) == c.ip  # every counted IP packet is in a flow, and only those


def test_a_ctrl_c_inside_submit_leaves_no_accounting_thread_waiting(tmp_path):
    """Two threads: a Ctrl-C that lands in submit(), after the accounting task was queued but
    before the caller holds its future. Nothing is published, yet the task may not wait for
    rows forever: the caller asks it to stop and waits for the pool, so process() raises and
    finish() returns (both run in a thread here, so that a hang fails instead of stalling)."""
    import threading

    engine, batch = _two_thread_engine_and_batch(tmp_path)
    real_submit = engine._pool.submit

    def submit_then_ctrl_c(fn, *args, **kw):
        future = real_submit(fn, *args, **kw)
        if fn is int:  # the pool's marker, submitted while waiting
            return future
        raise KeyboardInterrupt

    engine._pool.submit = submit_then_ctrl_c
    outcome = []

    def run():
        try:
            engine.process(batch)
        except KeyboardInterrupt:
            outcome.append("interrupted")
        engine._pool.submit = real_submit
        outcome.append(_packets_in_flows(engine.finish()))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)  # a guard against hanging the suite, not a timing
    assert outcome == ["interrupted", 0] and engine.counts.records == 0
