"""Two threads, one flow table: the decoding thread hands rows to the accounting thread through
a progress counter, a block at a time, inside the kernels.

The decoder publishes how many rows of the batch are decoded after each block of ``block``
rows (a release store); the accountant follows (acquire loads) and accounts what is published,
a block or so behind, so a block's columns are still in a cache when they are read. Handing
over through Python (a future per chunk) cost tens of microseconds a chunk, which kept chunks
at 16k rows (2.5 MB of columns, more than a core's L2) and the accounting thread's reads out
of cache. Measured on the 2-core VM, 2M packets, decoding and accounting alone: 1.39-1.56x one
thread against 1.21-1.55x for the Python hand-over, best of 7 (medians 1.44-1.54x against
1.26-1.46x); the whole ``detector flows`` run after start-up (records built and written too),
interleaved, 8 and 14 rounds: 0-5 % faster than the Python hand-over (best 0.384 against 0.379
s and 0.458 against 0.480 s; medians 0.453 against 0.459 s and 0.522 against 0.547 s).

``progress`` is an int64 array: ``[PUBLISHED]`` rows decoded and published, ``[STOP]`` set (a
plain store, by the caller) to ask the accountant to return: the decoder was interrupted.
"""

from __future__ import annotations

from kernels import flowtable as kft
from kernels._jit import cpu_kernel, load_acquire, store_release
from kernels.decode import decode_records
from kernels.packet_columns import FRAG_IS_FRAGMENT

PUBLISHED = 0
STOP = 8  # apart from PUBLISHED: the accountant polls it only while waiting; the caller sets it when it stops early
PROGRESS_WORDS = 16

WAITING = 100  # account_published: nothing new was published for a while (yield the core, call again)
STOPPED = 101  # account_published: the caller asked it to stop
SPINS = 4096  # polls before WAITING (about 10 us), against 100-200 us to decode a block: a waiting
# accountant returns to Python a few times a block, where the record builder may take the GIL


@cpu_kernel
def decode_publishing(buf, off, caplen, wirelen, ts_ns, link, start, stop, cols, pkt_hash, tally, block, progress):
    """Decode records ``start..stop`` a block at a time (as :func:`decode_records`), publishing
    each block once decoded. Returns ``(published, decoded)``: ``(stop, stop)``, or, at the
    first block holding an IP fragment, that block decoded but not published (its fragments may
    need a datagram's first fragment that comes later in the batch, so the caller decodes the
    rest and matches them before publishing)."""
    lo = start
    while lo < stop:
        hi = min(lo + block, stop)
        decode_records(buf, off, caplen, wirelen, ts_ns, link, lo, hi, cols, pkt_hash, tally)
        for i in range(lo, hi):
            if cols.frag[i] & FRAG_IS_FRAGMENT:
                return lo, hi
        store_release(progress, PUBLISHED, hi)
        lo = hi
    return stop, stop


@cpu_kernel
def publish(progress, upto):
    """Rows up to ``upto`` are ready (written before this, by the calling thread)."""
    store_release(progress, PUBLISHED, upto)


@cpu_kernel
def account_published(progress, cols, pkt_hash, rows, start, stop, likely, cfg,
                      keys, fhash, st, fs, hist, used, slots, free, meta, okeys, ost, ofs, ohist, oreason):
    """Account rows ``start..stop`` of the batch (``rows`` empty) as they are published, with
    :func:`kernels.flowtable.update_flows`. Returns ``(next_row, code)``: its codes, or WAITING
    or STOPPED."""
    j = start
    while j < stop:
        ready = load_acquire(progress, PUBLISHED)
        spins = 0
        while ready <= j:
            if load_acquire(progress, STOP) != 0:
                return j, STOPPED
            spins += 1
            if spins > SPINS:
                return j, WAITING
            ready = load_acquire(progress, PUBLISHED)
        j, code = kft.update_flows(cols, pkt_hash, rows, j, min(ready, stop), likely, cfg, keys, fhash, st, fs, hist,
                                   used, slots, free, meta, okeys, ost, ofs, ohist, oreason)
        if code != kft.DONE:
            return j, code
    return stop, kft.DONE
