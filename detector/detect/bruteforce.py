"""Password guessing against SSH and FTP (unauthorized_access / ssh_bruteforce, ftp_bruteforce,
distributed_guessing).

Methods:

- FTP is in the clear: the server's ``530`` replies are failed logins, counted per client and
  server (Zeek's ``FTP::bruteforce_threshold`` logic).
- SSH is encrypted after the key exchange, so failures are inferred from the flows, after
  SSHCure (Hofstede et al., 2014) and Zeek's ``detect-bruteforcing``: connections to an SSH
  server in which the server sent little (``ssh_fail_max_resp_bytes``; a shell sends far more)
  and whose sizes are all alike (coefficient of variation under ``ssh_size_cv``), counted per
  client and server over ``window_s``.
- Distributed guessing: such failed-looking connections to one server from at least
  ``distributed_min_sources`` sources, each below the per-client threshold.

Severity: medium from ``min_failures`` failures, high from ``high_failures`` (Zeek's default
limit is 30; its tests use 10).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.l7.events import Events

SSH_PORTS = (22, 2222)


class BruteForce(Detector):
    name = "bruteforce"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        min_failures: int = 10
        high_failures: int = 30
        window_s: float = 1800.0
        ssh_fail_max_resp_bytes: int = 4500
        ssh_size_cv: float = 0.25
        distributed_min_sources: int = 10

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.ssh: dict[tuple[str, str, int], list] = defaultdict(list)  # (ts, resp_bytes, uid, cid)
        self.ftp: dict[tuple[str, str], dict] = {}

    def observe_flows(self, f: FlowView) -> None:
        rp, proto = f["resp_p"], f["proto"]
        for j in np.flatnonzero(np.isin(rp, SSH_PORTS) & (proto == "tcp")).tolist():
            if int(f["resp_pkts"][j]) == 0:
                continue  # no answer: scanning, not guessing
            key = (f["orig_h"][j], f["resp_h"][j], int(rp[j]))
            self.ssh[key].append((int(f["ts"][j]), int(f["resp_bytes"][j]), f["uid"][j], f["community_id"][j]))

    def observe_events(self, events: Events) -> None:
        for ev in events.ftp:
            c = ev.ctx
            key = (c.client, c.server)
            a = self.ftp.setdefault(key, {"first": c.ts_ns, "last": c.ts_ns, "fail": 0, "ok": 0, "users": set(),
                                          "uid": c.uid})
            a["last"] = c.ts_ns
            if ev.code == 530:
                a["fail"] += 1
            else:
                a["ok"] += 1
            if ev.user and len(a["users"]) < 50:
                a["users"].add(ev.user)

    def _ssh_failures(self, conns: list) -> list:
        small = [c for c in conns if c[1] <= self.p.ssh_fail_max_resp_bytes]
        if len(small) < 2:
            return []
        sizes = np.array([c[1] for c in small], dtype=np.float64)
        if sizes.mean() == 0 or sizes.std() / sizes.mean() > self.p.ssh_size_cv:
            return []
        # the densest window of failed-looking connections
        small.sort()
        ts = np.array([c[0] for c in small])
        w = int(self.p.window_s * 1e9)
        best_lo, best = 0, 0
        hi = 0
        for lo in range(len(ts)):
            while hi < len(ts) and ts[hi] - ts[lo] <= w:
                hi += 1
            if hi - lo > best:
                best_lo, best = lo, hi - lo
        return small[best_lo:best_lo + best]

    def _severity(self, n: int) -> tuple[str, float]:
        if n >= self.p.high_failures:
            return "high", 0.85
        return "medium", 0.65

    def finish(self) -> list[Alert]:
        p = self.p
        out = []
        weak: dict[tuple[str, int], list] = defaultdict(list)
        for (client, server, port), conns in self.ssh.items():
            fails = self._ssh_failures(conns)
            if len(fails) >= p.min_failures:
                sev, score = self._severity(len(fails))
                out.append(Alert(fails[0][0], fails[-1][0], "unauthorized_access", "ssh_bruteforce", sev, score,
                                 f"{client} made {len(fails)} SSH connections to {server}:{port} that ended after the "
                                 f"server sent about {int(np.median([x[1] for x in fails]))} bytes, as failed logins "
                                 "do: password guessing", self.label, self.host_for(server, client), client, server,
                                 None, port, "tcp",
                                 {"failed_looking_connections": len(fails), "connections": len(conns),
                                  "server_bytes_median": int(np.median([x[1] for x in fails])),
                                  "window_s": p.window_s, "uid": fails[-1][2]}, fails[-1][3]))
            elif fails:
                weak[(server, port)].append((client, fails))
        for (server, port), sources in weak.items():
            if len(sources) < p.distributed_min_sources:
                continue
            total = sum(len(f) for _, f in sources)
            first = min(f[0][0] for _, f in sources)
            last = max(f[-1][0] for _, f in sources)
            out.append(Alert(first, last, "unauthorized_access", "distributed_guessing", "medium", 0.65,
                             f"{len(sources)} sources made {total} failed-looking SSH connections to {server}:{port}, "
                             "each staying under the per-source threshold: distributed password guessing",
                             self.label, self.host_for(server), None, server, None, port, "tcp",
                             {"sources": sorted(c for c, _ in sources)[:32], "source_count": len(sources),
                              "failed_looking_connections": total}))
        for (client, server), a in self.ftp.items():
            if a["fail"] < p.min_failures:
                continue
            sev, score = self._severity(a["fail"])
            out.append(Alert(a["first"], a["last"], "unauthorized_access", "ftp_bruteforce", sev, score,
                             f"{client} failed {a['fail']} FTP logins on {server} ('530 Login incorrect')"
                             + (f" and then logged in {a['ok']} time(s)" if a["ok"] else "") + ": password guessing",
                             self.label, self.host_for(server, client), client, server, None, 21, "tcp",
                             {"failed_logins": a["fail"], "successful_logins": a["ok"],
                              "users_tried": sorted(a["users"])[:20], "uid": a["uid"]}))
        return out
