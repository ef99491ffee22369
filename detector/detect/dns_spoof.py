"""Spoofed DNS answers (mitm / dns_spoof).

Methods, each a known sign of DNS cache poisoning or of a rogue resolver:

- two different answers to one question (client, transaction id, name, type): the race a
  spoofer wins or loses against the real resolver (Kaminsky-style poisoning, on-path spoofing);
- an answer from a host other than the one the client asked (off-path spoofing);
- a public name answered with the answering host's own address, the mark of resolvers
  configured to send every name to the attacker (dnsmasq ``address=/#/``, ettercap dns_spoof).

Severity: high for conflicting answers, medium otherwise. Names under ``site.local_domains``
and local-only suffixes are not judged by the third rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector
from detector.l7.events import Events


class DnsSpoof(Detector):
    name = "dns_spoof"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.asked: dict[tuple[str, int, int], str] = {}  # (client, client port, txid) -> server asked
        self.answers: dict[tuple[str, int, str, int], tuple] = {}
        self.found: dict[tuple[str, str], Alert] = {}

    def _report(self, key, ctx, technique_detail: str, severity: str, evidence: dict) -> None:
        """One alert per incident key; later sightings add up in its evidence."""
        seen = self.found.get(key)
        if seen is not None:
            ev = seen.evidence
            ev["sightings"] = ev.get("sightings", 1) + 1
            seen.ts_end_ns = max(seen.ts_end_ns, ctx.ts_ns)
            for field, value in (("queries", evidence.get("query")), ("clients", ctx.dst)):
                if value and value not in ev[field] and len(ev[field]) < 32:
                    ev[field].append(value)
            return
        evidence = {**evidence, "queries": [evidence.get("query")], "clients": [ctx.dst], "sightings": 1}
        self.found[key] = Alert(ctx.ts_ns, ctx.ts_ns, "mitm", "dns_spoof", severity,
                                0.85 if severity == "high" else 0.6, technique_detail, self.label,
                                self.host_for(ctx.dst, ctx.src), ctx.src, ctx.dst, ctx.sport, ctx.dport, "udp",
                                {**evidence, "uid": ctx.uid})

    def observe_events(self, events: Events) -> None:
        for ev in events.dns:
            m, c = ev.msg, ev.ctx
            if not m.response:
                if len(self.asked) < 500_000:
                    self.asked[(c.src, c.sport, m.txid)] = c.dst
                continue
            client, server = c.dst, c.src
            data = frozenset(a.data for a in m.answers if a.rtype in (1, 28))
            asked = self.asked.get((client, c.dport, m.txid))
            if asked is not None and asked != server:
                self._report(("offpath", server), c,
                             f"{server} answered {client}'s DNS query for {m.qname} that was sent to {asked}: "
                             "a spoofed answer from a host that was not asked", "medium",
                             {"query": m.qname, "answered_by": server, "asked": asked, "answers": sorted(data)})
            key = (client, m.txid, m.qname, m.qtype)
            prev = self.answers.get(key)
            if prev is None:
                if len(self.answers) < 500_000:
                    self.answers[key] = (data, server, c.ts_ns)
            elif data and prev[0] and data != prev[0]:
                self._report(("conflict", server), c,
                             f"{client} got two different answers for {m.qname} (transaction {m.txid}): "
                             f"{sorted(prev[0])} from {prev[1]} and {sorted(data)} from {server}: DNS spoofing",
                             "high", {"query": m.qname, "first_answer": sorted(prev[0]), "first_server": prev[1],
                                      "second_answer": sorted(data), "second_server": server, "txid": m.txid})
            if server in data and not self.site.is_local_name(m.qname):
                self._report(("self", server), c,
                             f"{server} answered {client}'s query for the public name {m.qname} with its own "
                             "address: a resolver that sends clients to itself", "medium",
                             {"query": m.qname, "answers": sorted(data), "resolver": server})

    def finish(self) -> list[Alert]:
        return list(self.found.values())
