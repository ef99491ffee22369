"""Capture sources: files (pcap, pcapng, compressed), folders and stdin, as record batches."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from detector.errors import CaptureError
from detector.sources.batch import RawBatch
from detector.sources.bytesource import ByteSource, open_source
from detector.sources.erf import ErfReader, looks_like_erf
from detector.sources.parallel_walk import WalkPlan
from detector.sources.pcap import MAGIC_KUZNETZOV, MAGIC_NS, MAGIC_US, PcapReader
from detector.sources.pcapng import SHB, PcapngReader

__all__ = ["RawBatch", "CaptureError", "open_capture", "expand_inputs", "CAPTURE_SUFFIXES"]

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp", ".erf", ".pcap.gz", ".pcapng.gz", ".cap.gz", ".erf.gz",
                    ".pcap.bz2", ".pcap.xz", ".pcapng.bz2", ".pcapng.xz")


def open_capture(path: str, batch_size: int = 65536, mapped: bool = True, walk: WalkPlan | None = None):
    """Open one capture and return its reader (``PcapReader`` or ``PcapngReader``);
    ``mapped=False``: see :func:`~detector.sources.bytesource.open_source`; ``walk``: walk a
    large mapped file's records on threads (:mod:`~detector.sources.parallel_walk`)."""
    src = open_source(path, mapped)
    try:
        return _reader_for(src, batch_size, walk)
    except BaseException:
        src.close()
        raise


def _reader_for(src: ByteSource, batch_size: int, walk: WalkPlan | None):
    pos = src.ensure(0, 4)
    if pos < 0:
        src.raise_pending()
        if src.end == 0:
            raise CaptureError(src.path, 0, "empty file: no capture header")
        raise CaptureError(src.path, 0, f"file is {src.end} bytes long, too short for any capture header")
    head = bytes(src.buf[pos:pos + 4])
    le, be = struct.unpack("<I", head)[0], struct.unpack(">I", head)[0]
    if le == SHB:
        return PcapngReader(src, batch_size, walk)
    if {le, be} & {MAGIC_US, MAGIC_NS, MAGIC_KUZNETZOV}:
        return PcapReader(src, batch_size, walk)
    if looks_like_erf(src):
        return ErfReader(src, batch_size)
    at = src.ensure(0, 16)
    first = bytes(src.buf[at:at + 16]) if at >= 0 else head
    raise CaptureError(src.path, 0, f"unknown capture format (first bytes {first.hex(' ')}): not a pcap, pcapng "
                                    f"or ERF file (magic 0x{be:08x})")


def _is_capture_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(CAPTURE_SUFFIXES) or ".pcap" in low


def first_timestamp(path: str) -> int | None:
    """Timestamp (ns) of the first record, or None when the file has none or is unreadable."""
    try:
        reader = open_capture(path, batch_size=1)
    except CaptureError:
        return None
    try:
        for batch in reader.batches():
            return int(batch.ts_ns[0])
    except CaptureError:
        return None
    finally:
        reader.src.close()
    return None


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Files to read, in order. A folder becomes its captures (recursively) in order of their
    first packet's time; unreadable ones sort last so that reading them reports the error."""
    out: list[str] = []
    for path in paths:
        if path != "-" and os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in sorted(files) if _is_capture_name(f))
            keyed = [(first_timestamp(f), f) for f in found]
            keyed.sort(key=lambda kv: (kv[0] is None, kv[0] or 0, kv[1]))
            out.extend(f for _, f in keyed)
        else:
            out.append(path)
    return out
