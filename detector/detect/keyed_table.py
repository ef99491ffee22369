"""Columnar detector state: rows grouped by key columns, the first ``keep`` rows of each key
in an order (the earliest contact, the first few successes), and a cap on the rows held.

A batch's rows are appended as they come and folded in (one sort) when the pending rows
outgrow what is held, so an update costs amortised O(rows log rows) in array operations and
no Python per row. Folding is a reduction that does not depend on the order rows arrived in,
so tables filled from different batches, threads or partitions merge (:meth:`merge`) into
the table one pass would have built.

Past ``cap`` rows, the rows of the keys a ``priority`` ranks lowest are evicted and counted
(for ``detector_detector_evictions_total``): a bound on memory that a flood from millions
of spoofed sources cannot break.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import ClassVar

import numpy as np
import pyarrow as pa

from kernels.xp_ops import bottom_k, distinct, group_ids, group_starts, in_sorted, mix64

MIN_FOLD = 1 << 16  # pending rows folded in at once, at least
PRE_REDUCE_MIN = 1 << 12  # an added batch this large is reduced on its own first...
PRE_REDUCE_PAUSE = 16  # ...unless that kept over 80 % of a batch: then not for the next 16
LATE_PAUSE_MAX = 256  # batches between tries to drop late rows, at most, where they were few


class KeyedTable:
    """Rows with named columns; ``keys`` group them, ``order`` ranks rows within a key (the
    first ``keep`` kept)."""

    def __init__(self, keys: tuple[str, ...], order: tuple[str, ...], keep: int = 1, cap: int = 1 << 62,
                 priority: Callable[[dict], np.ndarray] | None = None, unique: bool = False,
                 threshold: bool = False):
        self.keys, self.order, self.keep, self.cap = keys, order, keep, cap
        self.unique = unique  # rows equal in keys and order are one (the first ``keep`` distinct values)
        self.priority = priority
        # past the cap, also drop every row ranked at or below the highest-ranked one evicted,
        # then and later: the rows held are exactly those above one priority (threshold sampling;
        # ``priority`` must then rank each row on its own, as it is also applied to added rows)
        self.threshold = threshold
        self.floor: float | None = None  # with ``threshold``: the highest priority evicted
        self._held: dict[str, np.ndarray] | None = None
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0
        self._skip = 0  # batches to add before trying to reduce one on its own again
        # the keys holding ``keep`` rows (sorted :func:`key_ids`) and the first order value of
        # the last row each keeps: an added row of such a key that ranks after it is dropped
        # on sight, as the next fold would drop it (a flood's millions of rows for one target
        # past its sample are never held)
        self._full: tuple[np.ndarray, np.ndarray] | None = None
        self._full_stale = True  # (computed when first needed after the held rows changed)
        self._skip_late = 0
        self._late_pause = PRE_REDUCE_PAUSE // 2
        self.evicted = 0
        # called with the rows evicted at the cap or the floor (see :class:`Led`)
        self.on_evict: Callable[[dict], None] | None = None

    def __len__(self) -> int:
        return len(self.rows()[self.keys[0]]) if self._held is not None or self._pending else 0

    def add(self, cols: dict[str, np.ndarray]) -> None:
        n = len(cols[self.keys[0]])
        if n and self.threshold and self.floor is not None:  # below the floor: dropped on sight
            kept = self.priority(cols) > self.floor
            if not kept.all():
                self.evicted += self._refused(cols, ~kept)
                cols = {k: v[kept] for k, v in cols.items()}
                n = len(cols[self.keys[0]])
        if n and self._held is not None:
            if self._skip_late:
                self._skip_late -= 1
            else:  # adaptive: where few rows are late (keys that hardly repeat), not for a while
                cols, m = self._drop_late(cols)
                late = m <= 0.8 * n
                self._late_pause = PRE_REDUCE_PAUSE // 2 if late else min(2 * self._late_pause, LATE_PAUSE_MAX)
                self._skip_late = 0 if late else self._late_pause
                n = m
        if not n:
            return
        if n >= PRE_REDUCE_MIN and not self._skip:
            # a batch reduced on its own first: a flood's rows of one key (its target, its
            # window) collapse before they are held; where keys hardly repeat, not for a while
            reduced = self._reduce(dict(cols))  # (a copy: the reduction empties the dict it is given)
            m = len(reduced[self.keys[0]])
            self._skip = PRE_REDUCE_PAUSE if m > 0.8 * n else 0
            cols, n = reduced, m
        elif self._skip:
            self._skip -= 1
        self._append(cols, n)

    def _refused(self, cols: dict[str, np.ndarray], below: np.ndarray) -> int:
        """How many of the rows ``below`` the floor are of keys not held (a held key's later
        rows would have gone at the fold without being evictions)."""
        if self._held is None or not self.order:
            return int(below.sum())
        self._note_full()
        held = self._full[0] if self.keep == 1 and self._full is not None else np.zeros(0, np.uint64)
        return int((below & ~in_sorted(np, key_ids(cols, self.keys), held)).sum()) if len(held) else int(below.sum())

    def _drop_late(self, cols: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """``cols`` without the rows of full keys that rank after the last row those keep."""
        self._note_full()
        if self._full is None:
            return cols, len(cols[self.keys[0]])
        full, last = self._full
        h = key_ids(cols, self.keys)
        pos = np.minimum(np.searchsorted(full, h), len(full) - 1)
        late = (full[pos] == h) & (cols[self.order[0]] > last[pos])
        if late.any():
            cols = {k: v[~late] for k, v in cols.items()}
        return cols, len(cols[self.keys[0]])

    def _note_full(self) -> None:
        """Which keys of the held rows (in key order) keep ``keep`` rows, and their last, once
        per change of the held rows."""
        if not self._full_stale:
            return
        self._full, self._full_stale, cols = None, False, self._held
        if cols is None or not self.order or not len(cols[self.keys[0]]):
            return
        starts = np.flatnonzero(group_starts(np, [cols[k] for k in self.keys]))
        ends = np.append(starts[1:], len(cols[self.keys[0]]))
        full = ends - starts >= self.keep
        if not full.any():
            return
        h = key_ids({k: cols[k][starts[full]] for k in self.keys}, self.keys)
        order = np.argsort(h)
        self._full = (h[order], cols[self.order[0]][ends[full] - 1][order])

    def _append(self, cols: dict[str, np.ndarray], n: int) -> None:
        self._pending.append(cols)
        self._pending_rows += n
        held = 0 if self._held is None else len(self._held[self.keys[0]])
        if self._pending_rows >= max(MIN_FOLD, held):
            self._fold()

    def merge(self, other: KeyedTable) -> None:
        """Take ``other``'s rows (and its eviction count): the table one pass over both inputs
        would hold, up to evictions at the cap. ``other`` is not to be used afterwards."""
        self.evicted += other.evicted
        if other.floor is not None:
            self.floor = other.floor if self.floor is None else max(self.floor, other.floor)
        rows = other.rows()
        if rows:
            self._append(rows, len(rows[self.keys[0]]))
        elif self.floor is not None and self._held is not None:
            self._fold()

    def retain(self, keep: Callable[[dict], np.ndarray]) -> None:
        """Keep only the rows ``keep(rows)`` marks (the rows of keys another table still
        holds; the others leave with their key, which that table counted as evicted)."""
        rows = self.rows()
        if rows:
            kept = keep(rows)
            self._held = {k: v[kept] for k, v in rows.items()}
            self._full_stale = True

    def rows(self) -> dict[str, np.ndarray]:
        """The folded rows, sorted by key and order (empty dict when none were added)."""
        if self._pending:
            self._fold()
        return self._held or {}

    def _fold(self) -> None:
        parts = ([self._held] if self._held is not None else []) + self._pending
        self._held, self._pending, self._pending_rows = None, [], 0
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        del parts  # (held and pending columns go now, not after the sort: one copy fewer at the peak)
        cols = self._reduce(cols)
        n = len(cols[self.keys[0]])
        if n > self.cap:
            cols = self._evict(cols, n - self.cap)
        if self.threshold and self.floor is not None:
            kept = self.priority(cols) > self.floor
            if not kept.all():
                self.evicted += int(len(kept) - kept.sum())
                if self.on_evict is not None:
                    self.on_evict({k: v[~kept] for k, v in cols.items()})
                cols = {k: v[kept] for k, v in cols.items()}
        self._held = cols
        self._full_stale = True

    def _reduce(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The first ``keep`` rows of each key, in key order."""
        idx = np.lexsort([cols[k] for k in reversed(self.order)] + [cols[k] for k in reversed(self.keys)])
        cols = _take(cols, idx)
        if self.unique:
            cols = _take(cols, group_starts(np, [cols[k] for k in self.keys + self.order]))
        rank = _rank_in_key(cols, self.keys)
        if (rank >= self.keep).any():
            cols = _take(cols, rank < self.keep)
        return cols

    def _evict(self, cols: dict[str, np.ndarray], excess: int) -> dict[str, np.ndarray]:
        """Drop the ``excess`` rows ranked lowest by ``priority`` (higher is kept; ties: the
        later rows in key order go first), keeping the rows in key order."""
        rank = self.priority(cols) if self.priority is not None else np.zeros(len(cols[self.keys[0]]))
        n = len(rank)
        drop = np.lexsort((-np.arange(n), rank))[:excess]
        kept = np.ones(n, bool)
        kept[drop] = False
        self.evicted += excess
        if self.on_evict is not None:
            self.on_evict({k: v[drop] for k, v in cols.items()})
        if self.threshold:
            top = rank[drop].max()
            self.floor = top if self.floor is None else max(self.floor, top)
        return _take(cols, kept)


