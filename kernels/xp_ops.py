"""Segmented reductions written once for NumPy and CuPy (``xp``).

Segments are given by integer ids ``0..n-1`` (not necessarily sorted). Sums and counts use
``bincount``; minima and maxima use ``ufunc.at`` on NumPy and a sort by (segment, value) on CuPy.
"""

from __future__ import annotations


def is_cupy(xp) -> bool:
    return xp.__name__.startswith("cupy")


def lexsort(xp, keys):
    """``numpy.lexsort(keys)`` (the last key is the primary one) for NumPy and CuPy.

    ``cupy.lexsort`` takes one 2-D array, so mixed key types (a float time under a uint64
    hash) would be cast to one dtype and lose precision; on CuPy this sorts once per key
    instead, least significant first, each sort stable (CuPy's sorts always are).
    """
    if not is_cupy(xp):
        return xp.lexsort(tuple(keys))
    keys = list(keys)
    if not keys:
        raise ValueError("lexsort needs at least one key")
    order = xp.argsort(keys[0], kind="stable")
    for k in keys[1:]:
        order = order[xp.argsort(k[order], kind="stable")]
    return order


def segment_count(xp, ids, n: int):
    return xp.bincount(ids, minlength=n)


def segment_sum(xp, ids, values, n: int):
    return xp.bincount(ids, weights=values.astype(xp.float64), minlength=n)


def segment_max(xp, ids, values, n: int, empty=0.0):
    out = xp.full(n, -xp.inf, dtype=xp.float64)
    if is_cupy(xp):
        _segment_extreme_by_sort(xp, ids, values, out, last=True)
    else:
        xp.maximum.at(out, ids, values.astype(xp.float64))
    return xp.where(xp.isinf(out), empty, out)


def segment_min(xp, ids, values, n: int, empty=0.0):
    out = xp.full(n, xp.inf, dtype=xp.float64)
    if is_cupy(xp):
        _segment_extreme_by_sort(xp, ids, values, out, last=False)
    else:
        xp.minimum.at(out, ids, values.astype(xp.float64))
    return xp.where(xp.isinf(out), empty, out)


def _segment_extreme_by_sort(xp, ids, values, out, last: bool) -> None:
    """Each segment's smallest (or largest) value written into ``out``, exactly.

    ``cupyx.scatter_min``/``scatter_max`` on float64 came back rounded to float32 precision on
    an H200 (CuPy 14.2), so on CuPy the extremes come from one sort by (segment, value) instead.
    """
    v = values.astype(xp.float64)
    if v.shape[0] == 0:
        return
    order = lexsort(xp, (v, ids))
    ids_s, v_s = ids[order], v[order]
    change = ids_s[1:] != ids_s[:-1]
    edge = xp.ones(1, dtype=bool)
    pick = xp.concatenate((change, edge)) if last else xp.concatenate((edge, change))
    out[ids_s[pick]] = v_s[pick]
    out[ids[xp.isnan(v)]] = xp.nan  # as ufunc.at: a NaN in a segment makes its extreme NaN


def group_ids(xp, *keys):
    """Dense ids for the distinct combinations of the key arrays: ``(ids, first_row_of_each)``."""
    order = lexsort(xp, tuple(reversed(keys)))
    n = order.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=xp.int64), order
    change = group_starts(xp, [k[order] for k in keys])
    dense_sorted = xp.cumsum(change) - 1
    ids = xp.empty(n, dtype=xp.int64)
    ids[order] = dense_sorted
    return ids, order[change]


_M2, _M3 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def mix64(xp, x):
    """splitmix64's finaliser (:func:`kernels.flowkey.mix64`) over a ``uint64`` array, as array
    operations (no kernel: callable where Numba is not loaded)."""
    x = x ^ (x >> xp.uint64(30))
    x = x * xp.uint64(_M2)
    x = x ^ (x >> xp.uint64(27))
    x = x * xp.uint64(_M3)
    return x ^ (x >> xp.uint64(31))


def group_starts(xp, keys):
    """For rows sorted by ``keys`` (a list of columns): True where a new combination of key
    values starts."""
    n = len(keys[0])
    starts = xp.zeros(n, bool)
    if n:
        starts[0] = True
        for k in keys:
            starts[1:] |= k[1:] != k[:-1]
    return starts


def bottom_k(xp, group, values, n_groups: int, k: int):
    """Each group's ``k`` smallest distinct nonzero ``values`` (0 marks none), as rows of an
    ``(n_groups, k)`` matrix padded with zeros: a bottom-k sample per group, the same whatever
    order the rows come in."""
    nz = values != 0
    group, values = group[nz], values[nz]
    order = lexsort(xp, (values, group))
    group, values = group[order], values[order]
    once = group_starts(xp, [group, values])
    group, values = group[once], values[once]
    rank = xp.arange(len(group)) - xp.searchsorted(group, group)
    out = xp.zeros((n_groups, k), values.dtype)
    kept = rank < k
    out[group[kept], rank[kept]] = values[kept]
    return out


def distinct(xp, x):
    """The sorted distinct values of a 1-D array. NumPy 2's ``unique`` without ``return_*``
    takes a hash-table path that measures 5-8x slower than one sort on integer columns of
    300k values (2.4, 2-core EPYC): this sorts."""
    s = xp.sort(x)
    if len(s) < 2:
        return s
    keep = xp.ones(len(s), bool)
    keep[1:] = s[1:] != s[:-1]
    return s[keep]


def in_sorted(xp, x, values):
    """Whether each of ``x`` is in ``values`` (sorted, distinct): a binary search per value,
    where ``isin`` would sort both sides."""
    if not len(values):
        return xp.zeros(len(x), bool)
    if len(values) < 1 << 16 or len(x) < 1 << 10:
        pos = xp.minimum(xp.searchsorted(values, x), len(values) - 1)
        return values[pos] == x
    # queries in order walk ``values`` front to back: about 3x faster than random probes
    # into millions of values (cache misses), even with the sort
    order = xp.argsort(x)
    xs = x[order]
    pos = xp.minimum(xp.searchsorted(values, xs), len(values) - 1)
    out = xp.empty(len(x), bool)
    out[order] = values[pos] == xs
    return out
