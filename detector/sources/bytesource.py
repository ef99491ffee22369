"""Windows of capture bytes in bounded memory.

A reader sees ``buf[0:end]``, which holds the file's bytes ``[base, base + end)``. Regular
files are memory-mapped whole (no copy; pages already walked are dropped from the process with
``madvise`` so a 50 GB capture does not grow the resident set). Compressed files, pipes and
stdin are read in chunks into one reusable buffer; :meth:`refill` keeps the unread tail and
reads more behind it.
"""

from __future__ import annotations

import bz2
import lzma
import mmap
import os
import zlib
from collections import deque
from typing import BinaryIO

import numpy as np

from detector.errors import CaptureError

CHUNK = 8 << 20  # bytes read per refill for streamed inputs
RELEASE_EVERY = 32 << 20  # mapped bytes walked between two madvise(DONTNEED) calls
MAX_WINDOW = 1 << 30  # a single record or block larger than this is corrupt

MAGIC_GZIP = b"\x1f\x8b"
MAGIC_BZ2 = b"BZh"
MAGIC_XZ = b"\xfd7zXZ\x00"


class ByteSource:
    """Common interface. ``buf``, ``end``, ``base`` and ``eof`` describe the current window."""

    path: str
    buf: np.ndarray
    end: int
    base: int
    eof: bool
    error: CaptureError | None = None  # why the stream ended early, raised once its data is read
    # True when bytes once in ``buf`` stay where they are until released: batches handed out
    # stay valid while the reader goes on (refilling a streamed window moves them)
    stable = False

    def raise_pending(self) -> None:
        """At the end of the data: raise the error that cut the stream short, if any."""
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def refill(self, keep_from: int) -> int:
        """Drop ``buf[:keep_from]``, read more. Returns where ``keep_from`` now is in ``buf``."""
        raise NotImplementedError

    def release(self, upto: int) -> None:
        """Tell the source that ``buf[:upto]`` will not be read again."""

    def hold(self, count: int) -> None:
        """Keep the bytes of the last ``count`` release points: a reader running ahead calls
        :meth:`release` for batches its consumer may still be reading."""

    def ensure(self, pos: int, n: int) -> int:
        """Make ``buf[pos:pos+n]`` available; returns the (possibly moved) ``pos``, or -1 at EOF."""
        while pos + n > self.end:
            if self.eof:
                return -1
            pos = self.refill(pos)
        return pos

    def consumed(self) -> int:
        """Bytes of the underlying file read so far (compressed bytes for compressed input)."""
        return self.base + self.end

    def close(self) -> None:
        pass


