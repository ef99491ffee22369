"""Decoded export records as flow records of the flow table's schema (:data:`FLOW_SCHEMA`), so
that the same detectors read them.

What an exporter does not say is filled the way Zeek fills a connection it saw only in part:

- a record is one direction (NetFlow, most IPFIX): the two directions of a connection are
  paired into one record (:func:`pair_directions`), its originator the side that started first;
  a direction alone has zero counts the other way; a biflow (RFC 5103) gives the responder's
  counts from its reverse elements;
- counts are multiplied by the sampling rate (1 in N packets), so that thresholds compare
  estimates of the real traffic;
- payload bytes are the IP bytes less 40 (TCP) or 28 (UDP) bytes of headers per packet;
- TCP flags are the OR over the flow: each flag counts once, and the connection state and
  history are what the flags of each direction tell (:func:`tcp_state`: ``S0``, ``REJ``,
  ``S1``, ``SF``, ``RSTO``, ``RSTR``, else ``OTH``);
- ICMP's type and code are the ports; the end reason comes from ``flowEndReason`` (136) where
  given, else ``idle``; there are no per-packet sizes, gaps or TTLs (those columns are 0).
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector import arrowutil as au
from detector.exports.decode import Columns
from detector.flows.records import _PROTO_CODE, _PROTO_DICT, _REASON_DICT, _STATE_DICT, FLOW_SCHEMA
from kernels.tcp_state import CONN_STATES
from kernels.xp_ops import group_ids, group_starts, lexsort

MAPPED = np.uint64(0xFFFF << 32)
HEADERS = {6: 40, 17: 28, 132: 32}  # IPv4 + transport header bytes per packet
FLAGS = (("fin", 0x01), ("syn", 0x02), ("rst", 0x04), ("psh", 0x08), ("ack", 0x10), ("urg", 0x20),
         ("ece", 0x40), ("cwr", 0x80))
END_REASONS = {1: "idle", 2: "active", 3: "fin", 4: "eof", 5: "evicted"}  # IPFIX flowEndReason


def addresses(cols: dict, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) words of each record's address, IPv4 mapped into IPv6 as in packet columns."""
    n = len(cols["exporter"])
    hi, lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    if f"{side}6" in cols:
        six = cols[f"{side}6"]
        hi[:], lo[:] = six[:, 0], six[:, 1]
    if f"{side}4" in cols:
        v4 = cols[f"{side}4"]
        is4 = (hi == 0) & (lo == 0)
        lo[is4] = MAPPED | v4[is4]
    return hi, lo


