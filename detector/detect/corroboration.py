"""Severity follows evidence: the one rule that turns the detectors' alerts into what leaves.

Some signals are weak alone: real, benign traffic produces them every day. A TTL that changes
within a connection (route changes, anycast, load balancers, captures merged from two taps), a
sequence number resent with other bytes (keep-alive probes with garbage, rewriting middleboxes),
a self-signed or expired certificate, or one from a CA outside the trust store (RDP, VPN and
appliance certificates; STARTTLS mail), a connection open for hours, another protocol on a
well-known port (VPNs on 443). Their detectors emit them at **low** (``long_connection`` at
medium when it calls a new external destination).

A weak alert is **corroborated** by an alert of one of the techniques its rule names, about the
same thing, that overlaps it in time, give or take ``WINDOW_NS``. What "the same thing" is
depends on the pair of techniques (``SCOPES``): the same connection's two ends (``pair``: a TTL
change and a resent sequence number, a long connection and its port mismatch), the same server
(``server``: the destination of certificate alerts), or any address in common (``address``: an
ARP spoof or a next-hop change and the connections of its victims). Corroborated alerts are one
incident and leave as one alert:

- the alert kept is the corroborating one when it is not weak itself (an ARP spoof, a
  certificate that does not cover the name asked for), the most severe of them if several,
  else the weak one whose technique comes first in ``RULES``;
- it is raised to the rule's severity, or to that of a weak alert folded into it when higher
  (never lowered), and lists the others in its evidence
  (``corroborated_by``: technique, severity, summary, time); the weak ones are folded into it
  and do not leave apart, the strong ones (incidents of their own) still do.

The alerts handed in are not changed: raised and merged alerts are copies (a daemon asks its
detectors again at every report).

A weak alert nobody corroborates leaves as it came: low. Strong signals (an ARP reply claiming
the gateway, a changed SSH host key, mining) are not in ``RULES`` and pass unchanged.

``RULES``: weak technique -> (severity when corroborated, corroborating technique -> scope).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from detector.alerts import SEVERITY_RANK, Alert


class Rule(NamedTuple):
    raised: str
    by: dict[str, str]  # corroborating technique -> scope ("pair", "server", "address")


# a victim's own connections and the MITM that put someone between them
_INJECTION = {"arp_spoof": "address", "gateway_mac_change": "address", "icmp_redirect": "address"}
_CERTIFICATE = {"tls_cert_change": "server", "tls_name_mismatch": "server"}

RULES: dict[str, Rule] = {
    # strong alone (medium to critical), but one incident with the ARP spoof that caused it
    "gateway_mac_change": Rule("high", {"arp_spoof": "address"}),
    "ttl_change": Rule("high", {"rexmit_inconsistency": "pair", **_INJECTION}),
    "rexmit_inconsistency": Rule("high", {"ttl_change": "pair", **_INJECTION}),
    "tls_self_signed": Rule("high", _CERTIFICATE),
    "tls_untrusted_issuer": Rule("high", _CERTIFICATE),
    "tls_expired": Rule("medium", _CERTIFICATE),
    "tls_name_misconfigured": Rule("medium", {"tls_cert_change": "server"}),
    "long_connection": Rule("high", {"port_mismatch": "pair", "beaconing": "pair"}),
    "port_mismatch": Rule("high", {"long_connection": "pair"}),
    # a GPU that works like no training window, on a node where a GPU is busy outside any job
    "gpu_profile": Rule("high", {"gpu_unallocated": "address", "gpu_foreign_process": "address"}),
}
PRECEDENCE = {t: k for k, t in enumerate(RULES)}
WINDOW_NS = 600 * 10**9


def _same(scope: str, a: Alert, b: Alert) -> bool:
    if scope == "pair":
        return {a.src_ip, a.dst_ip} == {b.src_ip, b.dst_ip} and a.dst_ip is not None
    if scope == "server":
        return a.dst_ip is not None and a.dst_ip == b.dst_ip
    return bool({x for x in (a.src_ip, a.dst_ip, a.host) if x} & {x for x in (b.src_ip, b.dst_ip, b.host) if x})


def _near(a: Alert, b: Alert) -> bool:
    return a.ts_ns - WINDOW_NS <= b.ts_end_ns and b.ts_ns - WINDOW_NS <= a.ts_end_ns


def corroborators(weak: Alert, by_technique: dict[str, list[Alert]]) -> list[Alert]:
    """The alerts (indexed by technique) that corroborate ``weak``."""
    return [a for technique, scope in RULES[weak.technique].by.items() for a in by_technique.get(technique, ())
            if a is not weak and _same(scope, weak, a) and _near(weak, a)]


def _kept(group: list[Alert]) -> Alert:
    strong = [a for a in group if a.technique not in RULES]
    if strong:
        return max(strong, key=lambda a: (a.severity_rank, a.score, -a.ts_ns, a.technique, a.summary))
    return min(group, key=lambda a: (PRECEDENCE[a.technique], a.ts_ns, a.summary))


def settle(alerts: list[Alert]) -> list[Alert]:
    """``alerts`` with the rule applied: weak alerts corroborated are merged into one raised
    alert per incident; the rest are returned as they are (in their order)."""
    by_technique: dict[str, list[Alert]] = {}
    for a in alerts:
        by_technique.setdefault(a.technique, []).append(a)
    groups: dict[int, list[Alert]] = {}  # id of an alert -> its incident's alerts (shared lists)
    for weak in (a for a in alerts if a.technique in RULES):
        for other in corroborators(weak, by_technique):
            ga, gb = groups.get(id(weak), [weak]), groups.get(id(other), [other])
            if ga is gb:
                continue
            have = {id(a) for a in ga}
            merged = ga + [a for a in gb if id(a) not in have]
            for a in merged:
                groups[id(a)] = merged
    folded: set[int] = set()
    replaced: dict[int, Alert] = {}
    for group in {id(g): g for g in groups.values()}.values():
        original = _kept(group)
        kept = replaced[id(original)] = dataclasses.replace(original, evidence=dict(original.evidence))
        weak = [a for a in group if a.technique in RULES]
        raised = max([RULES[a.technique].raised for a in weak] + [a.severity for a in weak if a is not original],
                     key=SEVERITY_RANK.get)
        if SEVERITY_RANK[raised] > kept.severity_rank:
            kept.severity = raised
            kept.score = max(kept.score, 0.8 if raised in ("high", "critical") else 0.6)
        others = sorted((a for a in group if a is not original), key=lambda a: (a.ts_ns, a.technique))
        kept.evidence["corroborated_by"] = [
            {"technique": a.technique, "severity": a.severity, "summary": a.summary, "ts_ns": a.ts_ns} for a in others]
        weak = [a for a in others if a.technique in RULES]
        kept.ts_ns = min(a.ts_ns for a in weak + [kept])
        kept.ts_end_ns = max(a.ts_end_ns for a in weak + [kept])
        folded.update(id(a) for a in weak)
    return [replaced.get(id(a), a) for a in alerts if id(a) not in folded]
