"""A command shell on a raw TCP connection (unauthorized_access / remote_shell).

Method: the shell-text markers of ``detector.l7.shell`` (Emerging Threats' ATTACK_RESPONSE
idea: what a shell prints and what intruders type to fetch the next stage) found in the first
packets of a TCP stream that no protocol inspector claimed. One alert per (client, server,
port), listing every marker seen on it.

Severity: high; medium on ports whose protocols carry command text by design or by quotation
(telnet, rsh, mail, web: ``detector.l7.shell.TEXT_SERVICE_PORTS``), where a marker is weaker
evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector
from detector.l7.events import Events
from detector.l7.shell import TEXT_SERVICE_PORTS


class RemoteShell(Detector):
    name = "remote_shell"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        max_sessions: int = 10_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.sessions: dict[tuple[str, str, int], dict] = {}

    def observe_events(self, events: Events) -> None:
        for ev in events.shell:
            c = ev.ctx
            port = c.dport if c.from_orig else c.sport
            key = (c.client, c.server, port)
            s = self.sessions.get(key)
            if s is None:
                if len(self.sessions) >= self.p.max_sessions:
                    continue
                s = self.sessions[key] = {"first": c.ts_ns, "last": c.ts_ns, "markers": {}, "uid": c.uid,
                                          "client_port": c.sport if c.from_orig else c.dport}
            s["last"] = max(s["last"], c.ts_ns)
            if ev.marker not in s["markers"] and len(s["markers"]) < 16:
                s["markers"][ev.marker] = {"text": ev.text, "sent_by": c.src}

    def finish(self) -> list[Alert]:
        out = []
        for (client, server, port), s in self.sessions.items():
            weak = port in TEXT_SERVICE_PORTS
            markers = s["markers"]
            first_name, first = next(iter(markers.items()))
            out.append(Alert(s["first"], s["last"], "unauthorized_access", "remote_shell",
                             "medium" if weak else "high", 0.6 if weak else 0.85,
                             f"a command shell runs over the connection from {client} to {server}:{port}: "
                             f"{', '.join(markers)} (e.g. '{first['text'][:60]}' sent by {first['sent_by']})",
                             self.label, self.host_for(server, client), client, server, s["client_port"], port, "tcp",
                             {"markers": markers, "uid": s["uid"], "first_marker": first_name}))
        return out
