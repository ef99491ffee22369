"""ICMP tunnels and covert channels (exfiltration / icmp_tunnel).

Method: echo payloads are compared with what operating systems send (the approach of
Sayadi et al., "Detection of covert channels over ICMP protocol", 2017, and of nDPI's ICMP risk):
Linux and BSD ping send 48-56 bytes of a timestamp followed by the incrementing bytes
0x10, 0x11, ...; Windows sends 32 bytes of "abcdefghijklmnopqrstuvwabcdefghi"; flood and
path-MTU tools send zeros or one repeated byte; payloads of at most ``SHORT`` bytes (a bare
timestamp, ``ping -s 8``, old ping6 and embedded stacks) are too short to tell and carry too
little to be a channel, so they count as ordinary. A pair of hosts whose echo payloads are none of
these, or carry readable text, or differ between request and reply, or add up to much data,
is reported.

Thresholds: medium when an echo payload has ``text_min`` printable characters in a row or
``odd_min`` echo messages are unlike any OS; high when the pair moved ``high_bytes`` of echo
payload or ``odd_high`` odd messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector
from detector.l7.events import Events

WINDOWS = b"abcdefghijklmnopqrstuvwabcdefghi"
SHORT = 16  # bytes: a timestamp and little else


def _longest_text(b: bytes) -> int:
    best = run = 0
    for c in b:
        run = run + 1 if 32 <= c < 127 else 0
        best = max(best, run)
    return best


def os_like(payload: bytes, size: int) -> bool:
    """A payload an operating system's ping would send (judged on its captured bytes)."""
    if size <= SHORT or len(payload) == 0:
        return True
    if payload == (WINDOWS * 4)[:len(payload)]:
        return True
    if len(set(payload)) <= 1:  # zeros or one repeated byte
        return True
    # Unix ping: an 8 or 16-byte timestamp, then 0x08/0x10/0x18... incrementing bytes
    for skip in (8, 16):
        tail = payload[skip:]
        if len(tail) >= 8 and tail == bytes((tail[0] + k) & 0xFF for k in range(len(tail))):
            return True
    return False


class _Pair:
    __slots__ = ("first", "last", "odd", "text", "bytes", "msgs", "sizes", "example", "uid")

    def __init__(self, ts):
        self.first, self.last = ts, ts
        self.odd = self.text = self.bytes = self.msgs = 0
        self.sizes: set[int] = set()
        self.example = ""
        self.uid = None


class IcmpTunnel(Detector):
    name = "icmp_tunnel"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        text_min: int = 16
        odd_min: int = 10
        odd_high: int = 100
        high_bytes: int = 65536

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.pairs: dict[tuple[str, str], _Pair] = {}

    def observe_events(self, events: Events) -> None:
        a = events.icmp
        if not len(a):
            return
        echo = np.flatnonzero(((~a["v6"]) & ((a["type"] == 8) | (a["type"] == 0)))
                              | (a["v6"] & ((a["type"] == 128) | (a["type"] == 129))))
        for j in echo.tolist():
            size = int(a["payload_len"][j])
            head = a["head"][j]
            payload = bytes(head[8:8 + min(size, len(head) - 8)])
            request = a["type"][j] in (8, 128)
            src, dst = a["src"][j], a["dst"][j]
            key = (src, dst) if request else (dst, src)
            pr = self.pairs.get(key)
            ts = int(a["ts"][j])
            if pr is None:
                pr = self.pairs[key] = _Pair(ts)
            pr.last = max(pr.last, ts)
            pr.msgs += 1
            pr.bytes += size
            if len(pr.sizes) < 64:
                pr.sizes.add(size)
            if not os_like(payload, size):
                pr.odd += 1
                text = _longest_text(payload)
                if text >= self.p.text_min:
                    pr.text += 1
                    if not pr.example:
                        pr.example = payload.decode("latin-1")
                        pr.uid = a["uid"][j]

    def finish(self) -> list[Alert]:
        p = self.p
        out = []
        for (src, dst), pr in self.pairs.items():
            if pr.text == 0 and pr.odd < p.odd_min and not (pr.odd and pr.bytes >= p.high_bytes):
                continue
            high = pr.bytes >= p.high_bytes and pr.odd > 0 or pr.odd >= p.odd_high
            score = 0.85 if high else 0.6
            why = "readable text" if pr.text else "payloads no operating system's ping sends"
            out.append(Alert(pr.first, pr.last, "exfiltration", "icmp_tunnel", "high" if high else "medium", score,
                             f"{src} exchanged {pr.msgs} ICMP echo messages with {dst} carrying {why} "
                             f"({pr.bytes} payload bytes): a covert channel over ping", self.label,
                             self.host_for(src, dst), src, dst, None, None, "icmp",
                             {"echo_messages": pr.msgs, "odd_payloads": pr.odd, "text_payloads": pr.text,
                              "payload_bytes": pr.bytes, "payload_sizes": sorted(pr.sizes)[:16],
                              "example": pr.example[:80], "uid": pr.uid}))
        return out