class MappedSource(ByteSource):
    """A regular file, mapped whole and read-only."""

    stable = True

    def __init__(self, path: str):
        self.path = path
        self._held: deque[int] = deque()
        self._hold = 0
        self.base = 0
        self.eof = True
        self._released = 0
        self._fh = open(path, "rb")
        size = os.fstat(self._fh.fileno()).st_size
        self.end = size
        if size == 0:
            self._mm = None
            self.buf = np.zeros(0, dtype=np.uint8)
        else:
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            if hasattr(mmap, "MADV_SEQUENTIAL"):
                self._mm.madvise(mmap.MADV_SEQUENTIAL)
            self.buf = np.frombuffer(self._mm, dtype=np.uint8)
        self._walked = 0

    def refill(self, keep_from: int) -> int:
        return keep_from

    def consumed(self) -> int:
        return self._walked

    def hold(self, count: int) -> None:
        self._hold = count

    def release(self, upto: int) -> None:
        self._walked = upto
        if self._hold:
            self._held.append(upto)
            if len(self._held) <= self._hold:
                return
            upto = self._held.popleft()
        if self._mm is None or upto - self._released < RELEASE_EVERY or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        stop = (upto // page) * page
        if stop > self._released:
            self._mm.madvise(mmap.MADV_DONTNEED, self._released, stop - self._released)
            self._released = stop

    def close(self) -> None:
        # the numpy view must go before the map can close; a reader still running finds no bytes
        self.buf = np.zeros(0, dtype=np.uint8)
        self.end = 0
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a batch still references the map; the GC will close it
                pass
        self._fh.close()


class StreamSource(ByteSource):
    """Any readable binary stream: decompressors, pipes, stdin."""

    def __init__(self, stream: BinaryIO, path: str, raw: BinaryIO | None = None, kind: str = "stream"):
        self.path = path
        self._stream = stream
        self._raw = raw  # the compressed file underneath, for progress
        self._kind = kind
        self.buf = np.empty(CHUNK, dtype=np.uint8)
        self.base = 0
        self.end = 0
        self.eof = False
        self._fill()

    def _read_into(self, view: memoryview) -> int:
        """Bytes read; 0 at the end. A damaged stream ends the data and leaves ``error`` set,
        so what was decompressed before the damage is still processed."""
        try:
            return self._stream.readinto(view)
        except EOFError as exc:
            self.error = CaptureError(
                self.path, self.consumed(),
                f"{self._kind} stream ends before its end marker: the file was cut short ({exc})")
        except (OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
            self.error = CaptureError(self.path, self.consumed(), f"{self._kind} data is corrupt: {exc}")
        return 0

    def _fill(self) -> None:
        while self.end < len(self.buf):
            got = self._read_into(memoryview(self.buf)[self.end:])
            if not got:
                self.eof = True
                return
            self.end += got

    def refill(self, keep_from: int) -> int:
        tail = self.end - keep_from
        if keep_from == 0 and self.end == len(self.buf):
            if len(self.buf) * 2 > MAX_WINDOW:
                raise CaptureError(self.path, self.base, "a single record is larger than 1 GiB (corrupt)")
            bigger = np.empty(len(self.buf) * 2, dtype=np.uint8)
            bigger[:tail] = self.buf[:tail]
            self.buf = bigger
        elif keep_from:
            self.buf[:tail] = self.buf[keep_from:self.end]
        self.base += keep_from
        self.end = tail
        self._fill()
        return 0

    def consumed(self) -> int:
        if self._raw is not None:
            try:
                return self._raw.tell()
            except (OSError, ValueError):
                pass
        return self.base + self.end

    def close(self) -> None:
        self._stream.close()
        if self._raw is not None:
            self._raw.close()


class DecompressStream:
    """A readable stream of decompressed bytes (gzip, bzip2 or xz; several members in a row
    are fine). Unlike ``gzip.GzipFile``, it hands out everything decompressed before a damaged
    or cut stream, and only then raises ``EOFError`` (cut) or ``ValueError`` (corrupt)."""

    IN_CHUNK = 1 << 20

    def __init__(self, raw: BinaryIO, factory):
        self._raw = raw
        self._factory = factory
        self._dec = factory()
        self._out = bytearray()
        self._in_member = False
        self._done = False

    def _more(self) -> bool:
        chunk = self._raw.read(self.IN_CHUNK)
        if not chunk:
            if self._in_member:
                raise EOFError("compressed data ends in the middle of a stream")
            self._done = True
            return False
        while chunk:
            try:
                self._out += self._dec.decompress(chunk)
            except (zlib.error, OSError, lzma.LZMAError) as exc:
                raise ValueError(str(exc)) from None
            self._in_member = not self._dec.eof
            if self._dec.eof:  # a member ended: the rest of the chunk starts the next one
                chunk = self._dec.unused_data
                self._dec = self._factory()
                self._in_member = bool(chunk)
            else:
                chunk = b""
        return True

    def readinto(self, view: memoryview) -> int:
        while len(self._out) < len(view) and not self._done:
            try:
                if not self._more():
                    break
            except (EOFError, ValueError):
                if self._out:  # hand out what we have; the error comes with the next read
                    break
                raise
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        del self._out[:n]
        return n

    def close(self) -> None:
        self._raw.close()


def _decompressor(head: bytes, fh: BinaryIO):
    if head.startswith(MAGIC_GZIP):
        return DecompressStream(fh, lambda: zlib.decompressobj(wbits=31)), "gzip"
    if head.startswith(MAGIC_BZ2):
        return DecompressStream(fh, bz2.BZ2Decompressor), "bzip2"
    if head.startswith(MAGIC_XZ):
        return DecompressStream(fh, lzma.LZMADecompressor), "xz"
    return None, None


def open_source(path: str, mapped: bool = True) -> ByteSource:
    """Open a capture file, a compressed capture, or ``-`` for stdin. ``mapped=False`` reads a
    plain file with read() instead of mapping it: a file another program may truncate (a
    ring buffer reusing its oldest file) would kill a process that maps it (SIGBUS)."""
    if path == "-":
        import sys

        stdin = sys.stdin.buffer
        head = stdin.peek(6)[:6] if hasattr(stdin, "peek") else b""
        stream, kind = _decompressor(head, stdin)
        if stream is not None:
            return StreamSource(stream, "<stdin>", kind=kind)
        return StreamSource(stdin, "<stdin>")
    try:
        fh = open(path, "rb")
        is_regular = os.path.isfile(path)
    except OSError as exc:
        raise CaptureError(path, None, f"cannot open: {exc.strerror}") from None
    if not is_regular:  # a FIFO or device: peek without consuming
        head = fh.peek(6)[:6]
        stream, kind = _decompressor(head, fh)
        return StreamSource(stream or fh, path, kind=kind or "stream")
    head = fh.read(6)
    fh.seek(0)
    stream, kind = _decompressor(head, fh)
    if stream is not None:
        return StreamSource(stream, path, raw=fh, kind=kind)
    if not mapped:
        return StreamSource(fh, path, kind="file")
    fh.close()
    return MappedSource(path)


def refill_or_end(src: ByteSource, path: str, pos: int, what: str = "record", part: str = "it") -> int | None:
    """A walk stopped at a ``what`` not complete in the window: where to go on from (the window
    refilled), or None at the end of the input; one cut by the end of the file is an error
    naming its offset."""
    if not src.eof:
        return src.refill(pos)
    src.raise_pending()
    if pos < src.end:
        raise CaptureError(path, src.base + pos, f"truncated final {what}: only {src.end - pos} bytes of {part} "
                                                 f"are in the file (the capture was cut short)")
    return None
