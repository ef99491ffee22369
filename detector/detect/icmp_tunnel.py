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

Payloads are judged as rows of a byte matrix, one NumPy step per byte position. State is
columnar and mergeable (issue 21): per pair (as 64-bit address ids) the counts and time span
(:class:`KeyedSums`), its 16 smallest payload sizes and its earliest text payload; at most
``max_pairs`` pairs, past which those with the fewest odd messages, then messages, are evicted
and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detector.alerts import Alert
from detector.detect.address_columns import string_ids
from detector.detect.base import Detector
from detector.detect.keyed_table import KeyedSums, KeyedTable, Led, Names, key_rows
from detector.l7.events import Events

WINDOWS = b"abcdefghijklmnopqrstuvwabcdefghi"
SHORT = 16  # bytes: a timestamp and little else
SIZES = 16  # payload sizes named per pair (the smallest)
PAIR = ("src", "dst")


def _prefix_all(match: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Whether each row of ``match`` is all True over its first ``lengths`` columns (at least one)."""
    if not match.shape[1]:
        return np.zeros(len(lengths), bool)
    upto = np.logical_and.accumulate(match, axis=1)
    return (lengths > 0) & upto[np.arange(len(lengths)), np.clip(lengths - 1, 0, match.shape[1] - 1)]


def os_like_rows(payload: np.ndarray, lengths: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """For each row of ``payload`` (its first ``lengths`` bytes captured, of ``sizes`` sent):
    whether an operating system's ping would send it."""
    width = payload.shape[1]
    windows = np.frombuffer((WINDOWS * (width // len(WINDOWS) + 1))[:width], np.uint8)
    ok = (sizes <= SHORT) | (lengths == 0)
    ok |= _prefix_all(payload == windows, lengths)
    ok |= _prefix_all(payload == payload[:, :1], lengths)  # zeros or one repeated byte
    # Unix ping: an 8 or 16-byte timestamp, then 0x08/0x10/0x18... incrementing bytes
    for skip in (8, 16):
        tail = payload[:, skip:].astype(np.int64)
        steps = ((tail - tail[:, :1] - np.arange(tail.shape[1])) & 0xFF) == 0
        ok |= (lengths - skip >= 8) & _prefix_all(steps, lengths - skip)
    return ok


def os_like(payload: bytes, size: int) -> bool:
    """A payload an operating system's ping would send (judged on its captured bytes)."""
    row = np.frombuffer(payload, np.uint8).reshape(1, -1)
    return bool(os_like_rows(row, np.array([len(payload)]), np.array([size]))[0])


def longest_text(payload: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The longest run of printable ASCII in each row's first ``lengths`` bytes."""
    best = run = np.zeros(len(lengths), np.int64)
    for j in range(payload.shape[1]):
        c = payload[:, j]
        run = np.where((c >= 32) & (c < 127) & (j < lengths), run + 1, 0)
        best = np.maximum(best, run)
    return best


def _fewest_odd_out(cols: dict) -> np.ndarray:
    """Past ``max_pairs``, the pairs with fewest odd messages, then messages, go first."""
    return cols["odd"] << 32 | np.minimum(cols["msgs"], (1 << 32) - 1)


class IcmpTunnel(Detector):
    name = "icmp_tunnel"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        text_min: int = 16
        odd_min: int = 10
        odd_high: int = 100
        high_bytes: int = 65536
        max_pairs: int = 100_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.pairs = KeyedSums(PAIR, {"first": "min", "last": "max", "msgs": "sum", "bytes": "sum", "odd": "sum",
                                      "text": "sum"}, self.p.max_pairs, _fewest_odd_out)
        self.sizes = KeyedTable(PAIR, ("size",), SIZES, unique=True)
        self.example = KeyedTable(PAIR, ("ts", "example"), 1)  # the earliest text payload
        self.led = Led(self.pairs, self.sizes, self.example)
        self.text = Names()  # addresses, examples and uids

    @property
    def evictions(self) -> int:
        return self.pairs.evicted

    def merge(self, other: IcmpTunnel) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        for mine, theirs in ((self.pairs, other.pairs), (self.sizes, other.sizes), (self.example, other.example)):
            mine.merge(theirs)
        self.led.reconcile()
        self.text.merge(other.text)

    def observe_events(self, events: Events) -> None:
        a = events.icmp
        if not len(a):
            return
        t, v6 = a["type"], a["v6"]
        echo = np.flatnonzero((~v6 & ((t == 8) | (t == 0))) | (v6 & ((t == 128) | (t == 129))))
        if not len(echo):
            return
        size = a["payload_len"][echo].astype(np.int64)
        payload = a["head"][echo, 8:]
        lengths = np.clip(np.minimum(size, payload.shape[1]), 0, None)
        odd = ~os_like_rows(payload, lengths, size)
        text = odd & (longest_text(payload, lengths) >= self.p.text_min)
        request = np.isin(t[echo], (8, 128))
        src, dst = (pa.array(a[k][echo].tolist() if not isinstance(a[k], pa.Array) else a[k].take(pa.array(echo)),
                             pa.string()) for k in ("src", "dst"))
        sid, did = string_ids(src), string_ids(dst)
        self.text.add(sid, src)
        self.text.add(did, dst)
        ts = a["ts"][echo].astype(np.int64)
        one = np.ones(len(echo), np.int64)
        key = {"src": np.where(request, sid, did), "dst": np.where(request, did, sid)}  # (the requester first)
        rows = np.flatnonzero(text)
        example = None
        if len(rows):
            examples = pa.array([bytes(payload[j, :lengths[j]]).decode("latin-1") for j in rows.tolist()], pa.string())
            uids = pa.array([str(u) for u in np.asarray(a["uid"], dtype=object)[echo[rows]]], pa.string())
            ex, uid = string_ids(examples), string_ids(uids)
            self.text.add(ex, examples)
            self.text.add(uid, uids)
            example = {"src": key["src"][rows], "dst": key["dst"][rows], "ts": ts[rows], "example": ex, "uid": uid}
        self.led.add({**key, "first": ts, "last": ts, "msgs": one, "bytes": size, "odd": odd.astype(np.int64),
                      "text": text.astype(np.int64)}, {**key, "size": size}, example)
        self.text.prune(self._held_ids)

    def _held_ids(self) -> list[np.ndarray]:
        P, E = self.pairs.rows(), self.example.rows()
        return ([P["src"], P["dst"]] if P else []) + ([E["example"], E["uid"]] if E else [])

    def finish(self) -> list[Alert]:
        p = self.p
        P = self.led.rows()
        if not P:
            return []
        odd, text, nbytes = P["odd"], P["text"], P["bytes"]
        found = np.flatnonzero((text > 0) | (odd >= p.odd_min) | ((odd > 0) & (nbytes >= p.high_bytes)))
        S, E = self.sizes.rows(), self.example.rows()
        out = []
        for c in found.tolist():
            pair = (P["src"][c], P["dst"][c])
            src, dst = self.text.text(np.array(pair, np.uint64))
            e = key_rows(E, PAIR, pair) if E else slice(0, 0)
            example, uid = self.text.text(np.array([E["example"][e.start], E["uid"][e.start]], np.uint64)) \
                if e.stop > e.start else ("", None)
            n_odd, n_text, n_bytes, msgs = int(odd[c]), int(text[c]), int(nbytes[c]), int(P["msgs"][c])
            high = n_bytes >= p.high_bytes and n_odd > 0 or n_odd >= p.odd_high
            why = "readable text" if n_text else "payloads no operating system's ping sends"
            out.append(Alert(int(P["first"][c]), int(P["last"][c]), "exfiltration", "icmp_tunnel",
                             "high" if high else "medium", 0.85 if high else 0.6,
                             f"{src} exchanged {msgs} ICMP echo messages with {dst} carrying {why} "
                             f"({n_bytes} payload bytes): a covert channel over ping", self.label,
                             self.host_for(src, dst), src, dst, None, None, "icmp",
                             {"echo_messages": msgs, "odd_payloads": n_odd, "text_payloads": n_text,
                              "payload_bytes": n_bytes, "payload_sizes": S["size"][key_rows(S, PAIR, pair)].tolist(),
                              "example": example[:80], "uid": uid}))
        return out
