"""HTTP/1.x message heads: request line, Host, body size, and the headers detectors use
(User-Agent, Content-Type, Cookie, Upgrade)."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE")


@dataclass
class HttpRequest:
    method: str
    uri: str
    version: str
    host: str | None = None
    content_length: int | None = None
    content_type: str | None = None
    user_agent: str | None = None
    upgrade: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)


@dataclass
class HttpResponse:
    version: str
    status: int
    content_length: int | None = None
    upgrade: str | None = None


def _headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return out


def _head(data: bytes) -> list[bytes] | None:
    end = data.find(b"\r\n\r\n")
    block = data[:end] if end >= 0 else data[:8192]
    lines = block.split(b"\r\n")
    return lines if lines and lines[0] else None


def parse_request(data: bytes) -> HttpRequest | None:
    lines = _head(data)
    if not lines:
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] not in METHODS or not parts[2].startswith(b"HTTP/"):
        return None
    h = _headers(lines[1:])
    cookies = {}
    for item in h.get("cookie", "").split(";"):
        k, sep, v = item.strip().partition("=")
        if sep:
            cookies[k] = v
    try:
        length = int(h["content-length"]) if "content-length" in h else None
    except ValueError:
        length = None
    return HttpRequest(parts[0].decode(), parts[1].decode("latin-1"), parts[2].decode("latin-1"),
                       h.get("host"), length, h.get("content-type"), h.get("user-agent"),
                       h.get("upgrade", "").lower() or None, cookies)


def parse_response(data: bytes) -> HttpResponse | None:
    lines = _head(data)
    if not lines or not lines[0].startswith(b"HTTP/"):
        return None
    parts = lines[0].split(b" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        return None
    h = _headers(lines[1:])
    try:
        length = int(h["content-length"]) if "content-length" in h else None
    except ValueError:
        length = None
    return HttpResponse(parts[0].decode("latin-1"), status, length, h.get("upgrade", "").lower() or None)
