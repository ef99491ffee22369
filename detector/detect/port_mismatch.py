"""A well-known port carrying another protocol (unauthorized_access / port_mismatch).

Method: Zeek's dynamic protocol detection turned around. Each flow's first captured payload is
named by content (:mod:`detector.flows.services`); a connection to TCP 80 or 8080 that does not
start like HTTP, to 443 that does not start like TLS, to 22 not like SSH, to 25 or 587 not like
SMTP, or to TCP/UDP 53 not like DNS carries something else through a port that firewalls and
proxies let pass: a tunnel, a backdoor's own protocol, command and control. Only connections
whose start was seen count (a TCP record without the originator's SYN continues an earlier one,
and its first payload is mid-stream), and only when payload was captured.

Low alone: VPNs on 443, sslh, and services moved to familiar ports do this too. Lasting for
hours (``long_connection``) it is C2 evidence, and the shared rule raises the pair
(:mod:`detector.detect.corroboration`). One alert per client, server and port.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView, widen
from detector.flows.services import service_name

EXPECTED = {80: "http", 8080: "http", 443: "ssl", 22: "ssh", 25: "smtp", 587: "smtp", 53: "dns"}


class PortMismatch(Detector):
    name = "port_mismatch"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        max_pairs: int = 100_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.pairs: dict[tuple[str, str, int], dict] = {}
        self.dropped = 0

    def observe_flows(self, f: FlowView) -> None:
        if "first_payload" not in f or not len(f):
            return
        rp, proto = f["resp_p"], f["proto"]
        watched = np.isin(rp, list(EXPECTED)) & ((proto == "tcp") | ((proto == "udp") & (rp == 53)))
        rows = np.flatnonzero(watched & (f["first_payload"] >= 0))
        if not len(rows):
            return
        services, codes = f["service"], f["first_payload"]
        for j in rows.tolist():
            port = int(rp[j])
            if services[j] == EXPECTED[port] or (proto[j] == "tcp" and "S" not in (f["history"][j] or "")):
                continue
            key = (f["orig_h"][j], f["resp_h"][j], port)
            a = self.pairs.get(key)
            ts = int(f["ts"][j])
            if a is None:
                if len(self.pairs) >= self.p.max_pairs:
                    self.dropped += 1
                    continue
                a = self.pairs[key] = {"first": ts, "last": ts, "flows": 0, "bytes": 0, "found": set(),
                                       "uid": f["uid"][j], "cid": f["community_id"][j], "proto": proto[j]}
            if ts < a["first"] or (ts == a["first"] and f["uid"][j] < a["uid"]):  # the earliest speaks for all
                a["uid"], a["cid"] = f["uid"][j], f["community_id"][j]
            widen(a, int(ts + f["duration"][j] * 1e9))
            widen(a, ts)
            a["flows"] += 1
            a["bytes"] += int(f["orig_bytes"][j]) + int(f["resp_bytes"][j])
            a["found"].add(service_name(int(codes[j]), port) or "unrecognised")

    def finish(self) -> list[Alert]:
        out = []
        for (client, server, port), a in self.pairs.items():
            found = sorted(a["found"])
            out.append(Alert(
                a["first"], a["last"], "unauthorized_access", "port_mismatch", "low", 0.35,
                f"{client} connected to {server}:{port}, a {EXPECTED[port]} port, {a['flows']} time(s) and spoke "
                f"{' / '.join(found)} there, not {EXPECTED[port]}: a tunnel or a backdoor's own protocol through a "
                "port that filters let pass", self.label, self.host_for(client, server), client, server, None, port,
                a["proto"], {"expected": EXPECTED[port], "found": found, "connections": a["flows"],
                             "bytes": a["bytes"], "uid": a["uid"]}, a["cid"]))
        return out
