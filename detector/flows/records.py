"""Flow records: emitted flow-state rows turned into an Arrow table.

Field names follow Zeek's conn.log where it has one (``orig_h`` for ``id.orig_h``, ...). Sizes
are IP packet sizes (the IP total length); inter-arrival times are between packets of the same
direction, in seconds; standard deviations are population ones. ``orig_bytes``/``resp_bytes``
are transport payload bytes, without retransmitted TCP bytes.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from detector import arrowutil as au
from detector.config import FlowConfig
from detector.flows.table import EmittedFlows
from kernels import flow_records as kfr
from kernels import flowstate as fsd
from kernels.host_copy import to_host
from kernels.tcp_state import CONN_STATES

_DIRS = (("orig", fsd.ORIG, fsd.FO_IAT_M2), ("resp", fsd.RESP, fsd.FR_IAT_M2))
_FLAG_FIELDS = (("syn", fsd.D_SYN), ("ack", fsd.D_ACK), ("fin", fsd.D_FIN), ("rst", fsd.D_RST),
                ("psh", fsd.D_PSH), ("urg", fsd.D_URG), ("ece", fsd.D_ECE), ("cwr", fsd.D_CWR))
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp", 132: "sctp"}

_STATE_DICT = au.string_list(list(CONN_STATES))
_REASON_DICT = au.string_list(list(fsd.END_REASONS))
_PROTO_DICT = au.string_list(["tcp", "udp", "icmp", "sctp", "unknown_transport"])
_PROTO_CODE = np.full(256, 4, dtype=np.int8)
_PROTO_CODE[[6, 17, 1, 58, 132]] = [0, 1, 2, 2, 3]


def _dict_type():
    return pa.dictionary(pa.int8(), pa.string())


def _schema() -> pa.Schema:
    fields = [
        ("ts", pa.timestamp("ns", tz="UTC")), ("uid", pa.string()), ("community_id", pa.string()),
        ("orig_h", pa.string()), ("orig_p", pa.uint16()), ("resp_h", pa.string()), ("resp_p", pa.uint16()),
        ("proto", _dict_type()), ("ip_proto", pa.uint8()), ("service", pa.string()),
        ("duration", pa.float64()), ("orig_bytes", pa.int64()), ("resp_bytes", pa.int64()),
        ("conn_state", _dict_type()), ("local_orig", pa.bool_()), ("local_resp", pa.bool_()),
        ("history", pa.string()), ("orig_pkts", pa.int64()), ("orig_ip_bytes", pa.int64()),
        ("resp_pkts", pa.int64()), ("resp_ip_bytes", pa.int64()), ("vlan", pa.uint16()),
        ("end_reason", _dict_type()),
    ]
    for d, _, _ in _DIRS:
        fields += [(f"{d}_{name}", pa.int64()) for name, _ in _FLAG_FIELDS]
        fields += [(f"{d}_size_min", pa.int64()), (f"{d}_size_mean", pa.float64()),
                   (f"{d}_size_std", pa.float64()), (f"{d}_size_max", pa.int64()),
                   (f"{d}_iat_min", pa.float64()), (f"{d}_iat_mean", pa.float64()),
                   (f"{d}_iat_std", pa.float64()), (f"{d}_iat_max", pa.float64()),
                   (f"{d}_ttl_min", pa.uint8()), (f"{d}_ttl_max", pa.uint8()),
                   (f"{d}_retrans_pkts", pa.int64())]
    return pa.schema(fields)


FLOW_SCHEMA = _schema()


class LocalNets:
    """Membership of addresses (as hi/lo words) in the configured local networks."""

    def __init__(self, cidrs):
        self.nets = []
        for c in cidrs:
            net = ipaddress.ip_network(c, strict=False)
            if net.version == 4:
                net = ipaddress.ip_network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
            value = int(net.network_address)
            mask = (1 << 128) - (1 << (128 - net.prefixlen))
            self.nets.append((np.uint64(value >> 64), np.uint64(value & (2**64 - 1)),
                              np.uint64(mask >> 64), np.uint64(mask & (2**64 - 1))))

    def __bool__(self) -> bool:
        return bool(self.nets)

    def contains(self, hi, lo):
        """Membership of each address; NumPy or CuPy arrays alike (no networks: none)."""
        out = hi != hi
        for vhi, vlo, mhi, mlo in self.nets:
            out = out | (((hi & mhi) == vhi) & ((lo & mlo) == vlo))
        return out


class RecordBuilder:
    """Turns :class:`EmittedFlows` into Arrow record batches of :data:`FLOW_SCHEMA`.

    Flows emitted on a GPU (``em.device`` set) are finished there: orientation, uid, Community ID,
    addresses as text and every derived column are computed on the device, and the columns come
    back in one copy per batch of records."""

    def __init__(self, cfg: FlowConfig):
        self.cid_seed = cfg.community_id_seed
        self.local = LocalNets(cfg.local_nets)

    def build(self, em: EmittedFlows) -> pa.RecordBatch:
        n = len(em)
        if em.device is not None:
            xp = em.device.xp
            ori, text = em.device.finalize(em, self.cid_seed)
        else:
            xp = np
            ori, text = _finalize(em, self.cid_seed)
        st, fs = em.st, em.fs
        first = st[:, fsd.FIRST_TS]
        local = self.local.contains if self.local else None
        cols = {
            "ts": (first, pa.timestamp("ns", tz="UTC"), None),
            "orig_p": (ori.o_port, None, None),
            "resp_p": (ori.r_port, None, None),
            "ip_proto": (ori.proto, None, None),
            "duration": ((st[:, fsd.LAST_TS] - first) / 1e9, None, None),
            "orig_bytes": (st[:, fsd.ORIG + fsd.D_BYTES], None, None),
            "resp_bytes": (st[:, fsd.RESP + fsd.D_BYTES], None, None),
            "orig_pkts": (st[:, fsd.ORIG + fsd.D_PKTS], None, None),
            "orig_ip_bytes": (st[:, fsd.ORIG + fsd.D_IP_BYTES], None, None),
            "resp_pkts": (st[:, fsd.RESP + fsd.D_PKTS], None, None),
            "resp_ip_bytes": (st[:, fsd.RESP + fsd.D_IP_BYTES], None, None),
            "vlan": (ori.vlan, None, None),
        }
        if local is not None:
            cols["local_orig"] = (local(ori.o_hi, ori.o_lo), None, None)
            cols["local_resp"] = (local(ori.r_hi, ori.r_lo), None, None)
        for d, base, m2 in _DIRS:
            _direction_columns(xp, cols, d, st, base, fs[:, m2])
        # every column's values and validity, and the dictionary codes: one copy from a device
        names = list(cols)
        arrays = [cols[k][0] for k in names] + [cols[k][2] for k in names if cols[k][2] is not None] + \
            [ori.proto, ori.conn_state, em.reason]
        host = iter(arrays if xp is np else to_host(xp, arrays))
        values = {k: next(host) for k in names}
        out = {k: au.array(values[k], cols[k][1], None if cols[k][2] is None else next(host)) for k in names}
        proto, conn_state, reason = next(host), next(host), next(host)
        out.update({
            "uid": au.fixed_strings(text.uid, kfr.UID_LEN, n),
            "community_id": au.fixed_strings(text.cid, kfr.CID_LEN, n),
            "orig_h": au.strings(*text.oh, n),
            "resp_h": au.strings(*text.rh, n),
            "history": au.strings(*text.hist, n),
            "proto": au.dictionary(_PROTO_CODE[proto], _PROTO_DICT),
            "service": pa.nulls(n, pa.string()),
            "conn_state": au.dictionary(conn_state, _STATE_DICT),
            "end_reason": au.dictionary(reason, _REASON_DICT),
        })
        if local is None:
            out["local_orig"] = out["local_resp"] = pa.nulls(n, pa.bool_())
        return pa.RecordBatch.from_arrays([out[f.name] for f in FLOW_SCHEMA], schema=FLOW_SCHEMA)


class HostText(NamedTuple):
    """Text columns on the host: ``oh``, ``rh``, ``hist`` as (bytes, offsets); uid and Community
    ID as fixed-width bytes."""

    oh: tuple
    rh: tuple
    hist: tuple
    uid: np.ndarray
    cid: np.ndarray


def oriented(xp, n: int) -> kfr.Oriented:
    """Empty orientation columns for ``n`` records."""
    u64, u16, u8 = xp.uint64, xp.uint16, xp.uint8
    return kfr.Oriented(*(xp.empty(n, u64) for _ in range(4)), xp.empty(n, u16), xp.empty(n, u16),
                        xp.empty(n, u8), xp.empty(n, u16), xp.empty(n, u8))


def _finalize(em: EmittedFlows, cid_seed: int) -> tuple[kfr.Oriented, HostText]:
    """The records' orientation and text on the CPU, text packed as it is written."""
    n = len(em)
    ori = oriented(np, n)
    ip_bytes = max(1, n * kfr.IP_TEXT_MAX)
    text = kfr.Text(np.empty(ip_bytes, np.uint8), np.empty(ip_bytes, np.uint8),
                    np.empty(max(1, n * kfr.UID_LEN), np.uint8), np.empty(max(1, n * kfr.CID_LEN), np.uint8))
    packed = kfr.Packed(np.empty(n + 1, np.int64), np.empty(n + 1, np.int64),
                        np.empty(max(1, n * fsd.HIST_LEN), np.uint8), np.empty(n + 1, np.int64))
    scratch = kfr.Scratch(np.zeros(64, np.uint8), np.zeros(80, np.int64), np.zeros(20, np.uint8))
    kfr.finalize(kfr.Rows(em.keys, em.st, em.hist), n, cid_seed, ori, text, packed, scratch)
    return ori, HostText((text.oh, packed.oh_off), (text.rh, packed.rh_off), (packed.hist, packed.hist_off),
                         text.uid, text.cid)


