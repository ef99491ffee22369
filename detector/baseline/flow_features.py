"""Per-flow features for the site model's flow scorer: what one connection looked like, in
the shape a distance can compare (byte, packet and time counts as ``log1p``, and whether the
connection failed or was not TCP)."""

from __future__ import annotations

import numpy as np

from detector.detect.base import FlowView

FLOW_FEATURES = ["orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts", "duration_ms", "failed", "udp", "not_tcp_udp"]
FAILED_STATES = ("S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "OTH")


def flow_matrix(f: FlowView, rows: np.ndarray) -> np.ndarray:
    """The flow features of ``rows``, one row each, in ``FLOW_FEATURES`` order (float32: a few
    numbers per flow are kept until the windows close)."""
    ip_proto = f["ip_proto"][rows]
    return np.column_stack([
        np.log1p(f["orig_bytes"][rows].astype(np.float64)), np.log1p(f["resp_bytes"][rows].astype(np.float64)),
        np.log1p(f["orig_pkts"][rows].astype(np.float64)), np.log1p(f["resp_pkts"][rows].astype(np.float64)),
        np.log1p(np.maximum(f["duration"][rows], 0.0) * 1000.0),
        np.isin(f["conn_state"][rows], FAILED_STATES), ip_proto == 17, (ip_proto != 6) & (ip_proto != 17),
    ]).astype(np.float32)
