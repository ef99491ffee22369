"""DNS tunnels and DNS exfiltration (exfiltration / dns_tunnel).

Method: per client and registered domain, the features of Nadler, Aminov and Shabtai
("Detection of malicious and low throughput data exfiltration over the DNS protocol",
Computers & Security 2019) and of RITA's subdomain counting: how many distinct names are asked,
how many carry an *encoded* label (long, with high character entropy), how long they are, and
what share asks TXT/NULL/CNAME/MX records. A client that spreads encoded names over many
domains (dnscat's direct mode) is also counted per client, and a single name carrying a very
long encoded label (one-shot exfiltration) is reported on its own.

Thresholds (``Params``): a label is *encoded* when it has at least ``encoded_min_len``
characters and ``encoded_min_entropy`` bits of entropy per character. Medium: at least
``min_names`` distinct names under one domain with an ``encoded_share`` of them encoded (or
with ``rr_share`` TXT/NULL records and long names); high: ``high_names`` such names. One-shot:
a label of ``single_label_len`` characters and ``single_label_entropy`` bits.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector, registered_domain
from detector.l7.events import Events

TUNNEL_RR = {10, 16, 5, 15}  # NULL, TXT, CNAME, MX


def entropy(s: str) -> float:
    n = len(s)
    if n == 0:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


class _Agg:
    __slots__ = ("names", "encoded", "rr", "bytes", "first", "last", "server", "examples", "client")

    def __init__(self, client):
        self.client = client
        self.names: set[str] = set()
        self.encoded = 0
        self.rr = 0
        self.bytes = 0
        self.first = None
        self.last = 0
        self.server = ""
        self.examples: list[str] = []


class DnsTunnel(Detector):
    name = "dns_tunnel"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        encoded_min_len: int = 24
        encoded_min_entropy: float = 3.3
        min_names: int = 10
        high_names: int = 100
        encoded_share: float = 0.5
        rr_share: float = 0.5
        long_name: int = 40
        single_label_len: int = 50
        single_label_entropy: float = 3.8
        allow_domains: tuple[str, ...] = ()  # e.g. antivirus lookup services that encode hashes

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.domains: dict[tuple[str, str], _Agg] = {}
        self.clients: dict[str, _Agg] = {}
        self.single: dict[tuple[str, str], tuple] = {}
        self._names: dict[str, tuple | None] = {}

    def _encoded(self, label: str) -> bool:
        return len(label) >= self.p.encoded_min_len and entropy(label) >= self.p.encoded_min_entropy

    def _facts(self, qname: str) -> tuple[str, bool, str, float] | None:
        """``(registered domain, any label encoded, longest label, its entropy)`` of a query
        name, or None when it is not judged (local or allowed); memoised, names repeat."""
        hit = self._names.get(qname, False)
        if hit is not False:
            return hit
        p = self.p
        dom = registered_domain(qname)
        if self.site.is_local_name(qname) or dom in p.allow_domains \
                or any(qname.endswith("." + d) for d in p.allow_domains):
            hit = None
        else:
            labels = qname.split(".")[:-2] or [""]
            longest = max(labels, key=len)
            hit = (dom, any(self._encoded(lab) for lab in labels), longest, entropy(longest))
        if len(self._names) >= 1 << 16:
            self._names.clear()
        self._names[qname] = hit
        return hit

    def observe_events(self, events: Events) -> None:
        p = self.p
        for ev in events.dns:
            m = ev.msg
            if m.response or not m.qname:
                continue
            facts = self._facts(m.qname)
            if facts is None:
                continue
            dom, enc, longest, longest_entropy = facts
            client = ev.ctx.src
            for agg in (self.domains.setdefault((client, dom), _Agg(client)),
                        self.clients.setdefault(client, _Agg(client))):
                if m.qname in agg.names:
                    continue
                if len(agg.names) < 100_000:
                    agg.names.add(m.qname)
                agg.encoded += enc
                agg.rr += m.qtype in TUNNEL_RR
                agg.bytes += len(m.qname)
                agg.first = ev.ctx.ts_ns if agg.first is None else min(agg.first, ev.ctx.ts_ns)
                agg.last = max(agg.last, ev.ctx.ts_ns)
                agg.server = ev.ctx.dst
                if len(agg.examples) < 3:
                    agg.examples.append(m.qname)
            if len(longest) >= p.single_label_len and longest_entropy >= p.single_label_entropy:
                self.single.setdefault((client, dom), (ev.ctx, m.qname, len(longest), longest_entropy))

    def _alert(self, agg: _Agg, domain: str | None, score: float, why: str) -> Alert:
        n = len(agg.names)
        severity = "high" if score >= 0.8 else "medium"
        where = f"under {domain}" if domain else "across many domains"
        return Alert(agg.first, agg.last, "exfiltration", "dns_tunnel", severity, score,
                     f"{agg.client} sent {n} distinct DNS queries {where} ({agg.encoded} with encoded labels, "
                     f"{agg.bytes} bytes of names): data hidden in DNS names ({why})",
                     self.label, self.host_for(agg.client), agg.client, agg.server, None, 53, "udp",
                     {"domain": domain, "distinct_names": n, "encoded_names": agg.encoded,
                      "tunnel_record_share": round(agg.rr / max(n, 1), 3), "query_name_bytes": agg.bytes,
                      "mean_name_length": round(agg.bytes / max(n, 1), 1), "examples": agg.examples,
                      "thresholds": {"min_names": self.p.min_names, "encoded_share": self.p.encoded_share}})

    def finish(self) -> list[Alert]:
        p = self.p
        alerts, reported = [], set()
        for (client, dom), agg in self.domains.items():
            n = len(agg.names)
            if n < p.min_names:
                continue
            enc_share = agg.encoded / n
            mean_len = agg.bytes / n
            if enc_share >= p.encoded_share or (agg.rr / n >= p.rr_share and mean_len >= p.long_name):
                score = 0.9 if n >= p.high_names else 0.6 + 0.2 * min(1.0, n / p.high_names)
                alerts.append(self._alert(agg, dom, score, "encoded subdomains" if enc_share >= p.encoded_share
                                          else "long names in TXT/NULL queries"))
                reported.add(client)
        for client, agg in self.clients.items():
            n = len(agg.names)
            if client in reported or n < p.min_names or agg.encoded < p.min_names or agg.encoded / n < p.encoded_share:
                continue
            score = 0.9 if agg.encoded >= p.high_names else 0.65
            alerts.append(self._alert(agg, None, score, "encoded names spread over domains"))
            reported.add(client)
        for (client, dom), (ctx, name, length, ent) in self.single.items():
            if client in reported:
                continue
            alerts.append(Alert(ctx.ts_ns, ctx.ts_ns, "exfiltration", "dns_tunnel", "medium", 0.55,
                                f"{client} asked for {name[:80]}: a {length}-character label with {ent:.1f} bits "
                                "of entropy per character carries encoded data in a DNS name", self.label,
                                self.host_for(client), client, ctx.dst, ctx.sport, ctx.dport, "udp",
                                {"query": name, "label_length": length, "label_entropy": round(ent, 2),
                                 "domain": dom}, None))
            reported.add(client)
        return alerts
