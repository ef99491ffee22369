"""The ``service`` of flow records: what their first captured payload speaks, by content.

As Zeek's dynamic protocol detection names a connection after the analyzer that recognised it
(``ssl``, ``ssh``, ``http``, ``dns``, ``dhcp``, ``smtp``, ``ftp``, ...), whatever its ports,
:class:`ServiceNames` looks at the early packets of every flow in each batch
(:func:`kernels.service_sig.first_payloads`), keeps the first verdict per flow, and writes it
into the records when they are built. Flows whose payload was not captured (headers-only
captures) get none, and so do flows whose payload nobody recognised; the detectors also see
which of the two it was (``first_payload``: -1 not seen, 0 not recognised, else the code).

State is one small entry per open flow with payload, dropped when its record is written; past
``max_flows`` the oldest are dropped and counted (``evicted``).
"""

from __future__ import annotations

from itertools import islice

import numpy as np
import pyarrow as pa

from kernels import l7_select as ks
from kernels import service_sig as sv

NAMES = {sv.SVC_SSL: "ssl", sv.SVC_SSH: "ssh", sv.SVC_HTTP: "http", sv.SVC_DNS: "dns", sv.SVC_DHCP: "dhcp",
         sv.SVC_RFB: "rfb", sv.SVC_BITTORRENT: "bittorrent", sv.SVC_NTP: "ntp", sv.SVC_QUIC: "quic"}
FTP_PORTS = (21, 2121)
_B62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)
_DIGIT = np.zeros(256, np.uint64)
_DIGIT[_B62] = np.arange(62, dtype=np.uint64)


def service_name(code: int, port: int) -> str | None:
    if code == sv.SVC_BANNER220:
        return "ftp" if port in FTP_PORTS else "smtp"
    return NAMES.get(code)


def uid_fids(uids: pa.Array) -> np.ndarray:
    """The flow ids behind uids ``C`` + 11 base-62 digits (0 where a uid is not of that form)."""
    uids = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    n = len(uids)
    out = np.zeros(n, np.uint64)
    if n == 0:
        return out
    offsets = np.frombuffer(uids.buffers()[1], np.int32, n + 1, uids.offset * 4)
    data = np.frombuffer(uids.buffers()[2], np.uint8)
    ok = np.diff(offsets) == 12
    starts = offsets[:-1][ok]
    for k in range(1, 12):
        out[ok] = out[ok] * np.uint64(62) + _DIGIT[data[starts + k]]
    return out


class ServiceNames:
    def __init__(self, max_flows: int = 1_000_000):
        self.first: dict[int, int] = {}  # flow id -> code of its first captured payload
        self.max_flows = max_flows
        self.evicted = 0

    def observe(self, buf, rec_off, cols, n: int) -> None:
        """Note the first verdict of the flows whose early packets are among rows ``0..n``."""
        if n == 0:
            return
        rows = np.empty(n, np.int64)
        codes = np.empty(n, np.uint8)
        m = sv.first_payloads(buf, rec_off, cols, n, rows, codes)
        if m == 0:
            return
        rows, codes = rows[:m], codes[:m]
        fids = np.empty(m, np.uint64)
        ks.flow_ids(cols, rows, fids)
        fids, first = np.unique(fids, return_index=True)  # rows are in capture order
        first_seen = self.first
        for fid, code in zip(fids.tolist(), codes[first].tolist()):
            first_seen.setdefault(fid, code)
        if len(first_seen) > self.max_flows:
            drop = len(first_seen) - self.max_flows
            for fid in list(islice(first_seen, drop)):  # the oldest entries (insertion order)
                del first_seen[fid]
            self.evicted += drop

    def fill(self, rb: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray]:
        """``rb`` with its ``service`` column named, and each record's first-payload code (-1:
        none seen); the records' entries are dropped."""
        n = rb.num_rows
        codes = np.full(n, -1, np.int16)
        if n == 0 or not self.first:
            return rb, codes
        fids = uid_fids(rb.column("uid"))
        pop = self.first.pop
        for j, fid in enumerate(fids.tolist()):
            code = pop(fid, None)
            if code is not None:
                codes[j] = code
        known = np.flatnonzero(codes > 0)
        if not len(known):
            return rb, codes
        ports = rb.column("resp_p").to_numpy(zero_copy_only=False)
        names = [None] * n
        for j in known.tolist():
            names[j] = service_name(int(codes[j]), int(ports[j]))
        i = rb.schema.get_field_index("service")
        return rb.set_column(i, rb.schema.field(i), pa.array(names, pa.string())), codes