def address_text(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """Addresses as text: IPv4 ones in one vectorised pass, each distinct other one formatted
    once."""
    v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    quads = [pa.array(((lo >> np.uint64(s)) & np.uint64(255)).astype(np.int64)).cast(pa.string()) for s in (24, 16, 8, 0)]
    text = pc.binary_join_element_wise(*quads, ".")
    if v4.all():
        return text
    ids, first = group_ids(np, hi, lo)
    other = [str(ipaddress.IPv6Address(h << 64 | low)) for h, low in zip(hi[first].tolist(), lo[first].tolist())]
    six = pa.array(other, pa.string()).take(pa.array(ids))
    return pc.if_else(pa.array(v4), text, six)


PAIR_SLACK_NS = 2 * 10**9  # the two directions of a connection, as two records, overlap within this


def pair_directions(cols: dict) -> dict:
    """Unidirectional records joined into connections: the two directions of one 5-tuple whose
    times overlap (within ``PAIR_SLACK_NS``) become one record, its originator the side that
    started first (at a tie, the side whose destination port is the lower: the server's). The
    k-th record of each direction of a 5-tuple is paired with the other direction's k-th (an
    exporter's timeouts cut both the same way). Biflows (RFC 5103) are left as they are."""
    n = len(cols["exporter"])
    if not n:
        return cols
    lone = cols["rev_packets"] == 0 if "rev_packets" in cols else np.ones(n, bool)  # biflows stay as they are
    s_hi, s_lo = addresses(cols, "src")
    d_hi, d_lo = addresses(cols, "dst")
    sp, dp = cols.get("sport", np.zeros(n, np.uint64)), cols.get("dport", np.zeros(n, np.uint64))
    proto = cols.get("proto", np.zeros(n, np.uint64))
    back = (s_hi > d_hi) | ((s_hi == d_hi) & ((s_lo > d_lo) | ((s_lo == d_lo) & (sp > dp))))
    # a biflow's key is its own: it pairs with nothing
    key = [np.where(back, d_hi, s_hi), np.where(back, d_lo, s_lo), np.where(back, dp, sp),
           np.where(back, s_hi, d_hi), np.where(back, s_lo, d_lo), np.where(back, sp, dp), proto,
           np.where(lone, -1, np.arange(n))]
    start, end = cols["start_ns"], cols["end_ns"]
    order = lexsort(np, (start, back, *reversed(key)))
    group = np.cumsum(group_starts(np, [k[order] for k in key]))
    side = np.cumsum(group_starts(np, [group, back[order]]))  # (group, direction)
    first_of_side = np.flatnonzero(group_starts(np, [side]))
    rank = np.arange(n) - np.repeat(first_of_side, np.diff(np.r_[first_of_side, n]))
    # candidates: the same group and rank, one of each direction
    fwd = order[~back[order]]
    rev = order[back[order]]
    fkey = dict(zip(zip(group[~back[order]].tolist(), rank[~back[order]].tolist()), fwd.tolist()))
    pairs = [(fkey[k], r) for k, r in zip(zip(group[back[order]].tolist(), rank[back[order]].tolist()), rev.tolist())
             if k in fkey]
    if not pairs:
        return cols
    a, b = np.array(pairs, np.int64).T
    near = (start[a] <= end[b] + PAIR_SLACK_NS) & (start[b] <= end[a] + PAIR_SLACK_NS)
    a, b = a[near], b[near]
    # the originator: the earlier start; at a tie, the side sending to the lower (server) port
    a_first = (start[a] < start[b]) | ((start[a] == start[b]) & (dp[a] <= dp[b]))
    orig, resp = np.where(a_first, a, b), np.where(a_first, b, a)
    alone = np.ones(n, bool)
    alone[orig] = alone[resp] = False
    rows = np.r_[orig, np.flatnonzero(alone)]
    out = {name: col[rows] for name, col in cols.items()}
    k = len(orig)
    for name, src in (("rev_packets", "packets"), ("rev_octets", "octets"), ("rev_tcp_flags", "tcp_flags")):
        if src in cols:
            rest = cols[name][alone] if name in cols else np.zeros(n - 2 * k, cols[src].dtype)
            out[name] = np.r_[cols[src][resp], rest.astype(cols[src].dtype)]
    out["start_ns"] = np.r_[np.minimum(start[orig], start[resp]), start[alone]]
    out["end_ns"] = np.r_[np.maximum(end[orig], end[resp]), end[alone]]
    return out


def flow_batch(c: Columns, exporters: list[str], run: str = "") -> pa.RecordBatch:
    """Records of ``c`` as one batch of :data:`FLOW_SCHEMA` (directions paired:
    :func:`pair_directions`)."""
    cols = pair_directions(c.cols)
    n = len(cols["exporter"])
    proto = cols.get("proto", np.zeros(n, np.uint64)).astype(np.uint8)
    sampling = np.maximum(cols.get("sampling", np.ones(n)), 1).astype(np.int64)
    pkts = cols.get("packets", np.zeros(n)).astype(np.int64) * sampling
    ip_bytes = cols.get("octets", np.zeros(n)).astype(np.int64) * sampling
    rpkts = cols.get("rev_packets", np.zeros(n)).astype(np.int64) * sampling
    rbytes = cols.get("rev_octets", np.zeros(n)).astype(np.int64) * sampling
    header = np.zeros(256, np.int64)
    for p, h in HEADERS.items():
        header[p] = h
    header[[1, 58]] = 28
    flags = cols.get("tcp_flags", np.zeros(n)).astype(np.int64) & 0xFF
    rflags = cols.get("rev_tcp_flags", np.zeros(n)).astype(np.int64) & 0xFF
    icmp = np.zeros(n, np.int64)
    for name in ("icmp6", "icmp"):  # type << 8 | code
        if name in cols:
            icmp = np.where(icmp == 0, cols[name].astype(np.int64), icmp)
    sport = cols.get("sport", np.zeros(n)).astype(np.int64)
    dport = cols.get("dport", np.zeros(n)).astype(np.int64)
    is_icmp = (proto == 1) | (proto == 58)
    # where no ICMP element says it, NetFlow probes put type << 8 | code in the destination port
    icmp = np.where(icmp == 0, dport, icmp)
    sport, dport = np.where(is_icmp, icmp >> 8, sport), np.where(is_icmp, icmp & 0xFF, dport)
    start, end = cols["start_ns"], np.maximum(cols["end_ns"], cols["start_ns"])
    state, history = tcp_state(proto, flags, rflags, pkts, rpkts)
    reason_names = list(_REASON_DICT.to_pylist())
    reason = np.full(n, reason_names.index("idle"), np.int8)
    if "end_reason" in cols:
        for code, name in END_REASONS.items():
            reason[cols["end_reason"] == code] = reason_names.index(name)
    data = {
        "ts": pa.array(start, pa.timestamp("ns", tz="UTC")),
        # X<the decoder's run>.<record number>: unique across runs and files
        "uid": pc.binary_join_element_wise(f"X{run}", pa.array(cols["seq"]).cast(pa.string()), "."),
        "orig_h": address_text(*addresses(cols, "src")), "resp_h": address_text(*addresses(cols, "dst")),
        "orig_p": sport.astype(np.uint16), "resp_p": dport.astype(np.uint16),
        "proto": au.dictionary(_PROTO_CODE[proto], _PROTO_DICT), "ip_proto": proto,
        "duration": (end - start) / 1e9,
        "orig_pkts": pkts, "orig_ip_bytes": ip_bytes, "resp_pkts": rpkts, "resp_ip_bytes": rbytes,
        "orig_bytes": np.maximum(ip_bytes - pkts * header[proto], 0),
        "resp_bytes": np.maximum(rbytes - rpkts * header[proto], 0),
        "conn_state": au.dictionary(state, _STATE_DICT), "end_reason": au.dictionary(reason, _REASON_DICT),
        "history": pa.array(history, pa.string()),
        "vlan": cols.get("vlan", np.zeros(n)).astype(np.uint16),
        "orig_size_mean": ip_bytes / np.maximum(pkts, 1), "resp_size_mean": rbytes / np.maximum(rpkts, 1),
    }
    for name, bit in FLAGS:
        data[f"orig_{name}"] = ((flags & bit) > 0).astype(np.int64)
        data[f"resp_{name}"] = ((rflags & bit) > 0).astype(np.int64)
    arrays = []
    for f in FLOW_SCHEMA:
        a = data.get(f.name)
        if a is None:
            a = pa.nulls(n, f.type) if f.name in ("community_id", "service") else \
                pa.array(np.zeros(n, f.type.to_pandas_dtype()) if f.name != "history" else [""] * n, f.type)
        elif not isinstance(a, pa.Array):
            a = pa.array(a, f.type)
        arrays.append(a)
    return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)


