"""The segmented scans of the data-parallel flow engine (kernels.seg_scan) against plain loops,
on random segmentations: both the doubling scans and the index scans (prefix count, scatter)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import seg_scan as ss


def loop_scan(values, heads, fn):
    out, acc = [], None
    for v, h in zip(values, heads):
        acc = v if h or acc is None else fn(acc, v)
        out.append(acc)
    return out


def loop_last(valid, heads):
    out, last = [], -1
    for i, (v, h) in enumerate(zip(valid, heads)):
        if h:
            last = -1
        if v:
            last = i
        out.append(last)
    return out


segmentations = st.integers(0, 300).flatmap(lambda n: st.tuples(
    st.lists(st.booleans(), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n),
    st.lists(st.integers(-2**40, 2**40), min_size=n, max_size=n)))


@settings(max_examples=150, deadline=None)
@given(segmentations)
def test_scans_equal_loops(case):
    heads, valid, values = case
    if heads:
        heads[0] = True
    h, ok, v = np.array(heads, bool), np.array(valid, bool), np.array(values, np.int64)
    assert ss.scan(np, v, h, "max").tolist() == loop_scan(values, heads, max)
    assert ss.scan(np, v, h, "min").tolist() == loop_scan(values, heads, min)
    assert ss.scan(np, v & 0xFF, h, "or").tolist() == loop_scan([x & 0xFF for x in values], heads, lambda a, b: a | b)
    assert ss.last_index(np, ok, h).tolist() == loop_last(valid, heads)
    starts = ss.start_index(np, h)
    assert starts.tolist() == loop_last(heads, [False] * len(heads))
    assert ss.cumsum(np, v, starts).tolist() == loop_scan(values, heads, lambda a, b: a + b)


def test_index_scans_before_any_head_and_on_nothing():
    valid = np.array([True, False, True, False])
    assert ss.last_index(np, valid, np.zeros(4, bool)).tolist() == [0, 0, 2, 2]
    assert ss.start_index(np, np.array([False, False, True, False])).tolist() == [0, 0, 2, 2]
    assert ss.last_index(np, np.zeros(0, bool), np.zeros(0, bool)).tolist() == []
