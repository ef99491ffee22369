"""Walking a mapped capture's records on several threads, with exactly the sequential result.

Each record's header says where the next one starts, so the plain walk is sequential. Here the
bytes ahead are cut into one stretch ("chunk") per thread, a window of them at a time. Chunk 0
starts where the walk stands, on a record; every other chunk starts at a guess: the first
offset from which several headers in a row look right (:mod:`kernels.capture_resync`). Each
thread walks its chunk into rows of its own, up to the first record that starts in the next
chunk. A guess is kept only where the walks meet: the walk of chunk ``k``, itself kept, ended
exactly at chunk ``k + 1``'s guess. Each record's length giving the next, from that offset on
they are one and the same walk. Where they do not meet (the guess fell in a payload that looks
like headers, or none was found), chunk ``k + 1`` is walked again from where chunk ``k``
ended, on the reader's thread. What stops a kept walk early (a corrupt record, the end of the
data, a pcapng block that is not a packet) stops the sequential walk at the same offset with
the same code.

The kept rows are then copied into the reader's batches, by the threads again when there are
many, so the batches are the sequential walk's to the byte: their sizes, their first record's
offset, and the error after the last one. Only files whose bytes stay put (mapped) are walked
this way: the threads read up to a window ahead of the reader.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from detector.errors import CaptureError
from detector.sources.batch import RecordArrays
from detector.sources.bytesource import refill_or_end
from kernels import capture_scan as cs
from kernels.capture_resync import NOT_FOUND

log = logging.getLogger("detector.sources")

CHUNK_BYTES = 8 << 20  # the most bytes one thread walks in one go (fewer when records are small)
CHUNK_ROWS = 1 << 17  # rows a thread walks into in one go: 4.5 MB of record arrays
MIN_CHUNK_BYTES = 64 << 10  # below this a window's threads cost more than they save: the tail is walked alone
MIN_PARALLEL_BYTES = 64 << 20  # smaller files keep the sequential walk: threads would not pay
MIN_COPY_ROWS = 1 << 15  # fewer rows than this are copied into a batch by the reader's thread alone
ROOM = 0.9  # a chunk's expected rows over its rows: a chunk that runs out ends its window early
BATCH_COLUMNS = 5  # the columns a batch shows: all but where each header starts
STRIKES = 4  # windows in a row with no guess kept before the rest of the file is walked sequentially


@dataclass(frozen=True)
class WalkPlan:
    """How a reader walks its records: ``threads`` (1: the sequential walk); the most bytes and
    rows a thread walks in one go; the smallest mapped file, chunk and copy worth threads."""

    threads: int = 1
    chunk_bytes: int = CHUNK_BYTES
    chunk_rows: int = CHUNK_ROWS
    min_file_bytes: int = MIN_PARALLEL_BYTES
    min_chunk_bytes: int = MIN_CHUNK_BYTES
    min_copy_rows: int = MIN_COPY_ROWS

    def __post_init__(self):
        if self.threads < 1 or self.chunk_rows < 1 or not 64 <= self.min_chunk_bytes <= self.chunk_bytes:
            raise ValueError(f"unusable walk plan {self}")


class RecordFormat(Protocol):
    """What a reader tells the walk about its format (once per scan call: a pcapng interface
    block can change it). ``align``: record starts lie on this grid from a known one.
    ``walk``: :func:`kernels.capture_scan.walk_pcap`'s contract, with ``last_ts`` the time a
    Simple Packet Block gets. ``resync``: a guessed record start in ``[start, bounds[0])``;
    ``known`` is the offset of a record's header before it, for plausible timestamps."""

    align: int

    def walk(self, buf, pos: int, bounds: tuple, last_ts: int, out: tuple, first: int, limit: int) -> tuple: ...

    def resync(self, buf, start: int, bounds: tuple, known: int) -> int: ...


class SequentialWalk:
    """Today's walk: one kernel call per batch, on the reader's thread."""

    stats = None

    def scan(self, fmt: RecordFormat, buf, pos: int, end: int, rec: RecordArrays, last_ts: int) -> tuple:
        """Records from ``pos`` into ``rec``: ``(count, new_pos, code)``, as the kernels give them;
        ``last_ts``: the time of the record before ``pos``."""
        n, pos, code, _ = fmt.walk(buf, pos, (cs.NO_STOP, end), last_ts, rec.columns, 0, rec.capacity)
        return n, pos, code

    def close(self) -> None:
        pass


@dataclass
class WalkStats:
    windows: int = 0  # windows walked on threads
    kept: int = 0  # chunks whose guessed start the walk before them met
    rewalked: int = 0  # chunks walked again from where the walk before them ended
    alone: int = 0  # scan calls that walked on the reader's thread (a file's tail, after strikes)


