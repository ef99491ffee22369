"""icmp_tunnel as a bounded, mergeable reducer: payloads judged as byte-matrix rows the way
the per-payload rules say; any split of the echo messages, merged in any order, gives the
one-pass alerts; the pair cap keeps the channel and counts what it drops."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.detect.icmp_tunnel import SHORT, WINDOWS, IcmpTunnel, longest_text, os_like_rows
from detector.l7.events import Events, PacketArrays
from tests.merge_splits import split_and_merge

T = 1_700_000_000 * 10**9


def reference_os_like(payload: bytes, size: int) -> bool:
    """The rules one payload at a time (nDPI / Sayadi et al. patterns)."""
    if size <= SHORT or not payload:
        return True
    if payload == (WINDOWS * 4)[:len(payload)] or len(set(payload)) <= 1:
        return True
    return any(len(payload) - skip >= 8 and payload[skip:] == bytes(
        (payload[skip] + k) & 0xFF for k in range(len(payload) - skip)) for skip in (8, 16))


def reference_longest_text(payload: bytes) -> int:
    best = run = 0
    for c in payload:
        run = run + 1 if 32 <= c < 127 else 0
        best = max(best, run)
    return best


def payloads(seed: int, n: int) -> list[bytes]:
    """Ping payloads of every kind: Unix (timestamp and incrementing bytes), Windows, one
    repeated byte, text, and random bytes, of many sizes."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        size = rng.choice([0, 1, 8, 16, 17, 24, 32, 48, 56])
        kind = rng.randrange(6)
        if kind == 0:
            body = bytes(8) + bytes((0x10 + i) & 0xFF for i in range(max(0, size - 8)))
        elif kind == 1:
            body = (WINDOWS * 2)[:size]
        elif kind == 2:
            body = bytes([rng.randrange(256)]) * size
        elif kind == 3:
            body = bytes(rng.choice(b"exfil data ") for _ in range(size))
        elif kind == 4:
            body = bytes(16) + bytes((rng.randrange(256) + i) & 0xFF for i in range(max(0, size - 16)))
        else:
            body = bytes(rng.randrange(256) for _ in range(size))
        out.append(body)
    return out


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 60), st.sampled_from([24, 56, 64]))
def test_payload_rows_are_judged_as_each_payload_alone(seed, n, width):
    bodies = payloads(seed, n)
    mat = np.zeros((n, width), np.uint8)
    lengths = np.array([min(len(b), width) for b in bodies])
    for i, b in enumerate(bodies):
        mat[i, :lengths[i]] = np.frombuffer(b[:width], np.uint8)
    sizes = np.array([len(b) for b in bodies])
    got = os_like_rows(mat, lengths, sizes)
    assert got.tolist() == [reference_os_like(b[:width], len(b)) for b in bodies]
    assert longest_text(mat, lengths).tolist() == [reference_longest_text(b[:width]) for b in bodies]


def echoes(seed: int, n: int) -> list[tuple]:
    """Echo requests and replies among a few IPv4 and IPv6 hosts, with payloads of every kind."""
    rng = random.Random(seed)
    hosts = ["10.0.0.1", "10.0.0.2", "198.51.100.1", "fe80::1", "fe80::2"]
    out = []
    for k, body in enumerate(payloads(seed, n)):
        a, b = rng.sample(hosts[3:] if rng.random() < 0.3 else hosts[:3], 2)
        v6 = ":" in a
        kind = rng.choice([128, 129] if v6 else [8, 0])
        out.append((T + k * 10**7, a, b, v6, kind, body, f"C{k}"))
    return out


def events(rows: list[tuple], width: int = 64) -> Events:
    head = np.zeros((len(rows), width), np.uint8)
    for i, r in enumerate(rows):
        b = r[5][:width - 8]
        head[i, 8:8 + len(b)] = np.frombuffer(b, np.uint8)
    col = {name: [r[k] for r in rows] for k, name in enumerate(("ts", "src", "dst", "v6", "type", "body", "uid"))}
    return Events(icmp=PacketArrays({
        "ts": np.array(col["ts"], np.int64), "src": np.array(col["src"], dtype=object),
        "dst": np.array(col["dst"], dtype=object), "v6": np.array(col["v6"]), "type": np.array(col["type"], np.uint8),
        "code": np.zeros(len(rows), np.uint8), "payload_len": np.array([len(b) for b in col["body"]], np.uint32),
        "ttl": np.zeros(len(rows), np.uint8), "eth_src": np.zeros(len(rows), np.uint64), "head": head,
        "uid": np.array(col["uid"], dtype=object)}))


def lenient() -> IcmpTunnel:
    return IcmpTunnel(IcmpTunnel.Params(odd_min=3, high_bytes=1000))


def alerts(det: IcmpTunnel) -> list[str]:
    return sorted(str(a.to_dict()) for a in det.finish())


def test_random_echoes_give_alerts_to_compare():
    """(What the property test below compares is not empty.)"""
    det = lenient()
    det.observe_events(events(echoes(1, 300)))
    assert {a.severity for a in det.finish()} == {"medium", "high"}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(10, 300), st.lists(st.floats(0, 1), max_size=5), st.integers(0, 5))
def test_any_split_and_merge_order_gives_the_one_pass_alerts(seed, n, cuts, order):
    rows = echoes(seed, n)
    one = lenient()
    one.observe_events(events(rows))
    expected = alerts(one)
    first = split_and_merge(lenient, lambda d, b: d.observe_events(events(b)),
                            rows, cuts, order, seed)
    assert alerts(first) == expected


def test_a_text_channel_is_kept_when_one_off_pings_overflow_the_pairs_and_is_named_by_its_first_text():
    det = IcmpTunnel(IcmpTunnel.Params(max_pairs=20))
    channel = [(T + k * 10**9, "10.0.0.5", "198.51.100.9", False, 8, b"secret row %04d of the table" % k, f"C{k}")
               for k in range(12)]
    pings = [(T + k * 10**6, f"10.0.{k // 250}.{k % 250}", "10.0.9.9", False, 8, bytes(56), f"P{k}")
             for k in range(500)]
    rows = pings[:250] + channel + pings[250:]
    for a in range(0, len(rows), 50):
        det.observe_events(events(rows[a:a + 50]))
    (a,) = det.finish()
    assert (a.src_ip, a.dst_ip, a.evidence["text_payloads"]) == ("10.0.0.5", "198.51.100.9", 12)
    assert a.evidence["example"] == "secret row 0000 of the table" and a.evidence["uid"] == "C0"
    assert a.evidence["payload_sizes"] == [28]
    assert det.evictions >= 500 - 20
