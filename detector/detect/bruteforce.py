"""Password guessing against SSH, FTP and VNC (unauthorized_access / ssh_bruteforce, ftp_bruteforce,
vnc_bruteforce, distributed_guessing; scan / credential_probe).

Methods:

- FTP and VNC authenticate in the clear: the server's ``530`` replies and RFB SecurityResult
  failures are failed logins, counted per client and server (Zeek's
  ``FTP::bruteforce_threshold`` logic).
- A credential probe (``scan``): fewer failures than that, but answered faster than
  ``human_response_s`` after the VNC challenge, so by a tool and not a person typing a password:
  the one-try-per-target pattern of VNC scanners hunting for empty or default passwords. A client
  that also logged in to that server knew its password: its fast failure is a saved password
  retried (a viewer's keychain), and is not reported.
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
from detector.detect.base import Detector, FlowView, widen
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
        human_response_s: float = 1.0

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.ssh: dict[tuple[str, str, int], list] = defaultdict(list)  # (ts, resp_bytes, uid, cid)
        self.logins: dict[tuple[str, str, str, int], dict] = {}  # (service, client, server, port)

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
            self._login(("ftp", c.client, c.server, 21), c, ev.code != 530, ev.user, None)
        for ev in events.rfb:
            if ev.auth_ok is None:
                continue
            c = ev.ctx
            self._login(("vnc", c.client, c.server, c.dport if c.from_orig else c.sport), c, ev.auth_ok, None,
                        ev.response_delay_s)

    def _login(self, key: tuple, c, ok: bool, user: str | None, delay_s: float | None) -> None:
        a = self.logins.setdefault(key, {"first": c.ts_ns, "last": c.ts_ns, "fail": 0, "ok": 0, "users": set(),
                                         "uid": c.uid, "fast_fail": 0, "delays": []})
        widen(a, c.ts_ns)
        if ok:
            a["ok"] += 1
        else:
            a["fail"] += 1
            if delay_s is not None:
                a["fast_fail"] += delay_s < self.p.human_response_s
                if len(a["delays"]) < 20:
                    a["delays"].append(round(delay_s, 3))
        if user and len(a["users"]) < 50:
            a["users"].add(user)

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
        for (service, client, server, port), a in self.logins.items():
            if a["fail"] >= p.min_failures:
                sev, score = self._severity(a["fail"])
                what = "FTP logins ('530 Login incorrect')" if service == "ftp" else "VNC authentications"
                out.append(Alert(a["first"], a["last"], "unauthorized_access", f"{service}_bruteforce", sev, score,
                                 f"{client} failed {a['fail']} {what} on {server}:{port}"
                                 + (f" and then logged in {a['ok']} time(s)" if a["ok"] else "")
                                 + ": password guessing", self.label, self.host_for(server, client), client, server,
                                 None, port, "tcp",
                                 {"failed_logins": a["fail"], "successful_logins": a["ok"],
                                  "users_tried": sorted(a["users"])[:20], "uid": a["uid"]}))
            elif a["fast_fail"] and not a["ok"]:
                out.append(Alert(a["first"], a["last"], "scan", "credential_probe", "medium", 0.6,
                                 f"{client} tried {a['fail']} {service.upper()} login(s) on {server}:{port}, answering "
                                 f"the password challenge within {max(a['delays']):.2f} s (a person takes longer than "
                                 f"{p.human_response_s:g} s), and failed: a tool probing for empty or default passwords",
                                 self.label, self.host_for(server, client), client, server, None, port, "tcp",
                                 {"failed_logins": a["fail"], "successful_logins": a["ok"],
                                  "response_delays_s": a["delays"], "uid": a["uid"]}))
        return out
