"""A bounded set of distinct values that does not depend on the order they arrive in.

Detectors keep the sources of a flood, the reflectors of an amplification attack or the
scanners of a host as sets, and cap them so that a flood from millions of spoofed addresses
cannot take the memory. Keeping the first N seen made the sample, its examples and its count
depend on the order flows come in, which differs between the CPU and GPU flow tables and
between batch sizes. This keeps instead the N values with the smallest stable hash (a bottom-k
sketch, the KMV estimator of Bar-Yossef et al. 2002): the same N whatever the order, and an
unbiased estimate of the distinct count once more than N were offered.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable

_SPACE = float(1 << 32)


def _hash(value: str) -> int:
    # Python's own str hash changes between processes; crc32 is stable and fast in C
    return zlib.crc32(value.encode())


class DistinctSample:
    """The `size` distinct values with the smallest crc32 (ties broken by value)."""

    __slots__ = ("size", "_kept", "_bound", "_saturated")

    def __init__(self, size: int):
        self.size = size
        self._kept: dict[str, int] = {}
        self._bound = 1 << 32  # values hashing above this can no longer be among the smallest
        self._saturated = False

    def add(self, value: str) -> None:
        if value in self._kept:
            return
        h = _hash(value)
        if h > self._bound:
            return
        self._kept[value] = h
        if len(self._kept) >= 2 * self.size:  # prune in bulk: amortised O(1) per add
            self._prune()

    def add_hashed(self, values, hashes) -> None:
        """Offer ``values`` (an Arrow string array) with their crc32 already computed (as
        :func:`~detector.detect.address_columns.crc32_column` gives): only those under the
        sample's bound become Python strings."""
        passing = (hashes <= self._bound).nonzero()[0]
        for v, h in zip(values.take(passing).to_pylist(), hashes[passing].tolist()):
            if v not in self._kept and h <= self._bound:
                self._kept[v] = h
                if len(self._kept) >= 2 * self.size:
                    self._prune()

    def merge(self, other: DistinctSample) -> None:
        """The sample of both inputs together. Each side holds every value it was offered
        under its bound, and a full side holds ``size`` of them, so the union's smallest are
        all under the lower bound."""
        self._bound = min(self._bound, other._bound)
        self._saturated = self._saturated or other._saturated
        kept = {v: h for v, h in self._kept.items() if h <= self._bound}
        kept.update((v, h) for v, h in other._kept.items() if h <= self._bound)
        self._kept = kept
        self._prune()

    @property
    def bound(self) -> int:
        """The largest crc32 that can still enter the sample."""
        return self._bound

    def update(self, values: Iterable[str]) -> None:
        for v in values:
            self.add(v)

    def _prune(self) -> None:
        if len(self._kept) <= self.size:
            return
        ranked = sorted(self._kept.items(), key=lambda kv: (kv[1], kv[0]))[: self.size]
        self._kept = dict(ranked)
        self._bound = ranked[-1][1]
        self._saturated = True

    def items(self) -> set[str]:
        self._prune()
        return set(self._kept)

    def __len__(self) -> int:
        """The number of distinct values offered: exact until the sample filled, then estimated."""
        self._prune()
        if not self._saturated:
            return len(self._kept)
        return max(self.size, round((self.size - 1) * _SPACE / (self._bound + 1)))

    @property
    def exact(self) -> bool:
        self._prune()
        return not self._saturated

    def examples(self, n: int) -> list[str]:
        """The first n of the sample in sorted order: the same whatever order values came in."""
        return sorted(self.items())[:n]


def sampled_count(crcs, size: int) -> tuple[int, bool]:
    """The distinct count of a bottom-k sample kept as table rows: ``crcs`` are the crc32s of
    the values held for one key in ascending order, at most ``size + 1`` (one more than the
    sample, to tell it filled). Exact until it filled, then the KMV estimate of
    :class:`DistinctSample`."""
    if len(crcs) > size:
        bound = int(crcs[size - 1])
        return max(size, round((size - 1) * _SPACE / (bound + 1))), False
    return len(crcs), True
