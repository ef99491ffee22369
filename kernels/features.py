"""Feature math for detectors and models, written once against an array namespace ``xp``
(NumPy on the CPU, CuPy on the GPU). Every function takes and returns arrays of ``xp``.

- per flow: rates and byte/packet asymmetry (RITA's producer-consumer ratio);
- per group of events (e.g. one client-server pair): inter-arrival statistics, including the
  median absolute deviation and Bowley's quartile skewness that RITA's beacon score uses;
- per host and time window: flows, distinct destinations and ports and the entropy of their
  distributions, bytes out and in;
- per DNS name: length, character entropy, labels, longest label, digit share.

Quantiles use the lower nearest rank (``sorted[floor(p * (n - 1))]``) so that NumPy and CuPy
give identical values.
"""

from __future__ import annotations

from kernels.xp_ops import group_ids, lexsort, segment_count, segment_max, segment_min, segment_sum

MIN_DURATION_S = 1e-3  # rates of shorter (or single-packet) flows are taken over this span


def flow_rates(xp, duration, orig_bytes, resp_bytes, orig_pkts, resp_pkts) -> dict:
    dur = xp.maximum(xp.nan_to_num(duration.astype(xp.float64), nan=0.0), MIN_DURATION_S)
    ob, rb = orig_bytes.astype(xp.float64), resp_bytes.astype(xp.float64)
    op, rp = orig_pkts.astype(xp.float64), resp_pkts.astype(xp.float64)
    tb, tp = ob + rb, op + rp
    return {
        "bytes_per_s": tb / dur,
        "pkts_per_s": tp / dur,
        "orig_bytes_per_s": ob / dur,
        "resp_bytes_per_s": rb / dur,
        # +1: the originator only sends (an upload); -1: it only receives
        "byte_asymmetry": xp.where(tb > 0, (ob - rb) / xp.maximum(tb, 1.0), 0.0),
        "pkt_asymmetry": xp.where(tp > 0, (op - rp) / xp.maximum(tp, 1.0), 0.0),
        "mean_pkt_payload": tb / xp.maximum(tp, 1.0),
    }


def _quantile_sorted(xp, values_sorted, starts, counts, p: float):
    """Lower nearest-rank quantile of each segment of an already segment-sorted array."""
    if values_sorted.shape[0] == 0:
        return xp.full(counts.shape[0], xp.nan)
    idx = starts + xp.floor(p * xp.maximum(counts - 1, 0)).astype(xp.int64)
    out = values_sorted[xp.minimum(idx, values_sorted.shape[0] - 1)]
    return xp.where(counts > 0, out, xp.nan)


def interarrival_stats(xp, group, ts_s) -> dict:
    """Statistics of the gaps between consecutive events of each group.

    ``group``: integer ids ``0..G-1``; ``ts_s``: event times in seconds. Returns arrays of
    length G: ``events``, ``gaps``, ``mean``, ``std``, ``min``, ``max``, ``median``, ``mad``
    (median absolute deviation from the median), ``bowley_skew`` (quartile skewness; 0 for
    perfectly regular gaps) and ``cv`` (std / mean). Groups with fewer than two events get NaN.
    """
    ts_s = ts_s.astype(xp.float64)
    n_groups = int(group.max()) + 1 if group.shape[0] else 0
    order = lexsort(xp, (ts_s, group))
    g, t = group[order], ts_s[order]
    same = g[1:] == g[:-1]
    gap = (t[1:] - t[:-1])[same]
    gg = g[1:][same]
    events = segment_count(xp, group, n_groups)
    n = segment_count(xp, gg, n_groups)
    has = n > 0
    mean = segment_sum(xp, gg, gap, n_groups) / xp.maximum(n, 1)
    # two passes: a sum of squares minus the squared mean cancels for regular gaps (beacons)
    dev_mean = gap - mean[gg]
    var = segment_sum(xp, gg, dev_mean * dev_mean, n_groups) / xp.maximum(n, 1)
    o2 = lexsort(xp, (gap, gg))
    gap_sorted = gap[o2]
    starts = xp.cumsum(n) - n
    median = _quantile_sorted(xp, gap_sorted, starts, n, 0.5)
    q1 = _quantile_sorted(xp, gap_sorted, starts, n, 0.25)
    q3 = _quantile_sorted(xp, gap_sorted, starts, n, 0.75)
    dev = xp.abs(gap - median[gg])
    o3 = lexsort(xp, (dev, gg))
    mad = _quantile_sorted(xp, dev[o3], starts, n, 0.5)
    spread = q3 - q1
    bowley = xp.where(spread > 0, (q3 + q1 - 2 * median) / xp.where(spread > 0, spread, 1.0), 0.0)
    nan = xp.nan
    std = xp.sqrt(var)
    return {
        "events": events,
        "gaps": n,
        "mean": xp.where(has, mean, nan),
        "std": xp.where(has, std, nan),
        "min": xp.where(has, segment_min(xp, gg, gap, n_groups), nan),
        "max": xp.where(has, segment_max(xp, gg, gap, n_groups), nan),
        "median": xp.where(has, median, nan),
        "mad": xp.where(has, mad, nan),
        "bowley_skew": xp.where(has, bowley, nan),
        "cv": xp.where(has & (mean > 0), std / xp.where(mean > 0, mean, 1.0), nan),
    }