class KeyedSums(KeyedTable):
    """One row per key: each other column reduced over the key's rows by its operation in
    ``reduce`` (``"sum"``, ``"min"`` or ``"max"``), in any order of batches and merges (Zeek's
    SumStats reducers); or ``"sample"`` for a 2-D column of nonzero 64-bit hashes (0: none),
    which keeps each key's distinct smallest, as many as the column is wide (a bottom-k
    sample, the distinct count exact up to k). The cap and eviction are :class:`KeyedTable`'s."""

    _UFUNCS: ClassVar[dict] = {"sum": np.add, "min": np.minimum, "max": np.maximum, "sample": None}

    def __init__(self, keys: tuple[str, ...], reduce: dict[str, str], cap: int = 1 << 62,
                 priority: Callable[[dict], np.ndarray] | None = None):
        super().__init__(keys, (), 1, cap, priority)
        self.reduce = {k: self._UFUNCS[op] for k, op in reduce.items()}

    def _reduce(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cols = _take(cols, np.lexsort([cols[k] for k in reversed(self.keys)]))
        starts = np.flatnonzero(group_starts(np, [cols[k] for k in self.keys]))
        if len(starts) == len(cols[self.keys[0]]) and None not in self.reduce.values():
            return {k: cols[k] for k in (*self.keys, *self.reduce)}
        out = {k: cols[k][starts] for k in self.keys}
        out.update({k: ufunc.reduceat(cols[k], starts) if ufunc is not None else _bottom_k(cols[k], starts)
                    for k, ufunc in self.reduce.items()})
        return out


def _rank_in_key(cols: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    """For rows sorted by ``keys`` (then by order): each row's rank within its key."""
    starts = group_starts(np, [cols[k] for k in keys])
    at = np.arange(len(starts))
    return at - np.maximum.accumulate(np.where(starts, at, 0))


def _latest_out(cols: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    return -_rank_in_key(cols, keys)


def latest_first(keys: tuple[str, ...]) -> Callable[[dict], np.ndarray]:
    """An eviction priority for a table keyed by ``keys``: past its cap, each key's latest rows
    go first, over all keys (every key keeps the start of its rows). (A partial, not a lambda:
    detectors stay picklable.)"""
    return partial(_latest_out, keys=keys)


def _take(cols: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """``cols`` at ``rows``, as a new dict; ``cols`` is emptied a column at a time (each old
    column can go as soon as its new one is made, when nothing else holds it)."""
    out = {}
    for k in list(cols):
        out[k] = cols.pop(k)[rows]
    return out


def _bottom_k(mat: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For rows in runs beginning at ``starts``: each run's distinct smallest nonzero values
    of ``mat``, as many as it is wide, in a row of zeros."""
    k = mat.shape[1]
    run = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(mat))) * k)
    return bottom_k(np, run, mat.ravel(), len(starts), k)


def key_ids(rows: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    """One 64-bit id per row for its combination of ``keys`` (integer columns)."""
    h = rows[keys[0]].astype(np.uint64)
    for k in keys[1:]:
        h = mix64(np, h) ^ rows[k].astype(np.uint64)
    return h


class Led:
    """A leading table of one row per key (a :class:`KeyedSums`) and the tables that hold more
    about its keys (a pair's series, ports, largest upload): when the leader evicts keys, what
    the followers hold of them leaves at once, else a key that came back would be judged by
    its earlier evidence."""

    def __init__(self, leader: KeyedTable, *followers: KeyedTable):
        self.leader, self.followers = leader, followers
        leader.on_evict = self._drop

    def _drop(self, evicted: dict[str, np.ndarray]) -> None:
        gone = distinct(np, key_ids(evicted, self.leader.keys))
        for table in self.followers:
            table.retain(lambda r: ~in_sorted(np, key_ids(r, self.leader.keys), gone))

    def add(self, leader: dict[str, np.ndarray], *followers: dict[str, np.ndarray] | None) -> None:
        """One update: the followers' rows (None: none for that table) first, then the
        leader's, so that keys the leader evicts while taking them in leave the followers
        with this update's rows too."""
        for table, cols in zip(self.followers, followers):
            if cols is not None:
                table.add(cols)
        self.leader.add(leader)

    def rows(self) -> dict[str, np.ndarray]:
        """The leader's rows (the followers hold nothing of keys it evicted)."""
        return self.leader.rows()

    def reconcile(self) -> None:
        """After a merge (the other side's followers may hold keys this leader evicted while
        merging): the followers keep only the keys the leader holds."""
        held = distinct(np, key_ids(self.leader.rows(), self.leader.keys)) if self.leader.rows() \
            else np.zeros(0, np.uint64)
        for table in self.followers:
            table.retain(lambda r: in_sorted(np, key_ids(r, self.leader.keys), held))


def key_rows(rows: dict[str, np.ndarray], keys: tuple[str, ...], values: tuple) -> slice:
    """The rows whose columns ``keys`` equal ``values``, in rows sorted by those columns (a
    :meth:`KeyedTable.rows`)."""
    a, z = 0, len(rows[keys[0]])
    for name, v in zip(keys, values):
        col = rows[name][a:z]
        a, z = a + int(np.searchsorted(col, v, "left")), a + int(np.searchsorted(col, v, "right"))
    return slice(a, z)


def count_by(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows counted per distinct combination of ``keys`` (any order): the index of one row of
    each combination, and its count."""
    ids, first = group_ids(np, *keys)
    return first, np.bincount(ids, minlength=len(first))


class Names:
    """The text of the ids a table holds (a per-run host dictionary: tables keep 8-byte ids,
    and text is looked up only for what an alert names)."""

    def __init__(self):
        self._ids = np.zeros(0, np.uint64)
        self._text = pa.array([], pa.string())
        self._pending: list[tuple[np.ndarray, pa.Array]] = []
        self._pending_rows = 0
        self._added = self._kept = 0  # ids given since the last prune; ids kept by it

    def __len__(self) -> int:
        self._fold()
        return len(self._ids)

    def add(self, ids: np.ndarray, text: pa.Array) -> None:
        if len(ids):
            self._pending.append((ids, text))
            self._pending_rows += len(ids)
            self._added += len(ids)
            if self._pending_rows >= max(MIN_FOLD, len(self._ids)):
                self._fold()

    def merge(self, other: Names) -> None:
        other._fold()
        self.add(other._ids, other._text)

    def _fold(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate([self._ids] + [i for i, _ in self._pending])
        text = pa.concat_arrays([self._text] + [t.cast(pa.string()) for _, t in self._pending])
        self._pending, self._pending_rows = [], 0
        self._ids, first = np.unique(ids, return_index=True)
        self._text = text.take(pa.array(first))

    def keep_only(self, ids: np.ndarray) -> None:
        """Forget the text of ids not in ``ids`` (what the tables no longer hold)."""
        self._fold()
        kept = in_sorted(np, self._ids, distinct(np, ids))
        if not kept.all():
            self._ids, self._text = self._ids[kept], self._text.filter(pa.array(kept))

    def prune(self, held: Callable[[], list[np.ndarray]], at_least: int = 2 * MIN_FOLD) -> None:
        """Forget the text of ids not among ``held()`` (the id columns the tables still hold),
        once the ids given since the last prune outnumber eight times those it kept, and
        ``at_least`` (amortised: a table that holds millions prunes rarely)."""
        if self._added > max(at_least, 8 * self._kept):
            self.keep_only(np.concatenate([np.zeros(0, np.uint64), *held()]))
            self._kept, self._added = len(self._ids), 0

    def text(self, ids: np.ndarray) -> list[str | None]:
        """The text of each id; None for an id it was never given."""
        self._fold()
        if not len(self._ids):
            return [None] * len(ids)
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        text = self._text.take(pa.array(pos)).to_pylist()
        return [t if hit else None for t, hit in zip(text, (self._ids[pos] == ids).tolist())]
