"""Web sessions used from two places (mitm / session_hijack).

Method: a session cookie (PHPSESSID, JSESSIONID, ASP.NET_SessionId, and any cookie whose name
says session, sid, token or auth) identifies one logged-in browser. The same cookie value sent
to the same site from two client addresses is a stolen session (sidejacking), unless the
clients share a proxy. Medium; the evidence lists both clients and when each used it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector
from detector.l7.events import Events

SESSION_NAME = re.compile(r"sess|sid$|^sid|token|auth|jsessionid|phpsessid", re.IGNORECASE)


class SessionHijack(Detector):
    name = "session_hijack"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        min_value_len: int = 16

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.uses: dict[tuple[str, str, str], dict[str, int]] = {}
        self.server_of: dict[tuple[str, str, str], str] = {}

    def observe_events(self, events: Events) -> None:
        for ev in events.http:
            r = ev.request
            if r is None or not r.cookies:
                continue
            site_name = (r.host or ev.ctx.server).lower()
            for name, value in r.cookies.items():
                if len(value) < self.p.min_value_len or not SESSION_NAME.search(name):
                    continue
                key = (site_name, name, value)
                clients = self.uses.setdefault(key, {})
                clients.setdefault(ev.ctx.client, ev.ctx.ts_ns)
                self.server_of[key] = ev.ctx.server

    def finish(self) -> list[Alert]:
        out = []
        for (site_name, name, value), clients in self.uses.items():
            if len(clients) < 2 or any(c in self.site.proxies for c in clients):
                continue
            ordered = sorted(clients.items(), key=lambda kv: kv[1])
            (first, t0), (second, _) = ordered[0], ordered[1]
            server = self.server_of[(site_name, name, value)]
            out.append(Alert(t0, max(t for _, t in ordered), "mitm", "session_hijack", "medium", 0.7,
                             f"The {name} session of {first} on {site_name} was then used by {second}: "
                             "a stolen web session", self.label, self.host_for(second, first, server), second, server,
                             None, 80, "tcp",
                             {"site": site_name, "cookie": name, "value_prefix": value[:8] + "...",
                              "clients": {c: t for c, t in ordered}}))
        return out
