"""Flow records: emitted flow-state rows turned into an Arrow table.

Field names follow Zeek's conn.log where it has one (``orig_h`` for ``id.orig_h``, ...). Sizes
are IP packet sizes (the IP total length); inter-arrival times are between packets of the same
direction, in seconds; standard deviations are population ones. ``orig_bytes``/``resp_bytes``
are transport payload bytes, without retransmitted TCP bytes.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

from detector import arrowutil as au
from detector.config import FlowConfig
from detector.flows.table import EmittedFlows
from kernels import flow_records as kfr
from kernels import flowstate as fsd
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

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        out = np.zeros(len(hi), dtype=bool)
        for vhi, vlo, mhi, mlo in self.nets:
            out |= ((hi & mhi) == vhi) & ((lo & mlo) == vlo)
        return out


class RecordBuilder:
    """Turns :class:`EmittedFlows` into Arrow record batches of :data:`FLOW_SCHEMA`."""

    def __init__(self, cfg: FlowConfig):
        self.cid_seed = cfg.community_id_seed
        self.local = LocalNets(cfg.local_nets)

    def build(self, em: EmittedFlows) -> pa.RecordBatch:
        n = len(em)
        st, fs = em.st, em.fs
        o_hi, o_lo, r_hi, r_lo = (np.empty(n, np.uint64) for _ in range(4))
        o_port, r_port, vlan = (np.empty(n, np.uint16) for _ in range(3))
        proto = np.empty(n, np.uint8)
        conn_state = np.empty(n, np.uint8)
        oh_buf = np.empty(max(1, n * kfr.IP_TEXT_MAX), np.uint8)
        rh_buf = np.empty_like(oh_buf)
        oh_off = np.empty(n + 1, np.int64)
        rh_off = np.empty(n + 1, np.int64)
        uid_buf = np.empty(max(1, n * kfr.UID_LEN), np.uint8)
        cid_buf = np.empty(max(1, n * kfr.CID_LEN), np.uint8)
        hist_buf = np.empty(max(1, n * fsd.HIST_LEN), np.uint8)
        hist_off = np.empty(n + 1, np.int64)
        kfr.finalize(em.keys, st, em.hist, n, self.cid_seed, o_hi, o_lo, r_hi, r_lo, o_port, r_port, proto,
                     vlan, conn_state, oh_buf, oh_off, rh_buf, rh_off, uid_buf, cid_buf, hist_buf, hist_off,
                     np.zeros(64, np.uint8), np.zeros(80, np.int64), np.zeros(20, np.uint8))
        first = st[:, fsd.FIRST_TS]
        duration = (st[:, fsd.LAST_TS] - first) / 1e9
        cols = {
            "ts": au.array(first, pa.timestamp("ns", tz="UTC")),
            "uid": au.fixed_strings(uid_buf, kfr.UID_LEN, n),
            "community_id": au.fixed_strings(cid_buf, kfr.CID_LEN, n),
            "orig_h": au.strings(oh_buf, oh_off, n),
            "orig_p": au.array(o_port),
            "resp_h": au.strings(rh_buf, rh_off, n),
            "resp_p": au.array(r_port),
            "proto": au.dictionary(_PROTO_CODE[proto], _PROTO_DICT),
            "ip_proto": au.array(proto),
            "service": pa.nulls(n, pa.string()),
            "duration": au.array(duration),
            "orig_bytes": au.array(st[:, fsd.ORIG + fsd.D_BYTES]),
            "resp_bytes": au.array(st[:, fsd.RESP + fsd.D_BYTES]),
            "conn_state": au.dictionary(conn_state, _STATE_DICT),
            "local_orig": au.array(self.local.contains(o_hi, o_lo)) if self.local else pa.nulls(n, pa.bool_()),
            "local_resp": au.array(self.local.contains(r_hi, r_lo)) if self.local else pa.nulls(n, pa.bool_()),
            "history": au.strings(hist_buf, hist_off, n),
            "orig_pkts": au.array(st[:, fsd.ORIG + fsd.D_PKTS]),
            "orig_ip_bytes": au.array(st[:, fsd.ORIG + fsd.D_IP_BYTES]),
            "resp_pkts": au.array(st[:, fsd.RESP + fsd.D_PKTS]),
            "resp_ip_bytes": au.array(st[:, fsd.RESP + fsd.D_IP_BYTES]),
            "vlan": au.array(vlan),
            "end_reason": au.dictionary(em.reason, _REASON_DICT),
        }
        for d, base, m2 in _DIRS:
            pk = st[:, base + fsd.D_PKTS]
            has = pk > 0
            npk = np.maximum(pk, 1)
            for name, off in _FLAG_FIELDS:
                cols[f"{d}_{name}"] = au.array(st[:, base + off])
            mean = st[:, base + fsd.D_SZ_SUM] / npk
            var = np.maximum(st[:, base + fsd.D_SZ_SUMSQ] / npk - mean * mean, 0.0)
            cols[f"{d}_size_min"] = au.array(st[:, base + fsd.D_SZ_MIN], pa.int64(), valid=has)
            cols[f"{d}_size_mean"] = au.array(mean, pa.float64(), valid=has)
            cols[f"{d}_size_std"] = au.array(np.sqrt(var), pa.float64(), valid=has)
            cols[f"{d}_size_max"] = au.array(st[:, base + fsd.D_SZ_MAX], pa.int64(), valid=has)
            ni = pk - 1
            has_iat = ni > 0
            nni = np.maximum(ni, 1)
            imean = st[:, base + fsd.D_IAT_SUM] / nni / 1e9
            ivar = np.maximum(fs[:, m2] / nni, 0.0)
            cols[f"{d}_iat_min"] = au.array(st[:, base + fsd.D_IAT_MIN] / 1e9, pa.float64(), valid=has_iat)
            cols[f"{d}_iat_mean"] = au.array(imean, pa.float64(), valid=has_iat)
            cols[f"{d}_iat_std"] = au.array(np.sqrt(ivar), pa.float64(), valid=has_iat)
            cols[f"{d}_iat_max"] = au.array(st[:, base + fsd.D_IAT_MAX] / 1e9, pa.float64(), valid=has_iat)
            cols[f"{d}_ttl_min"] = au.array(np.minimum(st[:, base + fsd.D_TTL_MIN], 255).astype(np.uint8), pa.uint8(), valid=has)
            cols[f"{d}_ttl_max"] = au.array(st[:, base + fsd.D_TTL_MAX].astype(np.uint8), pa.uint8(), valid=has)
            cols[f"{d}_retrans_pkts"] = au.array(st[:, base + fsd.D_RXMIT])
        return pa.RecordBatch.from_arrays([cols[f.name] for f in FLOW_SCHEMA], schema=FLOW_SCHEMA)
