"""Spoofed DNS answers (mitm / dns_spoof).

Methods, each a known sign of DNS cache poisoning or of a rogue resolver:

- two different answers to one question (client, client port, transaction id, name, type)
  within ``race_window_s`` from the same resolver address: the race a spoofer, forging the
  resolver's address, wins or loses against the real one (Kaminsky-style poisoning, on-path
  spoofing); the answers' Ethernet sources are reported. Different answers from two resolvers
  the client asked (resolv.conf ``rotate``, a stub that asks all its servers, CDN names that
  resolve by location) are not a race;
- an answer from a host other than the ones the client asked (off-path spoofing);
- a public name answered with the answering host's own address, the mark of resolvers
  configured to send every name to the attacker (dnsmasq ``address=/#/``, ettercap dns_spoof).

Severity: high for conflicting answers, medium otherwise. Names under ``site.local_domains``
and local-only suffixes are not judged by the third rule.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector, mac_text
from detector.l7.events import Events


def _remember(d: OrderedDict, key, value, cap: int) -> None:
    d[key] = value
    d.move_to_end(key)
    if len(d) > cap:
        d.popitem(last=False)


class DnsSpoof(Detector):
    name = "dns_spoof"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        race_window_s: float = 5.0  # a second answer later than this answers another question
        max_pending: int = 500_000  # questions and answers remembered (the oldest are dropped)

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.asked: OrderedDict[tuple[str, int, int], frozenset] = OrderedDict()  # (client, port, txid) -> servers
        self.answers: OrderedDict[tuple, tuple] = OrderedDict()
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
                key = (c.src, c.sport, m.txid)
                _remember(self.asked, key, self.asked.get(key, frozenset()) | {c.dst}, self.p.max_pending)
                continue
            client, server = c.dst, c.src
            data = frozenset(a.data for a in m.answers if a.rtype in (1, 28))
            asked = self.asked.get((client, c.dport, m.txid))
            if asked is not None and server not in asked:
                self._report(("offpath", server), c,
                             f"{server} answered {client}'s DNS query for {m.qname} that was sent to "
                             f"{', '.join(sorted(asked))}: a spoofed answer from a host that was not asked", "medium",
                             {"query": m.qname, "answered_by": server, "asked": sorted(asked)[0],
                              "answers": sorted(data)})
            key = (client, c.dport, m.txid, m.qname, m.qtype)
            prev = self.answers.get(key)
            if prev is not None and c.ts_ns - prev[2] > self.p.race_window_s * 1e9:
                prev = None  # a later query that happens to reuse the id and port: a new question
            if prev is None:
                _remember(self.answers, key, (data, server, c.ts_ns, ev.src_mac), self.p.max_pending)
            elif data and prev[0] and data != prev[0] and (prev[1] == server or asked is None or prev[1] not in asked):
                macs = "" if prev[3] == ev.src_mac else f" (sent from MACs {mac_text(prev[3])} and {mac_text(ev.src_mac)})"
                self._report(("conflict", server), c,
                             f"{client} got two different answers for {m.qname} (transaction {m.txid}): "
                             f"{sorted(prev[0])} from {prev[1]} and {sorted(data)} from {server}{macs}: DNS spoofing",
                             "high", {"query": m.qname, "first_answer": sorted(prev[0]), "first_server": prev[1],
                                      "first_mac": mac_text(prev[3]), "second_answer": sorted(data),
                                      "second_server": server, "second_mac": mac_text(ev.src_mac), "txid": m.txid})
            if server in data and not self.site.is_local_name(m.qname):
                self._report(("self", server), c,
                             f"{server} answered {client}'s query for the public name {m.qname} with its own "
                             "address: a resolver that sends clients to itself", "medium",
                             {"query": m.qname, "answers": sorted(data), "resolver": server})

    def finish(self) -> list[Alert]:
        return list(self.found.values())
