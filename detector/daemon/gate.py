"""Which alerts go out: detectors summarise each incident over everything they have seen, and
are asked again every few seconds, so the same incident comes back each time. The gate lets it
out once, again when its severity rises, and again when it is still going on after
``renotify_s`` (Zeek's notice suppression works the same way)."""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert


def incident_key(a: Alert) -> str:
    """What makes an incident itself; ``evidence.incident`` tells apart the incidents a detector
    finds between the same endpoints (two foreign processes on one node)."""
    parts = [a.detector, a.category, a.technique, a.host, a.src_ip, a.dst_ip, a.dst_port]
    if "incident" in a.evidence:
        parts.append(a.evidence["incident"])
    return "|".join(str(x) for x in parts)


@dataclass
class Seen:
    rank: int
    ts_end_ns: int
    sent_ns: int  # when it last went out (wall clock)


class AlertGate:
    def __init__(self, renotify_s: float, max_incidents: int = 200_000):
        self.renotify_ns = int(renotify_s * 1e9)
        self.max_incidents = max_incidents
        self.seen: dict[str, Seen] = {}
        self.changed: set[str] = set()  # keys to persist
        self.forgotten: set[str] = set()  # keys to delete from the state

    def admit(self, alerts: list[Alert], now_ns: int) -> list[Alert]:
        out = []
        for a in alerts:
            key = incident_key(a)
            prev = self.seen.get(key)
            if prev is None:
                go = True
            elif a.severity_rank > prev.rank:
                go = True
            else:
                go = a.ts_end_ns > prev.ts_end_ns and now_ns - prev.sent_ns >= self.renotify_ns
            if go:
                out.append(a)
                self.seen[key] = Seen(max(a.severity_rank, prev.rank if prev else 0), a.ts_end_ns, now_ns)
                self.changed.add(key)
        if len(self.seen) > self.max_incidents:  # forget the incidents reported longest ago
            for key, _ in sorted(self.seen.items(), key=lambda kv: kv[1].sent_ns)[:len(self.seen) - self.max_incidents]:
                del self.seen[key]
                self.changed.discard(key)
                self.forgotten.add(key)
        return out

    def take_changes(self) -> tuple[list[tuple[str, int, int, int]], set[str]]:
        """What changed since the last call: rows to write and keys to delete. Call
        :meth:`keep_changes` with them when they could not be written."""
        rows = [(k, s.rank, s.ts_end_ns, s.sent_ns) for k in self.changed if (s := self.seen.get(k)) is not None]
        forgotten = set(self.forgotten)
        self.changed.clear()
        self.forgotten.clear()
        return rows, forgotten

    def keep_changes(self, rows, forgotten) -> None:
        self.changed.update(k for k, *_ in rows if k in self.seen)
        self.forgotten.update(forgotten)

    def restore(self, rows) -> None:
        for key, rank, ts_end, sent in rows:
            self.seen[key] = Seen(int(rank), int(ts_end), int(sent))
