"""Decoded export records as flow records of the flow table's schema (:data:`FLOW_SCHEMA`), so
that the same detectors read them.

What an exporter does not say is filled the way Zeek fills a connection it saw only in part:

- a record is one direction (NetFlow, most IPFIX): the originator is its source, the
  responder's counts are zero; a biflow (RFC 5103) gives the responder's from its reverse
  elements;
- counts are multiplied by the sampling rate (1 in N packets), so that thresholds compare
  estimates of the real traffic;
- payload bytes are the IP bytes less 40 (TCP) or 28 (UDP) bytes of headers per packet;
- TCP flags are the OR over the flow: each flag counts once; a flow whose only flag is SYN is
  ``S0`` (an attempt nobody answered, as far as this record tells), every other ``OTH``;
- ICMP's type and code are the ports; the end reason comes from ``flowEndReason`` (136) where
  given, else ``idle``; there are no per-packet sizes, gaps or TTLs (those columns are 0).
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

from detector import arrowutil as au
from detector.exports.decode import Columns
from detector.flows.records import _PROTO_CODE, _PROTO_DICT, _REASON_DICT, _STATE_DICT, FLOW_SCHEMA
from kernels.tcp_state import CONN_STATES

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
    """Addresses as text, each distinct one formatted once."""
    pairs = np.stack([hi, lo], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    text = [str(ipaddress.ip_address(int(h) << 64 | int(low)).ipv4_mapped or ipaddress.ip_address(int(h) << 64 | int(low)))
            for h, low in uniq.tolist()]
    return pa.array(text, pa.string()).take(pa.array(inverse.ravel()))


def flow_batch(c: Columns, exporters: list[str]) -> pa.RecordBatch:
    """Records of ``c`` as one batch of :data:`FLOW_SCHEMA`."""
    cols = c.cols
    n = len(c)
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
    icmp = cols.get("icmp", cols.get("icmp6"))
    sport = cols.get("sport", np.zeros(n)).astype(np.int64)
    dport = cols.get("dport", np.zeros(n)).astype(np.int64)
    is_icmp = (proto == 1) | (proto == 58)
    if icmp is not None:  # type << 8 | code
        sport = np.where(is_icmp, icmp.astype(np.int64) >> 8, sport)
        dport = np.where(is_icmp, icmp.astype(np.int64) & 0xFF, dport)
    elif is_icmp.any():  # NetFlow v5/v9 probes put type << 8 | code in the destination port
        sport, dport = np.where(is_icmp, dport >> 8, sport), np.where(is_icmp, dport & 0xFF, dport)
    start, end = cols["start_ns"], np.maximum(cols["end_ns"], cols["start_ns"])
    states = list(CONN_STATES)
    s0 = (proto == 6) & (flags == 0x02) & (rpkts == 0)
    state = np.where(s0, states.index("S0"), states.index("OTH")).astype(np.int8)
    reason_names = list(_REASON_DICT.to_pylist())
    reason = np.full(n, reason_names.index("idle"), np.int8)
    if "end_reason" in cols:
        for code, name in END_REASONS.items():
            reason[cols["end_reason"] == code] = reason_names.index(name)
    data = {
        "ts": pa.array(start, pa.timestamp("ns", tz="UTC")),
        "uid": pa.array([f"X{e}x{k:x}" for e, k in zip(cols["exporter"].tolist(), range(n))], pa.string()),
        "orig_h": address_text(*addresses(cols, "src")), "resp_h": address_text(*addresses(cols, "dst")),
        "orig_p": sport.astype(np.uint16), "resp_p": dport.astype(np.uint16),
        "proto": au.dictionary(_PROTO_CODE[proto], _PROTO_DICT), "ip_proto": proto,
        "duration": (end - start) / 1e9,
        "orig_pkts": pkts, "orig_ip_bytes": ip_bytes, "resp_pkts": rpkts, "resp_ip_bytes": rbytes,
        "orig_bytes": np.maximum(ip_bytes - pkts * header[proto], 0),
        "resp_bytes": np.maximum(rbytes - rpkts * header[proto], 0),
        "conn_state": au.dictionary(state, _STATE_DICT), "end_reason": au.dictionary(reason, _REASON_DICT),
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