class ParallelWalk:
    """Records walked a window of ``plan.threads`` chunks at a time, one thread per chunk.
    :meth:`scan` has :meth:`SequentialWalk.scan`'s contract. The rows walked ahead stay valid
    while the reader calls :meth:`scan` again from where the last call ended; any other offset
    drops them."""

    def __init__(self, plan: WalkPlan):
        self.plan = plan
        self.stats = WalkStats()
        self._stage = RecordArrays(plan.threads * plan.chunk_rows)
        self._pool: ThreadPoolExecutor | None = None
        self._kept: deque[list[int]] = deque()  # [first row, rows] of the stage, in walk order
        self._next = -1  # where the walk goes on after them
        self._code: int | None = None  # what ended the walk there, when something did
        self._bytes = 0  # bytes and records walked so far, for the bytes per record
        self._records = 0
        self._strikes = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _cursor(self) -> int:
        return int(self._stage.head[self._kept[0][0]]) if self._kept else self._next

    def scan(self, fmt: RecordFormat, buf, pos: int, end: int, rec: RecordArrays, last_ts: int) -> tuple:
        if pos < 0 or pos != self._cursor():
            self._kept.clear()
            self._next, self._code = pos, None
        n = 0
        while n < rec.capacity:
            if self._kept:
                n += self._copy(rec, n)
                continue
            if self._code is not None:
                code, self._code, pos, self._next = self._code, None, self._next, -1
                return n, pos, code
            if not self._worth_threads(end):  # a short tail, or guesses that keep failing
                self.stats.alone += 1
                m, pos, code, _ = fmt.walk(buf, self._next, (cs.NO_STOP, end), _last(rec, n, last_ts),
                                           rec.columns, n, rec.capacity - n)
                self._next = -1
                return n + m, pos, code
            self._window(fmt, (buf, end), _last(rec, n, last_ts))
        return n, self._cursor(), cs.SCAN_FULL

    def _worth_threads(self, end: int) -> bool:
        return self._strikes < STRIKES and end - self._next >= self.plan.threads * self.plan.min_chunk_bytes

    def _run(self, fn, jobs: list) -> list:
        """``fn(*job)`` for each job: the first on this thread, the others on the pool; their
        results in order."""
        if len(jobs) > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.plan.threads - 1, thread_name_prefix="walk")
        futures = [self._pool.submit(fn, *job) for job in jobs[1:]]
        try:
            first = fn(*jobs[0])
        finally:
            _wait_all(futures)
        return [first] + [f.result() for f in futures]

    def _window(self, fmt: RecordFormat, data: tuple, last_ts: int) -> None:
        """Walk the next window on the threads and keep what the sequential walk would give."""
        plan, (_, end), pos = self.plan, data, self._next
        density = self._bytes / self._records if self._records else 64
        chunk = max(plan.min_chunk_bytes, min(plan.chunk_bytes, int(plan.chunk_rows * density * ROOM)))
        span = min(end - pos, plan.threads * chunk)
        step = span // plan.threads // fmt.align * fmt.align
        starts = [pos + k * step for k in range(plan.threads)]
        stops = starts[1:] + [pos + span if pos + span < end else cs.NO_STOP]
        jobs = [(fmt, data, (pos, pos), (stops[0], last_ts), 0)]
        jobs += [(fmt, data, (pos, starts[k]), (stops[k], 0), k * plan.chunk_rows) for k in range(1, plan.threads)]
        walks = self._run(self._guess_and_walk, jobs)
        self.stats.windows += 1
        self._keep(fmt, data, walks, stops, last_ts)
        self._bytes += self._next - pos

    def _guess_and_walk(self, fmt: RecordFormat, data: tuple, known_start: tuple, stop_ts: tuple, first: int):
        """One chunk: ``(guessed start, its walk's result)``; chunk 0's start is known. A chunk
        after it starts with no Simple Packet Block's time known (corrected when kept)."""
        (buf, end), (known, start), (stop, last_ts) = data, known_start, stop_ts
        guess = start if first == 0 else fmt.resync(buf, start, (stop, end), known)
        if guess == NOT_FOUND:
            return guess, None
        return guess, fmt.walk(buf, guess, (stop, end), last_ts, self._stage.columns, first, self.plan.chunk_rows)

    def _keep(self, fmt: RecordFormat, data: tuple, walks: list, stops: list, last_ts: int) -> None:
        """Keep the chunks' rows in order, each chunk's only where the walk before it met its
        guess, else walked again from where that walk ended."""
        (buf, end), cap, ts = data, self.plan.chunk_rows, self._stage.ts_ns
        at, kept = walks[0][0], 0
        for k, (guess, result) in enumerate(walks):
            first = k * cap
            if guess != at or result is None:
                result = fmt.walk(buf, at, (stops[k], end), last_ts, self._stage.columns, first, cap)
                self.stats.rewalked += 1
            elif k:
                kept += 1
                if result[3]:  # Simple Packet Blocks before the chunk's first timestamp: the walk before's
                    ts[first:first + result[3]] = last_ts
            n, at, code, _ = result
            if n:
                self._kept.append([first, n])
                self._records += n
                last_ts = int(ts[first + n - 1])
            if code != cs.SCAN_STOP:
                # the end of the data, a block for the reader, an error; or a chunk out of rows
                # (SCAN_FULL): the next window goes on from there
                self._code = None if code == cs.SCAN_FULL else code
                break
        self._next = at
        self.stats.kept += kept
        judged = len(walks) > 1 and (walks[0][1][2] == cs.SCAN_STOP)
        self._strikes = self._strikes + 1 if judged and not kept else 0
        if self._strikes == STRIKES:
            log.debug("record walk: no chunk start guessed right in %d windows; walking on one thread", STRIKES)

    def _copy(self, rec: RecordArrays, n: int) -> int:
        """Copy kept rows into ``rec`` from row ``n``, on the threads when there are many;
        returns how many."""
        pieces, row = [], n  # (first stage row, first batch row, rows)
        while self._kept and row < rec.capacity:
            seg = self._kept[0]
            m = min(seg[1], rec.capacity - row)
            pieces.append((seg[0], row, m))
            row += m
            if m == seg[1]:
                self._kept.popleft()
            else:
                seg[0], seg[1] = seg[0] + m, seg[1] - m
        parts = self.plan.threads if row - n >= self.plan.min_copy_rows else 1
        columns = (self._stage.columns[:BATCH_COLUMNS], rec.columns[:BATCH_COLUMNS])
        self._run(_copy_rows, [(columns, group) for group in _split(pieces, row - n, parts)])
        return row - n


