"""Server certificates that do not fit the connection (mitm / tls_name_mismatch,
tls_name_misconfigured, tls_expired, tls_untrusted_issuer).

Method: where the certificate is visible (TLS 1.2 and older), each distinct chain a server sends
is checked once with :mod:`detector.detect.x509_check`:

- **name**: the client's SNI (a DNS name) is not covered by the certificate's subjectAltName (or
  CN), with RFC 6125's wildcard rules. A TLS interception proxy's substitute certificate looks
  like this when it is not made for the name, and so does a connection sent to the wrong server
  (DNS spoofing). Medium alone: the evidence names both readings. A certificate for another name
  of the same registered domain (``example.org`` asked as ``www.example.org``) is the owner's
  own certificate on a misconfigured server, not a substitute: ``tls_name_misconfigured``, low.
- **time**: the certificate had expired, or was not yet valid, at the capture time. Low alone
  (appliances and test servers run on expired certificates).
- **issuer**: a certificate not self-signed whose chain leads to no CA of the system bundle or
  of ``[site] internal_cas``. Low alone (internal CAs are common; name yours).

Self-signed certificates are :mod:`detector.detect.key_pins`' (``tls_self_signed``). A weak
finding next to a strong one of the same server is raised and merged by the shared rule
(:mod:`detector.detect.corroboration`). One alert per server name (or address), certificate and
finding; connections that repeat it are counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect import x509_check as xc
from detector.detect.base import Detector, registered_domain
from detector.l7.events import Events

CHAIN_CACHE = 4096  # distinct chains whose verdict is remembered


class TlsCerts(Detector):
    name = "tls_certs"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        check_issuer: bool = True
        max_findings: int = 10_000  # alerts held; more are counted as dropped

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.anchors: xc.Anchors | None = None  # loaded on the first certificate
        self.verdicts: OrderedDict[tuple, tuple] = OrderedDict()  # (chain hashes) -> (names, validity, trusted)
        self.found: dict[tuple, Alert] = {}
        self.dropped = 0

    def _verdict(self, certs):
        key = tuple(c.sha256 for c in certs)
        hit = self.verdicts.get(key)
        if hit is None:
            parsed = [xc.load(c.der) for c in certs if c.der]
            if not parsed or parsed[0] is None:
                hit = None
            else:
                if self.anchors is None:
                    self.anchors = xc.Anchors(self.site.cfg.internal_cas)
                chain = [c for c in parsed if c is not None]
                trust = None if certs[0].self_signed or not self.p.check_issuer else xc.trusted(chain, self.anchors)
                hit = (xc.dns_names(chain[0]), chain[0], trust)
            self.verdicts[key] = hit
            if len(self.verdicts) > CHAIN_CACHE:
                self.verdicts.popitem(last=False)
        return hit

    def observe_events(self, events: Events) -> None:
        for ev in events.tls:
            if not ev.certificates:
                continue
            verdict = self._verdict(ev.certificates)
            if verdict is None:
                continue
            names, leaf, trust = verdict
            c = ev.ctx
            sni = ev.client_hello.sni if ev.client_hello and ev.client_hello.sni else None
            port = c.dport if c.from_orig else c.sport
            where = sni or f"{c.server}:{port}"
            info = {"server_name": where, "sni": sni, "certificate_names": names[:16],
                    "subject": ev.certificates[0].subject, "issuer": ev.certificates[0].issuer,
                    "sha256": ev.certificates[0].sha256, "self_signed": ev.certificates[0].self_signed, "uid": c.uid}
            if sni and xc.is_dns_name(sni) and not xc.covers(names, sni) and \
                    any(registered_domain(n.lstrip("*.")) == registered_domain(sni) for n in names):
                self._add(c, port, "tls_name_misconfigured", "low", 0.3,
                          f"{c.server}:{port} answered {c.client}'s request for {sni} with a certificate for "
                          f"{', '.join(names[:3])} of the same domain: a misconfigured server", info)
            elif sni and xc.is_dns_name(sni) and not xc.covers(names, sni):
                self._add(c, port, "tls_name_mismatch", "medium", 0.6,
                          f"{c.server}:{port} answered {c.client}'s request for {sni} with a certificate for "
                          f"{', '.join(names[:3]) or 'no name'}: a substitute certificate (TLS interception, a man in "
                          "the middle), or a connection sent to the wrong server", info)
            v = xc.validity(leaf, c.ts_ns)
            if v.state != "valid":
                when = "expired on " + v.not_after.date().isoformat() if v.state == "expired" else \
                    "not valid before " + v.not_before.date().isoformat()
                self._add(c, port, "tls_expired", "low", 0.3,
                          f"{c.server}:{port} ({where}) presented a certificate {when}", {
                              **info, "not_before": v.not_before.isoformat(), "not_after": v.not_after.isoformat(),
                              "state": v.state})
            if trust is False:
                self._add(c, port, "tls_untrusted_issuer", "low", 0.3,
                          f"{c.server}:{port} ({where}) presented a certificate issued by {info['issuer'] or '?'}, "
                          "which leads to no CA of the trust store or the site's internal CAs", info)

    def _add(self, c, port: int, technique: str, severity: str, score: float, summary: str, evidence: dict) -> None:
        key = (technique, evidence["server_name"], evidence["sha256"])
        seen = self.found.get(key)
        if seen is not None:
            seen.evidence["connections"] += 1
            seen.ts_ns, seen.ts_end_ns = min(seen.ts_ns, c.ts_ns), max(seen.ts_end_ns, c.ts_ns)
            return
        if len(self.found) >= self.p.max_findings:
            self.dropped += 1
            return
        self.found[key] = Alert(c.ts_ns, c.ts_ns, "mitm", technique, severity, score, summary, self.label,
                                self.host_for(c.client, c.server), c.client, c.server, None, port, "tcp",
                                {**evidence, "connections": 1})

    def finish(self) -> list[Alert]:
        return list(self.found.values())
