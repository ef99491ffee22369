"""The packets and host columns the L7 tap (and the service names) read from an engine's batch:
all of it from a CPU engine, only the candidates from a GPU engine's device columns."""

from __future__ import annotations

import dataclasses

from detector.l7.select import candidates
from detector.sources.batch import RawBatch
from kernels import packet_columns as pc
from kernels.host_copy import to_host


def host_columns(engine, n: int) -> pc.PacketColumns:
    cols = engine.cols
    if hasattr(cols.ts_ns, "get"):  # device columns: the L7 tap runs on the host
        return pc.PacketColumns(*(c[:n].get() for c in cols))
    return cols


def tap_input(engine, b: RawBatch) -> tuple[RawBatch, pc.PacketColumns]:
    """The records and host columns the L7 tap reads: the whole batch, or from an engine whose
    columns are on a GPU only the packets the tap may look at (:func:`detector.l7.select.candidates`),
    in capture order, and the tap finds the same in them."""
    signatures = getattr(engine, "payload_signatures", None)
    if signatures is None:
        return b, host_columns(engine, b.n)
    xp, n = engine.xp, b.n
    idx = xp.flatnonzero(candidates(xp, engine.cols, signatures(n), n))
    rows, *cols = to_host(xp, [idx, *(c[idx] for c in engine.cols)])  # one copy
    cols = pc.PacketColumns(*cols)
    return dataclasses.replace(b, off=b.off[rows], caplen=b.caplen[rows], wirelen=b.wirelen[rows],
                               ts_ns=b.ts_ns[rows], link=b.link[rows]), cols
