"""Finding a record start in the middle of a capture, so that threads can walk stretches of it.

A stretch's walk must start on a record header, but only a walk from the file's start knows
where they are. These kernels guess: the first offset from which several headers in a row look
right. A packet's payload can hold bytes that look just as right (a capture of captures, or
bytes made to), so a guess is only ever a guess: the caller keeps a stretch's walk only if the
walk of the stretch before it ends exactly where the guess is (:mod:`detector.sources.parallel_walk`).
The tests of plausibility therefore only need to make a wrong guess rare, never impossible.
"""

from __future__ import annotations

from kernels._jit import cpu_kernel, device_fn
from kernels.bytes_be import rd16, rd32

CHAIN = 4  # headers in a row that must look right (fewer where the buffer ends first)
SPAN_S = 86_400  # seconds between the timestamps of a chain's records, at most
MAX_WIRE = 1 << 18  # a wire length above this (beyond jumbo frames and offload) is taken as noise
NG_REACH = 1 << 20  # pcapng: bytes searched for a block start before giving up, and the longest block guessed
NS = 1_000_000_000
NOT_FOUND = -1


@device_fn
def _pcap_next(buf, pos, end, fmt, sec0):
    """Where the record after a plausible pcap header at ``pos`` starts; ``end + 1`` when the
    buffer ends inside it (nothing contradicts it); -1 when it is implausible. A run of zero
    bytes would pass everything else, hence a wire length of at least one byte and a time near
    ``sec0``, a known record's."""
    little, ts_mult, max_caplen = fmt
    if pos + 16 > end:
        return end + 1
    incl = rd32(buf, pos + 8, little)
    orig = rd32(buf, pos + 12, little)
    if incl > max_caplen or orig < incl or orig == 0 or orig > MAX_WIRE:
        return -1
    if rd32(buf, pos + 4, little) >= NS // ts_mult:  # the fraction of a second
        return -1
    sec = rd32(buf, pos, little)
    if sec > sec0 + SPAN_S or sec + SPAN_S < sec0:
        return -1
    return pos + 16 + incl


@cpu_kernel
def resync_pcap(buf, start, bounds, fmt, known):
    """The first offset in ``[start, stop)`` at which :data:`CHAIN` classic pcap headers in a
    row look right (``bounds = (stop, end)``, ``fmt`` as :func:`kernels.capture_scan.walk_pcap`
    takes it), their times within :data:`SPAN_S` of the record whose header is at ``known``; or
    :data:`NOT_FOUND`. Any record that covers ``start`` ends within one largest record of it, so
    the search goes no further."""
    stop, end = bounds
    max_caplen = fmt[2]
    sec0 = rd32(buf, known, fmt[0])
    last = min(stop, end, start + 16 + max_caplen + 1)
    for p in range(start, last):
        if p + 16 > end:
            break
        q = p
        for _ in range(CHAIN):
            if q == end:
                break
            q = _pcap_next(buf, q, end, fmt, sec0)
            if q < 0 or q > end:
                break
        if q >= 0:
            return p
    return NOT_FOUND


@device_fn
def _pcapng_next(buf, pos, end, little, n_if, packet_only):
    """Where the block after a plausible pcapng block at ``pos`` starts; ``end + 1`` when the
    buffer ends before its length; -1 when it is implausible. Its length is repeated in its
    trailer, which makes a wrong guess rare; ``packet_only``: it must also be a packet block.
    A block that would run past the end is taken as implausible: any four bytes would pass."""
    if pos + 12 > end:
        return end + 1
    btype = rd32(buf, pos, little)
    if packet_only and btype != 6 and btype != 3 and btype != 2:
        return -1
    blen = rd32(buf, pos + 4, little)
    if blen < 12 or (blen & 3) != 0 or blen > NG_REACH or pos + blen > end:
        return -1
    if rd32(buf, pos + blen - 4, little) != blen:
        return -1
    if btype == 6 or btype == 2:
        if blen < 32:
            return -1
        ifid = rd32(buf, pos + 8, little) if btype == 6 else rd16(buf, pos + 8, little)
        if ifid >= n_if or rd32(buf, pos + 20, little) > blen - 32:
            return -1
    elif btype == 3 and blen < 16:
        return -1
    return pos + blen


@cpu_kernel
def resync_pcapng(buf, start, bounds, fmt, known):
    """The first offset in ``[start, stop)``, on ``start``'s 4-byte grid (blocks are multiples
    of 4 long), where a packet block and the blocks after it, :data:`CHAIN` in all, look right
    (``fmt`` as :func:`kernels.capture_scan.walk_pcapng` takes it), or :data:`NOT_FOUND`.
    ``known`` (a known block's offset) is not needed: trailers say enough."""
    stop, end = bounds
    little, n_if = fmt[0], fmt[1]
    last = min(stop, end, start + NG_REACH)
    for p in range(start, last, 4):
        if p + 12 > end:
            break
        q = _pcapng_next(buf, p, end, little, n_if, True)
        for _ in range(CHAIN - 1):
            if q < 0 or q >= end:
                break
            q = _pcapng_next(buf, q, end, little, n_if, False)
        if q >= 0:
            return p
    return NOT_FOUND
