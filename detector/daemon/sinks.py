"""Where the daemon's alerts go: a JSONL file (rotated by size, reopened on SIGHUP for
logrotate), stdout, syslog (RFC 5424 over UDP, TCP or a unix socket) and a webhook (each alert
POSTed as JSON, retried with backoff from a thread of its own, so a slow receiver never holds
up detection). A sink that fails raises :class:`SinkError`; the service keeps the alerts in its
outbox and tries again."""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

from detector import __version__
from detector.errors import DetectorError

log = logging.getLogger("detector.daemon")

# RFC 5424 severities: critical -> 2 (crit), high -> 3 (err), medium -> 4 (warning), low -> 5 (notice)
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5}
SYSLOG_FACILITY = 13  # log audit


class SinkError(DetectorError):
    def __init__(self, sink: str, message: str):
        self.sink = sink
        super().__init__(f"{sink}: {message}")


class Sink:
    name = "sink"

    def send(self, alerts: list[dict], lines: list[str]) -> None:
        """Deliver ``alerts`` (as dicts of the alert schema; ``lines`` are their JSON text)."""
        raise NotImplementedError

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    """Appends one JSON object per line; fsyncs each delivery so that what was delivered survives
    a crash. Beyond ``max_bytes`` the file is renamed ``.1`` (older ones shift, ``keep`` are kept)."""

    def __init__(self, path: str, max_bytes: int = 0, keep: int = 5):
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.name = f"jsonl {path}"
        self._fh = None
        self._open()

    def _open(self) -> None:
        try:
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise SinkError(self.name, f"cannot open: {exc.strerror}") from None

    def send(self, alerts, lines) -> None:
        if self._fh is None:
            self._open()
        try:
            self._fh.write("".join(x + "\n" for x in lines))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise SinkError(self.name, f"write failed: {exc.strerror}") from None
        if self.max_bytes and self._fh.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._fh.close()
        self._fh = None
        try:
            for k in range(self.keep - 1, 0, -1):
                if os.path.exists(f"{self.path}.{k}"):
                    os.replace(f"{self.path}.{k}", f"{self.path}.{k + 1}")
            os.replace(self.path, f"{self.path}.1")
        except OSError as exc:  # the alerts were written; the next delivery appends to the same file
            log.error("%s: cannot rotate: %s", self.name, exc.strerror)
        self._open()

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class StdoutSink(Sink):
    name = "stdout"

    def send(self, alerts, lines) -> None:
        try:
            sys.stdout.write("".join(x + "\n" for x in lines))
            sys.stdout.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SinkError(self.name, f"write failed: {exc.strerror or exc}") from None


def rfc5424(a: dict, line: str, hostname: str) -> bytes:
    """One RFC 5424 message: the alert's JSON as the message, its category as MSGID, and its
    category, technique and severity as structured data (32473 is the example enterprise
    number of RFC 5612)."""
    pri = SYSLOG_FACILITY * 8 + SYSLOG_SEVERITY.get(a["severity"], 5)
    ts = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    sd = f'[detector@32473 category="{a["category"]}" technique="{a["technique"]}" severity="{a["severity"]}"]'
    return f"<{pri}>1 {ts} {hostname} detector {os.getpid()} {a['category']} {sd} {line}".encode()


class SyslogSink(Sink):
    def __init__(self, url: str):
        self.url = url
        self.name = f"syslog {url}"
        self.hostname = socket.gethostname() or "-"
        self._sock = None

    def _connect(self) -> socket.socket:
        scheme, rest = self.url.split("://", 1)
        try:
            if scheme == "unix":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                s.connect(rest)
            else:
                host, port = rest.rsplit(":", 1)
                host = host.strip("[]")
                kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
                s = socket.create_connection((host, int(port)), timeout=5) if kind == socket.SOCK_STREAM \
                    else socket.socket(socket.getaddrinfo(host, int(port))[0][0], kind)
                if kind == socket.SOCK_DGRAM:
                    s.connect((host, int(port)))
            return s
        except OSError as exc:
            raise SinkError(self.name, f"cannot connect: {exc}") from None

    def send(self, alerts, lines) -> None:
        if self._sock is None:
            self._sock = self._connect()
        tcp = self.url.startswith("tcp://")
        try:
            for a, line in zip(alerts, lines):
                msg = rfc5424(a, line, self.hostname)
                # TCP: octet-counting framing (RFC 6587), so a message may hold any byte
                if tcp:
                    self._sock.sendall(f"{len(msg)} ".encode() + msg)
                else:
                    self._sock.send(msg)
        except OSError as exc:
            self.close()
            raise SinkError(self.name, f"send failed: {exc}") from None

    def reopen(self) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WebhookSink(Sink):
    """POSTs each alert as a JSON body. Delivery runs in a thread with a bounded queue: a
    receiver that is down is retried with exponential backoff (1 s, 2 s, ... up to 60 s)
    ``retries`` times; alerts that still fail, or that find the queue full, are dropped and
    counted (the JSONL file and syslog keep them)."""

    def __init__(self, url: str, retries: int = 5, queue_size: int = 10_000, timeout_s: float = 5.0):
        self.url, self.retries, self.timeout_s = url, retries, timeout_s
        self.name = f"webhook {url}"
        self.dropped = 0
        self.delivered = 0
        self._q: queue.Queue = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def send(self, alerts, lines) -> None:
        for line in lines:
            try:
                self._q.put_nowait(line)
            except queue.Full:
                self.dropped += 1

    def _post(self, body: str) -> None:
        req = urllib.request.Request(self.url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": f"detector/{__version__}"})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            if resp.status >= 300:
                raise urllib.error.HTTPError(self.url, resp.status, "unexpected status", resp.headers, None)

    def _run(self) -> None:
        while not self._stop.is_set() or not self._q.empty():
            try:
                body = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            delay = 1.0
            for attempt in range(self.retries + 1):
                try:
                    self._post(body)
                    self.delivered += 1
                    break
                except (OSError, urllib.error.URLError, ValueError) as exc:
                    if attempt == self.retries or self._stop.is_set():
                        self.dropped += 1
                        log.warning("%s: alert dropped after %d attempt(s): %s", self.name, attempt + 1, exc)
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 60.0)

    def close(self, wait_s: float = 5.0) -> None:
        deadline = time.monotonic() + wait_s
        while not self._q.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))


def open_sinks(d) -> list[Sink]:
    """The sinks a :class:`~detector.daemon.settings.DaemonConfig` asks for."""
    sinks: list[Sink] = []
    if d.alerts:
        sinks.append(JsonlSink(d.alerts, int(d.alerts_max_mb * 1024 * 1024), d.alerts_keep))
    if d.stdout:
        sinks.append(StdoutSink())
    if d.syslog:
        sinks.append(SyslogSink(d.syslog))
    if d.webhook:
        sinks.append(WebhookSink(d.webhook, d.webhook_retries))
    return sinks