def _entropy_of_counts(xp, owner, counts, n_owners):
    """Shannon entropy (bits) of each owner's distribution given ``counts`` per (owner, item)."""
    totals = segment_sum(xp, owner, counts, n_owners)
    p = counts / xp.maximum(totals[owner], 1.0)
    return segment_sum(xp, owner, -p * xp.log2(xp.where(p > 0, p, 1.0)), n_owners)


def host_window_features(xp, host, window, dst, dport, bytes_out, bytes_in) -> dict:
    """Per (host, window): the rows of the returned arrays follow the distinct pairs in
    ``keys_host``/``keys_window``. ``dst`` is any integer key of the peer (e.g. a hash of its
    address); each input row is one flow of ``host``."""
    hw, first = group_ids(xp, host, window)
    n = int(first.shape[0])
    flows = segment_count(xp, hw, n)
    d_ids, d_first = group_ids(xp, hw, dst)
    d_owner = hw[d_first]
    d_counts = segment_count(xp, d_ids, int(d_first.shape[0])).astype(xp.float64)
    p_ids, p_first = group_ids(xp, hw, dport)
    p_owner = hw[p_first]
    p_counts = segment_count(xp, p_ids, int(p_first.shape[0])).astype(xp.float64)
    return {
        "keys_host": host[first],
        "keys_window": window[first],
        "flows": flows,
        "distinct_dsts": segment_count(xp, d_owner, n),
        "distinct_ports": segment_count(xp, p_owner, n),
        "dst_entropy": _entropy_of_counts(xp, d_owner, d_counts, n),
        "port_entropy": _entropy_of_counts(xp, p_owner, p_counts, n),
        "bytes_out": segment_sum(xp, hw, bytes_out, n),
        "bytes_in": segment_sum(xp, hw, bytes_in, n),
    }


def name_features(xp, data, offsets) -> dict:
    """DNS names given as one ``uint8`` buffer and ``offsets`` (name ``i`` is
    ``data[offsets[i]:offsets[i+1]]``, dotted text without the final dot)."""
    n = int(offsets.shape[0]) - 1
    lengths = (offsets[1:] - offsets[:-1]).astype(xp.int64)
    owner = xp.repeat(xp.arange(n, dtype=xp.int64), lengths)
    chars = data[: int(offsets[-1])] if n else data[:0]
    c_ids, c_first = group_ids(xp, owner, chars.astype(xp.int64))
    c_owner = owner[c_first]
    c_counts = segment_count(xp, c_ids, int(c_first.shape[0])).astype(xp.float64)
    dots = segment_sum(xp, owner, (chars == 46).astype(xp.float64), n)
    digits = segment_sum(xp, owner, ((chars >= 48) & (chars <= 57)).astype(xp.float64), n)
    # label lengths: run lengths between dots
    is_dot = chars == 46
    label_no = xp.cumsum(is_dot) - is_dot  # label index within the whole buffer, per char
    label_key = label_no + owner  # distinct per (name, label): labels never span names
    l_ids, l_first = group_ids(xp, owner, label_key)
    l_len = segment_sum(xp, l_ids, (~is_dot).astype(xp.float64), int(l_first.shape[0]))
    longest = segment_max(xp, owner[l_first], l_len, n)
    return {
        "length": lengths,
        "entropy": _entropy_of_counts(xp, c_owner, c_counts, n),
        "labels": xp.where(lengths > 0, dots + 1, 0.0),
        "longest_label": longest,
        "digit_share": digits / xp.maximum(lengths, 1),
    }
