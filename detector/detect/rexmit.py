"""Sequence numbers resent with other bytes (mitm / rexmit_inconsistency).

Method: the tap's bounded table (:mod:`kernels.rexmit`) finds TCP segments that start at a
sequence number an earlier segment of the same direction started at, and differ in the bytes
both carry. A retransmission resends the same bytes, so two senders wrote them: a segment
injected into the connection (session hijacking, as with shijack or netwox), then the real
sender's own segment at the sequence number the injection took. A middlebox that rewrites
payloads, or a stack that sends a one-byte keep-alive probe with garbage, looks the same, so
alone this is low; with a TTL change in the same connection (another sender's hop count) the
shared corroboration step raises the pair to high (see :mod:`detector.detect.corroboration`).
One alert per connection direction; the evidence keeps the first examples.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector, widen
from detector.l7.events import Events

EXAMPLES = 8


class RexmitInconsistency(Detector):
    name = "rexmit_inconsistency"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        max_connections: int = 10_000  # connection directions followed; more are counted as dropped

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.seen: dict[tuple, dict] = {}
        self.dropped = 0

    def observe_events(self, events: Events) -> None:
        r = events.tcp_rexmit
        for j in range(len(r)):
            key = (r["src"][j], r["dst"][j], int(r["sport"][j]), int(r["dport"][j]))
            ts = int(r["ts"][j])
            s = self.seen.get(key)
            if s is None:
                if len(self.seen) >= self.p.max_connections:
                    self.dropped += 1
                    continue
                s = self.seen[key] = {"first": ts, "last": ts, "n": 0, "examples": [], "uid": r["uid"][j]}
            widen(s, ts)
            s["n"] += 1
            if len(s["examples"]) < EXAMPLES:
                s["examples"].append({"seq": int(r["seq"][j]), "ttl": int(r["ttl"][j]),
                                      "earlier_ttl": int(r["prev_ttl"][j])})

    def finish(self) -> list[Alert]:
        out = []
        for (src, dst, sport, dport), s in self.seen.items():
            ttls = {e["ttl"] for e in s["examples"]} | {e["earlier_ttl"] for e in s["examples"]}
            out.append(Alert(
                s["first"], s["last"], "mitm", "rexmit_inconsistency", "low", 0.35,
                f"{src}:{sport} resent {s['n']} sequence number(s) to {dst}:{dport} with other bytes than the first "
                "time: one of the two segments was injected by another sender, or rewritten on the way",
                self.label, self.host_for(dst, src), src, dst, sport, dport, "tcp",
                {"segments": s["n"], "examples": s["examples"], "ttls": sorted(ttls), "uid": s["uid"]}))
        return out