def _copy_rows(columns: tuple, pieces: list) -> None:
    """Copy ``(from row, to row, rows)`` pieces of the stage's columns into a batch's (NumPy lets
    go of the GIL for copies this large)."""
    src, dst = columns
    for a, b, m in pieces:
        for s, d in zip(src, dst):
            d[b:b + m] = s[a:a + m]


def _split(pieces: list, rows: int, parts: int) -> list:
    """``pieces`` cut into ``parts`` runs of about equal rows (a piece may be cut anywhere)."""
    share = -(-rows // parts)
    groups, group, room = [], [], share
    for a, b, m in pieces:
        while m:
            take = min(m, room)
            group.append((a, b, take))
            a, b, m, room = a + take, b + take, m - take, room - take
            if room == 0:
                groups.append(group)
                group, room = [], share
    if group:
        groups.append(group)
    return groups


def _last(rec: RecordArrays, n: int, last_ts: int) -> int:
    """The time of the last record walked: what a Simple Packet Block after it gets."""
    return int(rec.ts_ns[n - 1]) if n else last_ts


def _wait_all(futures) -> None:
    """Wait for every thread's part, through a Ctrl-C too (raised again afterwards): the reader
    may close the mapping they read once this returns."""
    interrupted = None
    while True:
        try:
            wait(futures)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def make_walk(src, plan: WalkPlan | None):
    """The walk for a reader of ``src``: on threads only for a large mapped file (its bytes stay
    put, so threads may read ahead of the reader), else the sequential walk."""
    if plan is None or plan.threads <= 1 or not getattr(src, "stable", False) or src.end < plan.min_file_bytes:
        return SequentialWalk()
    return ParallelWalk(plan)


def walked_batches(reader):
    """A pcap or pcapng reader's batches, its records located by the walk its plan asks for
    (``reader._batches(walk)``), the walk closed when they end."""
    walk = make_walk(reader.src, reader.walk_plan)
    reader.walk_stats = walk.stats
    try:
        yield from reader._batches(walk)
    finally:
        walk.close()


def record_batches(reader, walk, records, pos: int):
    """Batches of the records ``walk`` finds from ``pos`` (``records``: the format's walker).
    The reader counts what its format counts in ``counted(rec, n)``, and names an error code
    in ``error_detail(code, pos)``; a record cut by the end of the file is an error too."""
    src, rec = reader.src, reader.records_ring.current
    while True:
        start = pos
        n, pos, code = walk.scan(records, src.buf, pos, src.end, rec, 0)
        if n:
            reader.records += n
            reader.counted(rec, n)
            yield rec.batch(src.buf, n, reader.path, src.base + start)
            src.release(pos)
            rec = reader.records_ring.handed_out()
        if code == cs.SCAN_FULL:
            continue
        if code == cs.SCAN_NEED_MORE:
            pos = refill_or_end(src, reader.path, pos)
            if pos is None:
                return
            continue
        raise CaptureError(reader.path, src.base + pos, reader.error_detail(code, pos))
