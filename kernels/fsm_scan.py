"""The state of a finite-state machine before every element of many runs, computed in parallel.

Runs are contiguous (``heads`` marks each run's first element, ``start`` its state there).
The method is Mytkowicz, Musuvathi and Schulte's "Data-parallel finite-state machines"
(ASPLOS 2014), in chunks of :data:`CHUNK` symbols:

- a run's first chunk starts from a known state and is stepped directly, one column of all
  first chunks at a time;
- every later chunk is run from *every* state at once, giving the chunk's transition
  function; the functions of a run's chunks are composed with Hillis and Steele's doubling,
  so each chunk learns its start state; then it is stepped directly too.

Most runs are short, so most work is direct stepping. No element is visited by more than a
bounded number of steps, whatever the run's length.

Only the elements that may move the machine are stepped (in TCP: packets with SYN, FIN or
RST, and each side's first packet); every other element is taken to leave the state alone,
and :func:`states_before` says where that was wrong, so that the caller steps those too next
time. The sizes of the stepped set are planned ahead (:func:`plan`), so that the host learns
them together with everything else it reads at once.
"""

from __future__ import annotations

from typing import NamedTuple

from kernels import seg_scan as ss

CHUNK = 32


class Sizes(NamedTuple):
    """How many elements are stepped, in how many chunks, and how many chunks are not the
    first of their run."""

    stepped: int
    chunks: int
    later: int


def compact(xp, mask, k: int):
    """Indices of the ``k`` true elements of ``mask`` (``k`` known: no wait for the device)."""
    n = mask.shape[0]
    out = xp.zeros(k + 1, dtype=xp.int64)
    pos = xp.cumsum(mask) - 1
    out[xp.where(mask, pos, k)] = xp.arange(n, dtype=xp.int64)  # the spare slot takes the rest
    return out[:k]


def plan(xp, step, heads):
    """The sizes (:class:`Sizes`, as a device vector to read) of stepping ``step``'s elements
    (heads are always stepped)."""
    step = step | heads
    starts = ss.start_index(xp, heads)
    rank = ss.cumsum(xp, step.astype(xp.int64), starts) - 1
    chunk_head = step & (heads | (rank % CHUNK == 0))
    return xp.stack((step.sum(), chunk_head.sum(), (chunk_head & ~heads).sum()))


def states_before(xp, table, symbols, heads, start, step, sizes: Sizes):
    """State before each element, stepping the elements of ``step`` (and every head) and
    taking the others as leaving the state alone. Returns ``(before, wrong)``: ``wrong`` marks
    the elements not stepped that did move the state (where ``before`` is not to be trusted
    from there to the end of their run). ``table[symbol, state]`` is the next state (its last
    row, the identity); ``start`` (read at heads) is each run's first state."""
    n = symbols.shape[0]
    step = step | heads
    idx = compact(xp, step, sizes.stepped)
    b = _dense_states(xp, table, symbols[idx], heads[idx], start[idx], sizes)
    after = table[symbols[idx], b]
    last = ss.last_index(xp, step, heads)
    prev = ss.exclusive(xp, last, heads, -1)
    rank = xp.cumsum(step) - 1  # position among the stepped elements
    prev_rank = rank[xp.maximum(prev, 0)]
    before = xp.where(step, b[xp.maximum(rank, 0)] if sizes.stepped else 0,
                      after[xp.maximum(prev_rank, 0)] if sizes.stepped else 0)
    wrong = ~step & (table[symbols, before] != before)
    del n
    return before, wrong


def _dense_states(xp, table, symbols, heads, start, sizes: Sizes):
    """State before each element, every element stepped."""
    n = symbols.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=table.dtype)
    nstates = table.shape[1]
    pos = xp.arange(n, dtype=xp.int64)
    rank = pos - ss.start_index(xp, heads)
    chunk_head = heads | (rank % CHUNK == 0)
    cstart = compact(xp, chunk_head, sizes.chunks)
    clen = xp.diff(xp.concatenate((cstart, xp.asarray([n], dtype=cstart.dtype))))
    col = xp.arange(CHUNK, dtype=xp.int64)
    inside = col[None, :] < clen[:, None]
    at = xp.minimum(cstart[:, None] + col[None, :], n - 1)
    identity_symbol = table.shape[0] - 1
    sym = xp.where(inside, symbols[at], identity_symbol)
    first = heads[cstart]
    begin = xp.where(first, start[cstart], 0).astype(table.dtype)
    if sizes.later:
        later = compact(xp, ~first, sizes.later)
        # each run's first-chunk end state, then the transition function of every later chunk
        end_first = _step(xp, table, sym, begin)[1]
        fn = xp.broadcast_to(xp.arange(nstates, dtype=table.dtype), (sizes.later, nstates)).copy()
        lsym = sym[later]
        for j in range(CHUNK):
            fn = table[lsym[:, j][:, None], fn]
        # compose the functions of a run's later chunks: prefix[c] = fn[c] o ... o fn[first later]
        lhead = first[later - 1]  # the chunk before is its run's first
        prefix = _compose_prefix(xp, fn, lhead)
        # a later chunk starts from its run's first-chunk end, through the functions before it
        run_first = ss.start_index(xp, first)[later]
        entry = end_first[run_first]
        through = xp.take_along_axis(prefix, entry[:, None].astype(xp.int64), axis=1)[:, 0]
        shifted = xp.concatenate((through[:1], through[:-1]))
        begin[later] = xp.where(lhead, entry, shifted).astype(table.dtype)
    before = _step(xp, table, sym, begin)[0]
    chunk = xp.cumsum(chunk_head) - 1
    return before.reshape(-1)[chunk * CHUNK + (pos - cstart[chunk])]


def _step(xp, table, sym, begin):
    """Step chunks directly: (state before each column, state after the last)."""
    state = begin
    out = xp.empty(sym.shape, dtype=table.dtype)
    for j in range(sym.shape[1]):
        out[:, j] = state
        state = table[sym[:, j], state]
    return out, state


def _compose_prefix(xp, fn, heads):
    """Inclusive segmented prefix of function composition (later functions applied last)."""
    prefix = fn
    flags = heads.copy()
    for d in ss.DOUBLINGS:  # a fixed schedule: steps past the number of chunks are empty
        cur, prev = prefix[d:], prefix[:-d]
        composed = xp.take_along_axis(cur, prev.astype(xp.int64), axis=1)
        prefix = xp.concatenate((prefix[:d], xp.where(flags[d:, None], cur, composed)))
        flags = xp.concatenate((flags[:d], flags[d:] | flags[:-d]))
    return prefix
