"""Tunnels that carry interactive access out of a site (exfiltration).

- ``reverse_ssh``: in SSH the server sends its host key during the key exchange. When the host
  that *opened* the TCP connection is the one that sends the host key, the SSH roles are
  reversed: an inside host is offering a shell to the outside, the classic reverse tunnel
  (``ssh -R`` style back-connects, as in Zeek's ``ssh-reverse-connection`` test).
- ``protocol_tunnel``: an SSH identification string found inside another protocol's stream
  (after an HTTP request, inside WebSocket frames): SSH wrapped to pass proxies and filters
  (wstunnel, websocat, chisel).
"""

from __future__ import annotations

from detector.alerts import Alert
from detector.detect.base import Detector
from detector.l7.events import Events


class Tunnels(Detector):
    name = "tunnels"
    version = "1"

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.alerts: dict[tuple, Alert] = {}

    def observe_events(self, events: Events) -> None:
        for ev in events.ssh:
            if not ev.key_sent_by_orig:
                continue
            c = ev.ctx
            key = ("reverse", c.client, c.server)
            if key in self.alerts:
                continue
            self.alerts[key] = Alert(
                c.ts_ns, c.ts_ns, "exfiltration", "reverse_ssh", "high", 0.8,
                f"{c.client} opened a connection to {c.server}:{c.dport if c.from_orig else c.sport} and then acted "
                f"as the SSH server (it sent the host key): a reverse SSH tunnel offering access back into the site",
                self.label, self.host_for(c.client, c.server), c.client, c.server,
                c.sport if c.from_orig else c.dport, c.dport if c.from_orig else c.sport, "tcp",
                {"client_banner": ev.client_banner, "server_banner": ev.server_banner, "host_key": ev.host_key,
                 "host_key_type": ev.host_key_type, "uid": c.uid})
        for t in events.tunnels:
            c = t.ctx
            key = ("tunnel", c.client, c.server, t.inner, t.outer)
            if key in self.alerts:
                continue
            port = c.dport if c.from_orig else c.sport
            self.alerts[key] = Alert(
                c.ts_ns, c.ts_ns, "exfiltration", "protocol_tunnel", "medium", 0.7,
                f"{t.inner.upper()} runs inside {t.outer} between {c.client} and {c.server}:{port} "
                f"(found '{t.evidence[:40]}' {t.offset} bytes into a packet): a tunnel around the site's filters",
                self.label, self.host_for(c.client, c.server), c.client, c.server, None, port, "tcp",
                {"inner": t.inner, "outer": t.outer, "evidence": t.evidence, "uid": c.uid})

    def finish(self) -> list[Alert]:
        return list(self.alerts.values())
