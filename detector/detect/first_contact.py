"""When the site first reached each destination: for "a destination nobody here had talked to"."""

from __future__ import annotations

import numpy as np

from detector.detect.base import FlowView


class FirstContacts:
    """The earliest flow start per destination (``resp_h``) among the rows offered, whatever
    order batches come in; at most ``limit`` destinations are kept (later ones are not)."""

    def __init__(self, limit: int = 1_000_000):
        self.seen: dict[str, int] = {}
        self.limit = limit

    def note(self, f: FlowView, rows: np.ndarray | None = None) -> None:
        rows = np.arange(len(f)) if rows is None else rows
        if not len(rows):
            return
        dsts, codes = f.distinct("resp_h")
        codes, ts = codes[rows], f["ts"][rows]
        order = np.argsort(codes, kind="stable")
        uniq, starts = np.unique(codes[order], return_index=True)
        earliest = np.minimum.reduceat(ts[order], starts)
        seen = self.seen
        for code, t in zip(uniq.tolist(), earliest.tolist()):
            dst = dsts[code]
            old = seen.get(dst)
            if old is None:
                if len(seen) < self.limit:
                    seen[dst] = t
            elif t < old:
                seen[dst] = t

    def get(self, dst: str, default=None):
        return self.seen.get(dst, default)
