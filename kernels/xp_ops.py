"""Segmented reductions written once for NumPy and CuPy (``xp``).

Segments are given by integer ids ``0..n-1`` (not necessarily sorted). Sums and counts use
``bincount``; minima and maxima use ``ufunc.at`` on NumPy and the scatter kernels of CuPy.
"""

from __future__ import annotations


def is_cupy(xp) -> bool:
    return xp.__name__.startswith("cupy")


def segment_count(xp, ids, n: int):
    return xp.bincount(ids, minlength=n)


def segment_sum(xp, ids, values, n: int):
    return xp.bincount(ids, weights=values.astype(xp.float64), minlength=n)


def segment_max(xp, ids, values, n: int, empty=0.0):
    out = xp.full(n, -xp.inf, dtype=xp.float64)
    if is_cupy(xp):
        import cupyx

        cupyx.scatter_max(out, ids, values.astype(xp.float64))
    else:
        xp.maximum.at(out, ids, values.astype(xp.float64))
    return xp.where(xp.isinf(out), empty, out)


def segment_min(xp, ids, values, n: int, empty=0.0):
    out = xp.full(n, xp.inf, dtype=xp.float64)
    if is_cupy(xp):
        import cupyx

        cupyx.scatter_min(out, ids, values.astype(xp.float64))
    else:
        xp.minimum.at(out, ids, values.astype(xp.float64))
    return xp.where(xp.isinf(out), empty, out)


def group_ids(xp, *keys):
    """Dense ids for the distinct combinations of the key arrays: ``(ids, first_row_of_each)``."""
    order = xp.lexsort(tuple(reversed(keys)))
    n = order.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=xp.int64), order
    change = xp.zeros(n, dtype=bool)
    change[0] = True
    for k in keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    dense_sorted = xp.cumsum(change) - 1
    ids = xp.empty(n, dtype=xp.int64)
    ids[order] = dense_sorted
    return ids, order[change]
