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

:func:`states_before_sparse` first leaves out the elements that almost never move the
machine (in TCP, packets without SYN, FIN or RST once both sides have spoken), assumes they
leave the state alone, then checks that assumption for each of them and repeats with the
ones that did move it.
"""

from __future__ import annotations

from kernels import seg_scan as ss

CHUNK = 32
ROUNDS = 4  # sparse rounds before every element of the runs still changing is stepped


def states_before(xp, table, symbols, heads, start):
    """State before each element. ``table[symbol, state]`` is the next state; ``start`` (one
    per element, read at heads) is the state at each run's head."""
    n = symbols.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=table.dtype)
    nstates = table.shape[1]
    pos = xp.arange(n, dtype=xp.int64)
    rank = pos - ss.start_index(xp, heads)
    chunk_head = heads | (rank % CHUNK == 0)
    cstart = xp.flatnonzero(chunk_head)
    clen = xp.diff(xp.concatenate((cstart, xp.asarray([n], dtype=cstart.dtype))))
    col = xp.arange(CHUNK, dtype=xp.int64)
    inside = col[None, :] < clen[:, None]
    at = xp.minimum(cstart[:, None] + col[None, :], n - 1)
    identity_symbol = table.shape[0] - 1
    sym = xp.where(inside, symbols[at], identity_symbol)
    first = heads[cstart]
    begin = xp.zeros(cstart.shape[0], dtype=table.dtype)
    begin[first] = start[cstart[first]].astype(table.dtype)
    later = xp.flatnonzero(~first)
    if later.shape[0]:
        # the end state of each run's first chunk, then each later chunk's transition function
        end_first = _step(xp, table, sym[first], begin[first])[1]
        fn = xp.broadcast_to(xp.arange(nstates, dtype=table.dtype), (later.shape[0], nstates)).copy()
        lsym = sym[later]
        for j in range(CHUNK):
            fn = table[lsym[:, j][:, None], fn]
        # compose the functions of a run's later chunks: prefix[c] = fn[c] o ... o fn[first later]
        run_of_chunk = xp.cumsum(first) - 1
        lrun = run_of_chunk[later]
        lhead = xp.concatenate((xp.ones(1, dtype=bool), lrun[1:] != lrun[:-1]))
        prefix = _compose_prefix(xp, fn, lhead)
        # start of a later chunk: the run's first-chunk end, through the functions before it
        entry = end_first[lrun]  # first chunks are numbered like runs
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
    d = 1
    m = fn.shape[0]
    while d < m:
        cur, prev = prefix[d:], prefix[:-d]
        composed = xp.take_along_axis(cur, prev.astype(xp.int64), axis=1)
        keep = flags[d:]
        prefix = xp.concatenate((prefix[:d], xp.where(keep[:, None], cur, composed)))
        flags = xp.concatenate((flags[:d], flags[d:] | flags[:-d]))
        d *= 2
    return prefix


def states_before_sparse(xp, table, symbols, heads, start, moving):
    """As :func:`states_before`, stepping only the elements in ``moving`` (heads always) and
    taking every other element as leaving the state alone; each assumption is checked, and the
    elements that did move the state join the stepped ones. After :data:`ROUNDS` rounds the
    runs still failing are stepped element by element (by chunks, as above)."""
    n = symbols.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=table.dtype)
    step = moving | heads
    run = xp.cumsum(heads) - 1
    for rnd in range(ROUNDS + 1):
        idx = xp.flatnonzero(step)
        b = states_before(xp, table, symbols[idx], heads[idx], start[idx])
        after = table[symbols[idx], b]
        # every element's state before: the state after the last stepped element before it
        last = ss.last_index(xp, step, heads)
        prev = ss.exclusive(xp, last, heads, -1)
        rank = xp.cumsum(step) - 1  # position among the stepped elements
        before = xp.where(step, b[xp.maximum(rank, 0)], after[xp.maximum(rank[xp.maximum(prev, 0)], 0)])
        wrong = ~step & (table[symbols, before] != before)
        if not bool(wrong.any()):
            return before
        if rnd == ROUNDS - 1:  # last try: step every element of the runs that still fail
            bad_runs = xp.zeros(int(run[-1]) + 1, dtype=bool)
            bad_runs[run[wrong]] = True
            step = step | bad_runs[run]
        else:
            step = step | wrong
    return before
