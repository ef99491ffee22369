"""Changed SSH host keys and TLS certificates (mitm / ssh_hostkey_change, tls_cert_change,
tls_cert_renewed, tls_self_signed).

Method: trust on first use, as SSH's known_hosts and certificate pinning do. The first host key
seen for a server and port (or the first leaf certificate for a TLS server name), or a pin from
``site.ssh_host_keys`` / ``site.tls_certs``, is pinned; a different one later is reported.

- SSH host key change: high (critical against a configured pin).
- TLS certificate change: high when the new certificate is self-signed or comes from another
  issuer (``tls_cert_change``); low when the same issuer re-issued it (``tls_cert_renewed``: a
  routine renewal, which corroborates nothing).
- A self-signed server certificate: low, since RDP, VNC, VPN, STARTTLS mail and appliances
  present one every day; medium for a server the site names in ``[site]`` (a role: gateway,
  DNS, DTN, login node, proxy; or a pinned TLS name). A changed pin or a certificate that does
  not cover the name asked for raises it (:mod:`detector.detect.corroboration`).
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector
from detector.l7.events import Events


class KeyPins(Detector):
    name = "key_pins"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        report_self_signed: bool = True

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.ssh: dict[str, tuple[str, bool]] = {}
        self.tls: dict[str, tuple[str, str, bool]] = {}
        for pin in self.site.cfg.ssh_host_keys:
            k, _, v = pin.partition("=")
            self.ssh[k.strip()] = (v.strip(), True)
        for pin in self.site.cfg.tls_certs:
            k, _, v = pin.partition("=")
            self.tls[k.strip().lower()] = (v.strip().lower(), "", True)
        self.alerts: dict[tuple, Alert] = {}  # one per (server, new key): repeats only count
        self.self_signed: dict[str, Alert] = {}

    def learned(self) -> dict:
        return {"ssh": {k: v[0] for k, v in self.ssh.items() if not v[1]},
                "tls": {k: [v[0], v[1]] for k, v in self.tls.items() if not v[2]}}

    def seed(self, pins: dict) -> None:
        for k, v in dict(pins.get("ssh", {})).items():
            self.ssh.setdefault(str(k), (str(v), False))
        for k, v in dict(pins.get("tls", {})).items():
            self.tls.setdefault(str(k), (str(v[0]), str(v[1]), False))

    def _add(self, key: tuple, alert: Alert) -> None:
        seen = self.alerts.get(key)
        if seen is None:
            alert.evidence["connections"] = 1
            self.alerts[key] = alert
        else:
            seen.evidence["connections"] += 1
            seen.ts_end_ns = max(seen.ts_end_ns, alert.ts_ns)

    def observe_events(self, events: Events) -> None:
        for ev in events.ssh:
            if not ev.host_key:
                continue
            c = ev.ctx
            server = c.client if ev.key_sent_by_orig else c.server
            port = (c.sport if c.from_orig else c.dport) if ev.key_sent_by_orig else (c.dport if c.from_orig else c.sport)
            key = f"{server}:{port}"
            pinned = self.ssh.setdefault(key, (ev.host_key, False))
            if pinned[0] != ev.host_key:
                critical = pinned[1]
                self._add(("ssh", key, ev.host_key), Alert(
                    c.ts_ns, c.ts_ns, "mitm", "ssh_hostkey_change", "critical" if critical else "high",
                    0.97 if critical else 0.85,
                    f"SSH server {key} presented host key {ev.host_key} ({ev.host_key_type}) instead of the "
                    f"{'configured' if critical else 'previously seen'} {pinned[0]}: a man in the middle, or a "
                    "reinstalled server", self.label, self.host_for(server, c.client), c.client, server, None, port,
                    "tcp", {"server": key, "new_key": ev.host_key, "new_key_type": ev.host_key_type,
                            "pinned_key": pinned[0], "pin_from_config": critical, "uid": c.uid}))
        for ev in events.tls:
            if not ev.certificates:
                continue
            c = ev.ctx
            leaf = ev.certificates[0]
            name = (ev.client_hello.sni if ev.client_hello and ev.client_hello.sni else
                    f"{c.server}:{c.dport if c.from_orig else c.sport}").lower()
            port = c.dport if c.from_orig else c.sport
            if leaf.self_signed and self.p.report_self_signed and name not in self.self_signed:
                named = self.tls.get(name, ("", "", False))[2] or self.site.has_role(c.server)
                self.self_signed[name] = Alert(
                    c.ts_ns, c.ts_ns, "mitm", "tls_self_signed", "medium" if named else "low", 0.55 if named else 0.3,
                    f"{c.server}:{port} ({name}) presented a self-signed certificate ({leaf.subject or 'no subject'}): "
                    "clients cannot verify whom they talk to, as with an intercepting proxy", self.label,
                    self.host_for(c.client, c.server), c.client, c.server, None, port, "tcp",
                    {"server_name": name, "subject": leaf.subject, "issuer": leaf.issuer, "sha256": leaf.sha256,
                     "site_server": named, "uid": c.uid})
            pinned = self.tls.setdefault(name, (leaf.sha256, leaf.issuer, False))
            if pinned[0] != leaf.sha256:
                other_issuer = pinned[1] and pinned[1] != leaf.issuer
                critical = pinned[2]
                if critical:
                    technique, severity, score = "tls_cert_change", "critical", 0.95
                elif leaf.self_signed or other_issuer:
                    technique, severity, score = "tls_cert_change", "high", 0.8
                else:
                    technique, severity, score = "tls_cert_renewed", "low", 0.3
                self._add(("tls", name, leaf.sha256), Alert(
                    c.ts_ns, c.ts_ns, "mitm", technique, severity, score,
                    f"{name} presented certificate {leaf.sha256[:16]}... issued by {leaf.issuer or '?'} instead of "
                    f"{pinned[0][:16]}...{' from ' + pinned[1] if pinned[1] else ''}", self.label,
                    self.host_for(c.client, c.server), c.client, c.server, None, port, "tcp",
                    {"server_name": name, "new_sha256": leaf.sha256, "new_issuer": leaf.issuer,
                     "new_self_signed": leaf.self_signed, "pinned_sha256": pinned[0], "pinned_issuer": pinned[1],
                     "uid": c.uid}))

    def finish(self) -> list[Alert]:
        return list(self.alerts.values()) + list(self.self_signed.values())