def _direction_columns(xp, cols: dict, d: str, st, base: int, m2) -> None:
    """One direction's flag counts and size, inter-arrival and TTL statistics (null without
    packets, or for inter-arrivals without two)."""
    pk = st[:, base + fsd.D_PKTS]
    has = pk > 0
    npk = xp.maximum(pk, 1)
    for name, off in _FLAG_FIELDS:
        cols[f"{d}_{name}"] = (st[:, base + off], None, None)
    mean = st[:, base + fsd.D_SZ_SUM] / npk
    var = xp.maximum(st[:, base + fsd.D_SZ_SUMSQ] / npk - mean * mean, 0.0)
    f64 = pa.float64()
    cols[f"{d}_size_min"] = (st[:, base + fsd.D_SZ_MIN], pa.int64(), has)
    cols[f"{d}_size_mean"] = (mean, f64, has)
    cols[f"{d}_size_std"] = (xp.sqrt(var), f64, has)
    cols[f"{d}_size_max"] = (st[:, base + fsd.D_SZ_MAX], pa.int64(), has)
    ni = pk - 1
    has_iat = ni > 0
    nni = xp.maximum(ni, 1)
    cols[f"{d}_iat_min"] = (st[:, base + fsd.D_IAT_MIN] / 1e9, f64, has_iat)
    cols[f"{d}_iat_mean"] = (st[:, base + fsd.D_IAT_SUM] / nni / 1e9, f64, has_iat)
    cols[f"{d}_iat_std"] = (xp.sqrt(xp.maximum(m2 / nni, 0.0)), f64, has_iat)
    cols[f"{d}_iat_max"] = (st[:, base + fsd.D_IAT_MAX] / 1e9, f64, has_iat)
    cols[f"{d}_ttl_min"] = (xp.minimum(st[:, base + fsd.D_TTL_MIN], 255).astype(xp.uint8), pa.uint8(), has)
    cols[f"{d}_ttl_max"] = (st[:, base + fsd.D_TTL_MAX].astype(xp.uint8), pa.uint8(), has)
    cols[f"{d}_retrans_pkts"] = (st[:, base + fsd.D_RXMIT], None, None)
