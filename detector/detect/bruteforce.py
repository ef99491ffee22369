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

The SSH state is columnar and mergeable (issue 21): per (client, server, port) the connection
count (:class:`KeyedSums`, at most ``max_pairs``: those with fewest connections go first) and its
earliest ``max_series`` failed-looking connections (time, server bytes, uid), at most
``max_connections`` rows (each pair's latest go first); the densest window is found for all
pairs at once. FTP and VNC logins are few events, kept per (service, client, server, port).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.detect.keyed_table import KeyedSums, KeyedTable, Led, Names, key_ids, latest_first
from detector.l7.events import Events
from kernels.xp_ops import group_starts, lexsort

SSH_PORTS = (22, 2222)
PAIR = ("client", "server", "port")


def _fewest_connections_out(cols: dict) -> np.ndarray:
    return cols["conns"]


def densest_windows(group: np.ndarray, ts: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by ``group`` then ``ts``: each group's first row starting its densest
    window (most rows within ``window`` of it), and that count; as arrays over the groups in
    order of appearance."""
    n = len(group)
    # how many rows of a row's group start no later than its time + window: each query sorts
    # after the rows it counts, lexicographically by (group, time)
    g2, t2 = np.concatenate([group, group]), np.concatenate([ts, ts + window])
    query = np.concatenate([np.zeros(n, bool), np.ones(n, bool)])
    order = lexsort(np, (query, t2, g2))
    rows_before = np.cumsum(~query[order])
    upto = np.empty(n, np.int64)
    upto[order[query[order]] - n] = rows_before[query[order]]
    count = upto - np.arange(n)
    best = np.lexsort((np.arange(n), -count, group))  # per group: the most rows, the first such row
    first = best[group_starts(np, [group[best]])]
    return first, count[first]


class BruteForce(Detector):
    name = "bruteforce"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        min_failures: int = 10
        high_failures: int = 30
        window_s: float = 1800.0
        ssh_fail_max_resp_bytes: int = 4500
        ssh_size_cv: float = 0.25
        distributed_min_sources: int = 10
        human_response_s: float = 1.0
        max_pairs: int = 200_000  # (client, server, port) SSH pairs held
        max_series: int = 4096  # failed-looking connections judged per pair (the earliest)
        max_connections: int = 2_000_000  # failed-looking connections held over all pairs

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        p = self.p
        self.ssh = KeyedSums(PAIR, {"conns": "sum"}, p.max_pairs, _fewest_connections_out)
        self.small = KeyedTable(PAIR, ("ts", "bytes", "uid"), p.max_series, p.max_connections, latest_first(PAIR))
        self.led = Led(self.ssh, self.small)
        self.names = Names()
        self.logins: dict[tuple[str, str, str, int], dict] = {}  # (service, client, server, port)

    @property
    def evictions(self) -> int:
        """Pairs dropped at ``max_pairs`` (with their connections), connections at ``max_connections``."""
        return self.ssh.evicted + self.small.evicted

    def merge(self, other: BruteForce) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        self.ssh.merge(other.ssh)
        self.small.merge(other.small)
        self.led.reconcile()
        self.names.merge(other.names)
        for key, b in other.logins.items():
            self._take_logins(key, b)

    def observe_flows(self, f: FlowView) -> None:
        rows = np.flatnonzero(np.isin(f["resp_p"], SSH_PORTS) & (f["proto"] == "tcp") & (f["resp_pkts"] > 0))
        if not len(rows):  # (no answer: scanning, not guessing)
            return
        key = {"client": f.ids("orig_h")[rows], "server": f.ids("resp_h")[rows],
               "port": f["resp_p"][rows].astype(np.int64)}
        resp = f["resp_bytes"][rows].astype(float)
        small = np.flatnonzero(~np.isnan(resp) & (resp <= self.p.ssh_fail_max_resp_bytes))  # (unknown: not judged)
        at = rows[small]
        self.led.add({**key, "conns": np.ones(len(rows), np.int64)},
                     {**{k: v[small] for k, v in key.items()}, "ts": f["ts"][at].astype(np.int64),
                      "bytes": resp[small].astype(np.int64), "uid": f.ids_at("uid", at),
                      "cid": f.ids_at("community_id", at)})
        for name in ("orig_h", "resp_h"):
            self.names.add(*f.named(name, rows))
        for name in ("uid", "community_id"):
            self.names.add(*f.named(name, at))
        self.names.prune(self._held_ids)

    def _held_ids(self) -> list[np.ndarray]:
        P, S = self.led.rows(), self.small.rows()
        return ([P["client"], P["server"]] if P else []) + ([S["uid"], S["cid"]] if S else [])

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
        timed = not ok and delay_s is not None
        self._take_logins(key, {"first": c.ts_ns, "last": c.ts_ns, "uid": c.uid, "fail": int(not ok), "ok": int(ok),
                                "fast_fail": int(timed and delay_s < self.p.human_response_s),
                                "users": {user} if user else set(),
                                "delays": [(c.ts_ns, round(delay_s, 3))] if timed else []})

    def _take_logins(self, key: tuple, b: dict) -> None:
        """Add the logins ``b`` of one (service, client, server, port): named by the earliest,
        the 50 first user names in order and the 20 earliest failures' response delays, in any
        order of events and merges."""
        a = self.logins.get(key)
        if a is None:
            self.logins[key] = b
            return
        a["first"], a["uid"] = min((a["first"], a["uid"]), (b["first"], b["uid"]))
        a["last"] = max(a["last"], b["last"])
        for k in ("fail", "ok", "fast_fail"):
            a[k] += b[k]
        a["users"] = set(sorted(a["users"] | b["users"])[:50])
        a["delays"] = sorted(a["delays"] + b["delays"])[:20]

    def _ssh_failures(self) -> list[dict]:
        """Per pair with two or more failed-looking connections whose server byte counts are
        alike (coefficient of variation at most ``ssh_size_cv``): its densest window of them."""
        P, S = self.led.rows(), self.small.rows()
        if not P or not S:
            return []
        pair = key_ids(S, PAIR)
        starts = np.flatnonzero(group_starts(np, [S[k] for k in PAIR]))
        counts = np.diff(np.append(starts, len(pair)))
        group = np.repeat(np.arange(len(starts)), counts)
        size = S["bytes"].astype(np.float64)
        mean = np.bincount(group, size) / counts
        std = np.sqrt(np.bincount(group, (size - mean[group]) ** 2) / counts)
        alike = (counts >= 2) & (mean > 0) & (std <= self.p.ssh_size_cv * mean)
        if not alike.any():
            return []
        first, best = densest_windows(group, S["ts"], int(self.p.window_s * 1e9))
        conns = dict(zip(key_ids(P, PAIR).tolist(), P["conns"].tolist()))
        out = []
        for g in np.flatnonzero(alike).tolist():
            a, n = int(first[g]), int(best[g])
            out.append({"key": tuple(int(S[k][a]) for k in PAIR), "n": n, "first": int(S["ts"][a]),
                        "last": int(S["ts"][a + n - 1]), "median": int(np.median(S["bytes"][a:a + n])),
                        "uid": int(S["uid"][a + n - 1]), "cid": int(S["cid"][a + n - 1]),
                        "conns": conns.get(int(pair[a]), 0)})
        return out

    def _severity(self, n: int) -> tuple[str, float]:
        if n >= self.p.high_failures:
            return "high", 0.85
        return "medium", 0.65

    def finish(self) -> list[Alert]:
        p = self.p
        out = []
        weak: dict[tuple[int, int], list] = defaultdict(list)
        for fails in self._ssh_failures():
            client, server, port = fails["key"]
            if fails["n"] >= p.min_failures:
                client, server = self.names.text(np.array([client, server], np.uint64))
                uid, cid = self.names.text(np.array([fails["uid"], fails["cid"]], np.uint64))
                sev, score = self._severity(fails["n"])
                out.append(Alert(fails["first"], fails["last"], "unauthorized_access", "ssh_bruteforce", sev, score,
                                 f"{client} made {fails['n']} SSH connections to {server}:{port} that ended after the "
                                 f"server sent about {fails['median']} bytes, as failed logins "
                                 "do: password guessing", self.label, self.host_for(server, client), client, server,
                                 None, port, "tcp",
                                 {"failed_looking_connections": fails["n"], "connections": fails["conns"],
                                  "server_bytes_median": fails["median"],
                                  "window_s": p.window_s, "uid": uid}, cid))
            else:
                weak[(server, port)].append((client, fails))
        for (server_id, port), sources in weak.items():
            if len(sources) < p.distributed_min_sources:
                continue
            (server,) = self.names.text(np.array([server_id], np.uint64))
            total = sum(f["n"] for _, f in sources)
            first = min(f["first"] for _, f in sources)
            last = max(f["last"] for _, f in sources)
            clients = self.names.text(np.array([c for c, _ in sources], np.uint64))
            out.append(Alert(first, last, "unauthorized_access", "distributed_guessing", "medium", 0.65,
                             f"{len(sources)} sources made {total} failed-looking SSH connections to {server}:{port}, "
                             "each staying under the per-source threshold: distributed password guessing",
                             self.label, self.host_for(server), None, server, None, port, "tcp",
                             {"sources": sorted(clients)[:32], "source_count": len(sources),
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
                                 f"the password challenge within {max(d for _, d in a['delays']):.2f} s (a person takes longer than "
                                 f"{p.human_response_s:g} s), and failed: a tool probing for empty or default passwords",
                                 self.label, self.host_for(server, client), client, server, None, port, "tcp",
                                 {"failed_logins": a["fail"], "successful_logins": a["ok"],
                                  "response_delays_s": [d for _, d in a["delays"]], "uid": a["uid"]}))
        return out
