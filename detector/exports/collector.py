"""A flow-export collector: NetFlow v5/v9 and IPFIX over UDP, IPFIX over TCP (RFC 7011 10.4),
for ``detector run --flow-listen``.

One thread receives; datagrams (and messages cut out of TCP streams by their length field)
wait in a queue bounded in bytes (``max_queued_bytes``): when the pipeline falls behind, what
does not fit is dropped and counted, so a flood of exports costs bounded memory. The daemon
drains the queue and decodes in bulk (:class:`~detector.exports.decode.Decoder`).
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
from collections import Counter, deque
from urllib.parse import urlsplit

log = logging.getLogger("detector.exports")
MAX_MESSAGE = 65535
ITEM_OVERHEAD = 200  # bytes a queued message costs beyond its data (the tuple, the bytes object)


def parse_listen(url: str) -> tuple[str, str, int]:
    """``udp://HOST:PORT`` or ``tcp://HOST:PORT`` (IPv6 in brackets) to (scheme, host, port);
    ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or parts.port is None or parts.path:
        raise ValueError(f"{url!r}: write udp://HOST:PORT or tcp://HOST:PORT (e.g. udp://0.0.0.0:4739)")
    return parts.scheme, parts.hostname, parts.port


class Collector:
    def __init__(self, urls: list[str], max_queued_bytes: int = 64 << 20):
        self.max_queued_bytes = max_queued_bytes
        self.queue: deque = deque()  # (data, exporter address, arrival ns)
        self.queued_bytes = 0
        self.most_queued = 0
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        self.streams: dict = {}  # TCP connection -> bytes not yet a whole message
        for url in urls:
            scheme, host, port = parse_listen(url)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if scheme == "udp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
            try:
                s.bind((host, port))
            except OSError as exc:
                s.close()
                raise OSError(f"{url}: cannot listen: {exc.strerror}") from None
            if scheme == "tcp":
                s.listen(64)
            s.setblocking(False)
            self.selector.register(s, selectors.EVENT_READ, scheme)
            self.sockets.append(s)
        self.thread: threading.Thread | None = None

    @property
    def addresses(self) -> list[tuple]:
        return [s.getsockname() for s in self.sockets]

    def start(self, stop: threading.Event) -> None:
        self.thread = threading.Thread(target=self._loop, args=(stop,), name="flow-collector", daemon=True)
        self.thread.start()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                kind = key.data
                try:
                    if kind == "udp":
                        self._datagrams(key.fileobj)
                    elif kind == "tcp":
                        conn, peer = key.fileobj.accept()
                        conn.setblocking(False)
                        self.selector.register(conn, selectors.EVENT_READ, ("stream", f"{peer[0]}:{peer[1]}/tcp"))
                        self.streams[conn] = b""
                    else:
                        self._stream(key.fileobj, kind[1])
                except OSError as exc:
                    with self.lock:
                        self.counts["receive errors"] += 1
                    log.warning("flow collector: %s", exc)

    def _datagrams(self, s: socket.socket) -> None:
        for _ in range(1024):  # a burst, then the other sockets get their turn
            try:
                data, peer = s.recvfrom(MAX_MESSAGE)
            except BlockingIOError:
                return
            self._put(data, f"{peer[0]}:{peer[1]}", False)

    def _stream(self, conn: socket.socket, peer: str) -> None:
        chunk = conn.recv(1 << 20)
        if not chunk:
            self.selector.unregister(conn)
            rest = self.streams.pop(conn, b"")
            if rest:
                with self.lock:
                    self.counts["dropped: stream ended inside a message"] += 1
            conn.close()
            return
        buf = self.streams[conn] + chunk
        off = 0
        while len(buf) - off >= 4:
            version, length = struct.unpack_from(">HH", buf, off)
            if version != 10 or length < 16:  # IPFIX over TCP only: a stream out of step is closed
                with self.lock:
                    self.counts["dropped: stream out of step"] += 1
                self.selector.unregister(conn)
                self.streams.pop(conn, None)
                conn.close()
                return
            if len(buf) - off < length:
                break
            self._put(buf[off:off + length], peer, True)
            off += length
        self.streams[conn] = buf[off:]

    def _put(self, data: bytes, session: str, stream: bool) -> None:
        cost = len(data) + ITEM_OVERHEAD
        with self.lock:
            if self.queued_bytes + cost > self.max_queued_bytes:
                self.counts["dropped: queue full"] += 1
                return
            self.queue.append((data, session, time.time_ns(), stream))
            self.queued_bytes += cost
            self.most_queued = max(self.most_queued, self.queued_bytes)
            self.counts["messages"] += 1

    def drain(self) -> list[tuple[bytes, str, int, bool]]:
        """What arrived: (message, transport session, arrival ns, over TCP)."""
        with self.lock:
            out = list(self.queue)
            self.queue.clear()
            self.queued_bytes = 0
        return out

    def counted(self) -> Counter:
        with self.lock:
            return Counter(self.counts)

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=2.0)
        for conn in list(self.streams):
            conn.close()
        for s in self.sockets:
            s.close()
        self.selector.close()
