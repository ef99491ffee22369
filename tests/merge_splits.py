"""The split-and-merge a mergeable detector's property tests share: the input shuffled, cut
into batches fed to three fresh detectors in turn, and those merged in a rotated order."""

from __future__ import annotations

import random
from collections.abc import Callable


def split_and_merge(make: Callable, feed: Callable, rows: list, cuts: list[float], order: int, seed: int):
    """``rows`` shuffled (by ``seed``), cut at the fractions ``cuts``, each batch fed (``feed(det,
    batch)``) to one of three detectors from ``make()`` in turn; the three merged, starting at
    ``order % 3``. Returns the merged detector."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n = len(rows)
    at = sorted({int(c * n) for c in cuts} - {0, n})
    parts = [make() for _ in range(3)]
    for k, (a, b) in enumerate(zip([0, *at], [*at, n])):
        feed(parts[k % 3], rows[a:b])
    first, *rest = parts[order % 3:] + parts[:order % 3]
    for other in rest:
        first.merge(other)
    return first
