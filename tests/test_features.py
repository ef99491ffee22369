"""Feature math (kernels/features.py) through its NumPy path, against values worked out by hand
or by plain Python. The same functions run on CuPy on the GPU (tests/test_gpu.py)."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.features import flow_rates, host_window_features, interarrival_stats, name_features


def test_flow_rates_and_asymmetry():
    f = flow_rates(np, np.array([2.0, 0.0, 10.0]), np.array([1000, 50, 0]), np.array([0, 50, 4000]),
                   np.array([10, 1, 0]), np.array([0, 1, 8]))
    assert f["bytes_per_s"] == pytest.approx([500.0, 100 / 1e-3, 400.0])
    assert f["byte_asymmetry"] == pytest.approx([1.0, 0.0, -1.0])
    assert f["pkt_asymmetry"] == pytest.approx([1.0, 0.0, -1.0])
    assert f["mean_pkt_payload"] == pytest.approx([100.0, 50.0, 500.0])


def test_interarrival_stats_of_a_beacon_and_a_burst():
    beacon = [0.0, 60.0, 120.0, 180.0, 240.0]
    noisy = [0.0, 1.0, 2.0, 10.0, 50.0]
    group = np.array([0] * 5 + [1] * 5 + [2])
    ts = np.array(beacon + noisy + [7.0])
    s = interarrival_stats(np, group, ts)
    assert list(s["events"]) == [5, 5, 1] and list(s["gaps"]) == [4, 4, 0]
    assert s["mean"][0] == 60.0 and s["std"][0] == 0.0 and s["mad"][0] == 0.0 and s["bowley_skew"][0] == 0.0
    gaps = [1.0, 1.0, 8.0, 40.0]
    assert s["mean"][1] == pytest.approx(statistics.fmean(gaps))
    assert s["std"][1] == pytest.approx(statistics.pstdev(gaps))
    assert (s["min"][1], s["max"][1], s["median"][1]) == (1.0, 40.0, 1.0)  # lower nearest rank
    q1, q3 = 1.0, 8.0
    assert s["bowley_skew"][1] == pytest.approx((q3 + q1 - 2 * 1.0) / (q3 - q1))
    assert math.isnan(s["mean"][2]) and math.isnan(s["mad"][2])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0, 1e6, allow_nan=False)), min_size=1, max_size=60))
def test_interarrival_stats_match_plain_python(events):
    group = np.array([g for g, _ in events])
    ts = np.array([t for _, t in events])
    s = interarrival_stats(np, group, ts)
    for g in range(int(group.max()) + 1):
        times = sorted(t for gg, t in events if gg == g)
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert s["gaps"][g] == len(gaps)
        if gaps:
            assert s["mean"][g] == pytest.approx(statistics.fmean(gaps), rel=1e-9, abs=1e-6)
            srt = sorted(gaps)
            med = srt[(len(srt) - 1) // 2]
            assert s["median"][g] == med
            assert s["mad"][g] == sorted(abs(x - med) for x in gaps)[(len(gaps) - 1) // 2]


def test_host_window_features():
    host = np.array([1, 1, 1, 1, 2, 2, 1])
    window = np.array([0, 0, 0, 0, 0, 0, 1])
    dst = np.array([10, 10, 11, 12, 10, 10, 13])
    dport = np.array([22, 22, 80, 443, 53, 53, 22])
    out = np.array([100, 100, 100, 100, 5, 5, 9])
    inb = np.array([1, 1, 1, 1, 1, 1, 1])
    f = host_window_features(np, host, window, dst, dport, out, inb)
    rows = {(int(h), int(w)): k for k, (h, w) in enumerate(zip(f["keys_host"], f["keys_window"]))}
    k = rows[(1, 0)]
    assert f["flows"][k] == 4 and f["distinct_dsts"][k] == 3 and f["distinct_ports"][k] == 3
    assert f["dst_entropy"][k] == pytest.approx(-(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25)))
    assert f["bytes_out"][k] == 400 and f["bytes_in"][k] == 4
    k = rows[(2, 0)]
    assert f["distinct_dsts"][k] == 1 and f["dst_entropy"][k] == 0.0 and f["port_entropy"][k] == 0.0
    assert f["flows"][rows[(1, 1)]] == 1


def entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9]{1,20}){0,4}", fullmatch=True), min_size=1, max_size=20))
def test_name_features_match_plain_python(names):
    raw = [n.encode() for n in names]
    offsets = np.cumsum([0] + [len(r) for r in raw])
    data = np.frombuffer(b"".join(raw), dtype=np.uint8)
    f = name_features(np, data, offsets)
    for k, name in enumerate(names):
        assert f["length"][k] == len(name)
        assert f["entropy"][k] == pytest.approx(entropy(name), abs=1e-9)
        assert f["labels"][k] == name.count(".") + 1
        assert f["longest_label"][k] == max(len(part) for part in name.split("."))
        assert f["digit_share"][k] == pytest.approx(sum(c.isdigit() for c in name) / len(name))
