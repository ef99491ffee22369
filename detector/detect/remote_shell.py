"""A command shell on a raw TCP connection (unauthorized_access / remote_shell).

Method: the shell-text markers of ``detector.l7.shell`` (Emerging Threats' ATTACK_RESPONSE
idea: what a shell prints and what intruders type to fetch the next stage) found in the first
packets of a TCP stream that no protocol inspector claimed. One alert per (client, server,
port), listing every marker seen on it, in time order. Marker packets of a data connection that
an FTP control connection announced before them are file contents, not a session.

Severity: high; medium on ports whose protocols carry command text by design or by quotation
(telnet, rsh, mail, web: ``detector.l7.shell.TEXT_SERVICE_PORTS``), where a marker is weaker
evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector, keep_earliest
from detector.l7.events import Events
from detector.l7.shell import TEXT_SERVICE_PORTS

KEEP_PACKETS = 256  # marker packets kept per session (the earliest)


class RemoteShell(Detector):
    name = "remote_shell"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        max_sessions: int = 10_000
        max_announced: int = 200_000  # FTP data endpoints remembered

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        # per (client, server, port): its marker packets, earliest first (a max-heap by time, so
        # that what is kept does not depend on the order events arrive in)
        self.sessions: dict[tuple[str, str, int], list] = {}
        self.announced: dict[tuple[str, int], int] = {}  # FTP data endpoint -> earliest announcement
        self.last: dict[tuple[str, str, int], int] = {}  # latest marker packet (beyond those kept)

    def observe_events(self, events: Events) -> None:
        for a in events.ftp_data:
            for endpoint in a.endpoints:
                if endpoint in self.announced or len(self.announced) < self.p.max_announced:
                    self.announced[endpoint] = min(self.announced.get(endpoint, a.ctx.ts_ns), a.ctx.ts_ns)
        for ev in events.shell:
            c = ev.ctx
            port = c.dport if c.from_orig else c.sport
            key = (c.client, c.server, port)
            heap = self.sessions.get(key)
            if heap is None:
                if len(self.sessions) >= self.p.max_sessions:
                    continue
                heap = self.sessions[key] = []
            self.last[key] = max(self.last.get(key, c.ts_ns), c.ts_ns)
            keep_earliest(heap, (-c.ts_ns, c.uid, ev.marker, ev.text, c.src, c.dst, c.sport, c.dport, c.from_orig),
                          KEEP_PACKETS)

    def _file_transfer(self, ts: int, src: str, dst: str, sport: int, dport: int) -> bool:
        """A data connection an FTP control connection announced before this packet: the
        file it carries may quote any command."""
        return any(self.announced.get(e, ts + 1) <= ts for e in ((dst, dport), (src, sport)))

    def finish(self) -> list[Alert]:
        out = []
        for (client, server, port), heap in self.sessions.items():
            seen = sorted((-t, uid, marker, text, src, dst, sport, dport, from_orig)
                          for t, uid, marker, text, src, dst, sport, dport, from_orig in heap)
            seen = [x for x in seen if not self._file_transfer(x[0], x[4], x[5], x[6], x[7])]
            if not seen:
                continue
            markers: dict[str, dict] = {}
            for _, _, marker, text, src, *_ in seen:
                if marker not in markers and len(markers) < 16:
                    markers[marker] = {"text": text, "sent_by": src}
            first_ts, uid, *_, sport, dport, from_orig = seen[0]
            weak = port in TEXT_SERVICE_PORTS
            first_name, first = next(iter(markers.items()))
            end = max(seen[-1][0], self.last[(client, server, port)]) if len(heap) == KEEP_PACKETS else seen[-1][0]
            out.append(Alert(first_ts, end, "unauthorized_access", "remote_shell",
                             "medium" if weak else "high", 0.6 if weak else 0.85,
                             f"a command shell runs over the connection from {client} to {server}:{port}: "
                             f"{', '.join(markers)} (e.g. '{first['text'][:60]}' sent by {first['sent_by']})",
                             self.label, self.host_for(server, client), client, server,
                             sport if from_orig else dport, port, "tcp",
                             {"markers": markers, "uid": uid, "first_marker": first_name}))
        return out