def tcp_state(proto, flags, rflags, pkts, rpkts) -> tuple[np.ndarray, list[str]]:
    """Zeek's connection state and history, as far as the flags seen each way tell (each flag
    once: an exporter ORs them over the flow). Data (``D``/``d``) is told by PSH."""
    syn, ack, fin, rst, psh = 0x02, 0x10, 0x01, 0x04, 0x08
    states = list(CONN_STATES)
    tcp = proto == 6

    def has(f, bit):
        return tcp & ((f & bit) > 0)

    o_syn, r_syn = has(flags, syn) & ~has(flags, ack) | (has(flags, syn) & (pkts > 1)), has(rflags, syn)
    code = np.full(len(proto), states.index("OTH"), np.int8)
    code[o_syn & (rpkts == 0)] = states.index("S0")
    code[o_syn & (rpkts > 0) & r_syn] = states.index("S1")
    code[o_syn & r_syn & has(flags, fin) & has(rflags, fin)] = states.index("SF")
    code[o_syn & r_syn & has(flags, rst)] = states.index("RSTO")
    code[o_syn & r_syn & has(rflags, rst) & ~has(flags, rst)] = states.index("RSTR")
    code[o_syn & ~r_syn & has(rflags, rst)] = states.index("REJ")
    # the responder's plain ACKs: more than its SYN-ACK, or than a lone RST
    r_acks = has(rflags, ack) & ~((r_syn | has(rflags, rst)) & (rpkts <= 1))
    letters = [("S", o_syn), ("h", r_syn & has(rflags, ack)), ("A", has(flags, ack)), ("a", r_acks),
               ("D", has(flags, psh)), ("d", has(rflags, psh)), ("F", has(flags, fin)), ("f", has(rflags, fin)),
               ("R", has(flags, rst)), ("r", has(rflags, rst))]
    history = np.full(len(proto), "", object)
    for letter, on in letters:
        history[on] = history[on] + letter
    return code, history.tolist()
