"""Severity follows evidence: the one rule that turns the detectors' alerts into what leaves.

Some signals are weak alone: real, benign traffic produces them every day. A TTL that changes
within a connection (route changes, anycast, load balancers, captures merged from two taps), a
sequence number resent with other bytes (keep-alive probes with garbage, rewriting middleboxes),
a self-signed or expired certificate, or one from a CA outside the trust store (RDP, VPN and
appliance certificates; STARTTLS mail), a connection open for hours, another protocol on a
well-known port (VPNs on 443). Their detectors emit them at **low** (``long_connection`` at
medium when it calls a new external destination).

A weak alert is **corroborated** by an alert of one of the techniques its rule names that shares
an address with it (source, destination or host) and overlaps it in time, give or take
``WINDOW_NS``. Corroborated alerts are one incident and leave as one alert:

- the alert kept is the corroborating one when it is not weak itself (an ARP spoof, a
  certificate that does not cover the name asked for), else the weak one whose technique comes
  first in ``RULES``;
- it is raised to the rule's severity, or to that of a weak alert folded into it when higher
  (never lowered), and lists the others in its evidence
  (``corroborated_by``: technique, severity, summary, time); the weak ones are folded into it
  and do not leave apart, the strong ones (incidents of their own) still do.

A weak alert nobody corroborates leaves as it came: low. Strong signals (an ARP reply claiming
the gateway, a changed SSH host key, mining) are not in ``RULES`` and pass unchanged.

``RULES``: weak technique -> (severity when corroborated, corroborating techniques).
"""

from __future__ import annotations

from typing import NamedTuple

from detector.alerts import SEVERITY_RANK, Alert


class Rule(NamedTuple):
    raised: str
    by: frozenset[str]


INJECTION = frozenset({"ttl_change", "rexmit_inconsistency", "arp_spoof", "gateway_mac_change", "icmp_redirect"})
CERTIFICATE = frozenset({"tls_cert_change", "tls_name_mismatch"})

RULES: dict[str, Rule] = {
    # strong alone (medium to critical), but one incident with the ARP spoof that caused it
    "gateway_mac_change": Rule("high", frozenset({"arp_spoof"})),
    "ttl_change": Rule("high", INJECTION - {"ttl_change"}),
    "rexmit_inconsistency": Rule("high", INJECTION - {"rexmit_inconsistency"}),
    "tls_self_signed": Rule("high", CERTIFICATE),
    "tls_untrusted_issuer": Rule("high", CERTIFICATE),
    "tls_expired": Rule("medium", CERTIFICATE),
    "tls_name_misconfigured": Rule("medium", frozenset({"tls_cert_change"})),
    "long_connection": Rule("high", frozenset({"port_mismatch", "beaconing"})),
    "port_mismatch": Rule("high", frozenset({"long_connection"})),
}
PRECEDENCE = {t: k for k, t in enumerate(RULES)}
WINDOW_NS = 600 * 10**9


def _addresses(a: Alert) -> set[str]:
    return {x for x in (a.src_ip, a.dst_ip, a.host) if x}


def _near(a: Alert, b: Alert) -> bool:
    return a.ts_ns - WINDOW_NS <= b.ts_end_ns and b.ts_ns - WINDOW_NS <= a.ts_end_ns


def corroborators(weak: Alert, alerts: list[Alert]) -> list[Alert]:
    rule = RULES[weak.technique]
    where = _addresses(weak)
    return [a for a in alerts if a is not weak and a.technique in rule.by and _addresses(a) & where and _near(weak, a)]


def _kept(group: list[Alert]) -> Alert:
    strong = [a for a in group if a.technique not in RULES]
    if strong:
        return max(strong, key=lambda a: (a.severity_rank, a.score))
    return min(group, key=lambda a: PRECEDENCE[a.technique])


def settle(alerts: list[Alert]) -> list[Alert]:
    """``alerts`` with the rule applied: weak alerts corroborated are merged into one raised
    alert per incident; the rest are returned as they are (in their order)."""
    groups: dict[int, list[Alert]] = {}  # id of an alert -> its incident's alerts (shared lists)
    for weak in (a for a in alerts if a.technique in RULES):
        for other in corroborators(weak, alerts):
            ga, gb = groups.get(id(weak), [weak]), groups.get(id(other), [other])
            if ga is gb:
                continue
            have = {id(a) for a in ga}
            merged = ga + [a for a in gb if id(a) not in have]
            for a in merged:
                groups[id(a)] = merged
    folded: set[int] = set()
    for group in {id(g): g for g in groups.values()}.values():
        kept = _kept(group)
        weak = [a for a in group if a.technique in RULES]
        raised = max([RULES[a.technique].raised for a in weak] + [a.severity for a in weak if a is not kept],
                     key=SEVERITY_RANK.get)
        if SEVERITY_RANK[raised] > kept.severity_rank:
            kept.severity = raised
            kept.score = max(kept.score, 0.8 if raised in ("high", "critical") else 0.6)
        others = sorted((a for a in group if a is not kept), key=lambda a: a.ts_ns)
        kept.evidence["corroborated_by"] = [
            {"technique": a.technique, "severity": a.severity, "summary": a.summary, "ts_ns": a.ts_ns} for a in others]
        weak = [a for a in others if a.technique in RULES]
        kept.ts_ns = min(a.ts_ns for a in weak + [kept])
        kept.ts_end_ns = max(a.ts_end_ns for a in weak + [kept])
        folded.update(id(a) for a in weak)
    return [a for a in alerts if id(a) not in folded]
