"""The NumPy/CuPy helpers: the CuPy branch, run here over NumPy under a module named like
CuPy, gives NumPy's answers."""

from __future__ import annotations

import types

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.xp_ops import bottom_k, in_sorted, is_cupy, lexsort, segment_max, segment_min


def cupy_like() -> types.ModuleType:
    """NumPy under a name that sends the helpers down their CuPy branch."""
    mod = types.ModuleType("cupy_like")
    mod.__getattr__ = lambda name: getattr(np, name)
    return mod


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 400), st.integers(0, 2**32 - 1))
def test_lexsort_on_the_cupy_branch_equals_numpy(n, seed):
    rng = np.random.default_rng(seed)
    # few distinct values per key, so that ties reach the later keys; a uint64 hash above 2**53
    # and a float time, which one 2-D array of a single dtype could not hold exactly
    hashes = (np.uint64(2**63) + rng.integers(0, 3, n).astype(np.uint64) * np.uint64(1)).astype(np.uint64)
    times = rng.integers(0, 4, n) * 0.5
    small = rng.integers(-2, 2, n)
    xp = cupy_like()
    assert is_cupy(xp)
    keys = (small, times, hashes)
    np.testing.assert_array_equal(lexsort(xp, keys), np.lexsort(keys))


def test_lexsort_keeps_uint64_keys_that_float64_would_merge():
    a = np.array([2**63 + 1, 2**63, 2**63 + 1, 2**63], dtype=np.uint64)  # equal once cast to float64
    b = np.array([0, 1, 1, 0])
    got = lexsort(cupy_like(), (b, a))
    np.testing.assert_array_equal(got, [3, 1, 0, 2])
    np.testing.assert_array_equal(got, np.lexsort((b, a)))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_segment_extremes_on_the_cupy_branch_equal_numpy(n, groups, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, groups, n)
    values = rng.normal(0, 1e6, n) + rng.integers(0, 3, n)  # full float64 precision matters
    values[rng.random(n) < 0.02] = np.nan  # a NaN makes its segment's extreme NaN, as ufunc.at does
    with np.errstate(invalid="ignore"):  # ufunc.at warns when it compares NaNs
        for fn in (segment_min, segment_max):
            np.testing.assert_array_equal(fn(cupy_like(), ids, values, groups + 2, empty=-1.0),
                                          fn(np, ids, values, groups + 2, empty=-1.0), err_msg=fn.__name__)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([(50, 30), (70_000, 3_000)]), st.integers(0, 2**32 - 1))
def test_in_sorted_is_isin_with_few_and_with_many_values(sizes, seed):
    """Both ways of probing (a search per query; queries sorted first when the values are many)."""
    n_values, n_queries = sizes
    rng = np.random.default_rng(seed)
    values = np.unique(rng.integers(0, 2**64 - 1, n_values, dtype=np.uint64))
    x = np.concatenate([rng.choice(values, n_queries // 2), rng.integers(0, 2**64 - 1, n_queries // 2, dtype=np.uint64)])
    rng.shuffle(x)
    assert (in_sorted(np, x, values) == np.isin(x, values)).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), max_size=80), st.integers(1, 5))
def test_bottom_k_keeps_each_groups_distinct_smallest_nonzero_values(rows, k):
    group = np.array([g for g, _ in rows], np.int64)
    values = np.array([v for _, v in rows], np.uint64)
    got = bottom_k(np, group, values, 6, k)
    for g in range(6):
        want = sorted({v for h, v in rows if h == g and v})[:k]
        assert got[g].tolist() == want + [0] * (k - len(want))
