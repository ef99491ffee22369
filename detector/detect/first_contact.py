"""When the site first reached each destination: for "a destination nobody here had talked to"."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from detector.detect.address_columns import string_ids
from detector.detect.base import FlowView
from detector.detect.keyed_table import KeyedSums


def _latest_out(cols: dict) -> np.ndarray:
    """Past the cap, the destinations first reached latest go first."""
    return -cols["t"]


class FirstContacts:
    """The earliest flow start per destination (``resp_h``) among the rows offered, whatever
    order batches come in, as a :class:`KeyedSums` of address ids (mergeable); at most ``limit``
    destinations, past which those first reached latest are evicted and counted (``evicted``)."""

    def __init__(self, limit: int = 1_000_000):
        self.earliest = KeyedSums(("dst",), {"t": "min"}, limit, _latest_out)

    @property
    def evicted(self) -> int:
        return self.earliest.evicted

    def note(self, f: FlowView, rows: np.ndarray | None = None) -> None:
        rows = np.arange(len(f)) if rows is None else rows
        if len(rows):
            self.earliest.add({"dst": f.ids("resp_h")[rows], "t": f["ts"][rows].astype(np.int64)})

    def merge(self, other: FirstContacts) -> None:
        self.earliest.merge(other.earliest)

    def get(self, dst: str, default=None):
        held = self.earliest.rows()
        if not held:
            return default
        (i,) = string_ids(pa.array([dst], pa.string())).tolist()
        at = int(np.searchsorted(held["dst"], np.uint64(i)))
        return int(held["t"][at]) if at < len(held["dst"]) and held["dst"][at] == i else default
