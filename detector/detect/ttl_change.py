"""Packets injected into a connection by another host (mitm / ttl_change).

Method: the IP TTL (hop limit) of one side of a connection starts at its operating system's
initial value (32, 64, 128 or 255) and is lowered by each router on the path, so within a TCP
connection the hop count (initial value minus TTL) is constant, give or take a route change.
Segments whose hop count differs by ``min_delta`` or more from the others of the same direction
were sent from somewhere else: TCP session hijacking and RST injection (the TTL heuristic of
Zeek's ``TTL_change`` weird and of Snort's stream preprocessor). Hop counts, not raw TTLs, are
compared so that a middlebox answering with another initial TTL on the same path does not
count. Only established connections count (a spoofed SYN answered by the real owner's RST is a
flood, not a hijack). One alert per pair of hosts, **low alone**: route changes, anycast and
load-balanced servers, and captures merged from two taps change a server's TTL within a
connection too. It is raised to high when corroborated (:mod:`detector.detect.corroboration`):
a sequence number of the same pair resent with other bytes (``rexmit_inconsistency``), an ARP
spoof or an ICMP redirect involving its addresses. ``high_delta`` is kept in the evidence as
``far``: a change that large is rarer for a route change. A peer whose hop
count settles over ``peer_min_connections`` connections and later moves by ``min_delta`` is
reported at low severity: a route change looks the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView, keep_earliest

INITIAL_TTLS = np.array([32, 64, 128, 255])
KEEP_EARLIEST = 256  # connections kept per peer for the replay in time order


def hops(ttl: np.ndarray) -> np.ndarray:
    """Routers passed: the smallest usual initial TTL at or above ``ttl``, minus ``ttl``."""
    initial = INITIAL_TTLS[np.minimum(np.searchsorted(INITIAL_TTLS, ttl), len(INITIAL_TTLS) - 1)]
    return initial - ttl


def established(history: str) -> bool:
    """Both sides took part: a completed handshake, or payload one side sent and the other
    acknowledged (a record that starts mid-stream, after an idle split). A spoofed SYN answered
    by the real owner's RST is not a connection and does not count."""
    return ("h" in history and "A" in history) or ("D" in history and ("d" in history or "a" in history)) or (
        "d" in history and "A" in history)


class TtlChange(Detector):
    name = "ttl_change"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        min_delta: int = 5
        high_delta: int = 16
        peer_min_connections: int = 3  # established connections before a peer's hop count is known
        max_peers: int = 100_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.found: dict[tuple, Alert] = {}
        self.seeded: dict[str, dict] = {}  # from a site model
        # per peer, its earliest connections (a max-heap by time) and the earliest at each hop
        # count: what the replay in time order needs, whatever order flows arrive in
        self.early: dict[str, list] = {}
        self.first_at: dict[str, dict[int, tuple]] = {}

    def learned(self) -> dict:
        """The peers whose hop count had settled."""
        peers, _ = self._replay()
        return {"peers": {a: [p["hops"], p["n"], p["ttl"]] for a, p in peers.items()
                          if p["n"] >= self.p.peer_min_connections}}

    def seed(self, pins: dict) -> None:
        for addr, (hops, n, ttl) in dict(pins.get("peers", {})).items():
            if len(self.seeded) < self.p.max_peers:
                self.seeded.setdefault(str(addr), {"hops": int(hops), "n": int(n), "ttl": int(ttl)})

    def observe_flows(self, f: FlowView) -> None:
        tcp = np.flatnonzero(f["proto"] == "tcp")
        if not len(tcp):
            return
        tcp = tcp[np.array([established(h) for h in f.take("history", tcp)], bool)]
        oh, rh = f.take("orig_h", tcp), f.take("resp_h", tcp)
        for side in ("orig", "resp"):
            lo = np.nan_to_num(f[f"{side}_ttl_min"][tcp].astype(float))
            hi = np.nan_to_num(f[f"{side}_ttl_max"][tcp].astype(float))
            h_lo, h_hi = hops(lo), hops(hi)
            delta = np.abs(h_lo - h_hi)
            srcs, dsts = (oh, rh) if side == "orig" else (rh, oh)
            for j, src, dst, d, ttl, ttl_hi, h in zip(tcp.tolist(), srcs, dsts, delta.tolist(), lo.tolist(),
                                                       hi.tolist(), h_lo.tolist()):
                if d >= self.p.min_delta:
                    self._injected(f, j, side, src, dst, int(ttl), int(ttl_hi), int(d))
                elif ttl > 0:
                    self._learn(f, j, src, dst, int(h), int(ttl))

    def _injected(self, f, j, side, src, dst, lo, hi, d) -> None:
        sport = int(f["orig_p"][j] if side == "orig" else f["resp_p"][j])
        dport = int(f["resp_p"][j] if side == "orig" else f["orig_p"][j])
        key = ("inject", src, dst)
        seen = self.found.get(key)
        ts, end = int(f["ts"][j]), int(f["ts"][j] + f["duration"][j] * 1e9)
        if seen is not None:
            ev = seen.evidence
            ev["connections"] += 1
            ev["hop_difference"] = max(ev["hop_difference"], d)
            ev["far"] = ev["hop_difference"] >= self.p.high_delta
            if len(ev["ports"]) < 16 and f"{sport}->{dport}" not in ev["ports"]:
                ev["ports"].append(f"{sport}->{dport}")
            seen.ts_ns, seen.ts_end_ns = min(seen.ts_ns, ts), max(seen.ts_end_ns, end)
            return
        self.found[key] = Alert(
            ts, end, "mitm", "ttl_change", "low", 0.35,
            f"Packets claiming to come from {src}:{sport} in its established connection to {dst}:{dport} arrived "
            f"with TTLs {lo} and {hi} ({d} hops apart): segments injected by another host (session hijacking "
            "or reset injection), or a route change",
            self.label, self.host_for(dst, src), src, dst, sport, dport, "tcp",
            {"ttl_min": lo, "ttl_max": hi, "hop_difference": d, "far": d >= self.p.high_delta, "direction": side,
             "history": f["history"][j],
             "uid": f["uid"][j], "connections": 1, "ports": [f"{sport}->{dport}"]}, f["community_id"][j])

    def _learn(self, f, j, src, dst, h: int, ttl: int) -> None:
        """Keep what the replay needs of a connection of ``src``."""
        if src not in self.early and len(self.early) >= self.p.max_peers:
            return
        ts = int(f["ts"][j])
        obs = (ts, dst, h, ttl, f["uid"][j], f["community_id"][j])
        keep_earliest(self.early.setdefault(src, []), (-ts, obs), KEEP_EARLIEST)
        at = self.first_at.setdefault(src, {})
        if (h not in at and len(at) < 16) or (h in at and obs < at[h]):
            at[h] = obs

    def _replay(self) -> tuple[dict[str, dict], list[Alert]]:
        """A peer's hop count over its connections in time order; a settled count that later
        moves by ``min_delta`` is reported at low severity (routes do change; injection is
        within one connection). Counts are over each peer's earliest ``KEEP_EARLIEST``
        connections and the first at each hop count. Returns the hop counts learned per
        address (from the seeds and established connections) and the alerts."""
        peers = {a: dict(p) for a, p in self.seeded.items()}
        out = []
        for src, heap in self.early.items():
            seq = sorted({o for _, o in heap} | set(self.first_at.get(src, {}).values()))
            p, alert = peers.get(src), None
            for ts, dst, h, ttl, uid, cid in seq:
                if p is None:
                    p = peers[src] = {"hops": h, "n": 0, "ttl": ttl}
                if abs(h - p["hops"]) < self.p.min_delta:
                    p["n"] += 1
                elif p["n"] < self.p.peer_min_connections:
                    p.update(hops=h, n=1, ttl=ttl)  # not settled yet: start over
                elif alert is not None:
                    alert.evidence["connections"] += 1
                else:
                    alert = Alert(
                        ts, ts, "mitm", "ttl_change", "low", 0.3,
                        f"{src} is {h} hops away in a connection to {dst} after {p['n']} connections at {p['hops']} "
                        f"hops (TTL {ttl} against {p['ttl']}): its traffic now takes another path, or comes from "
                        "another host", self.label, self.host_for(dst, src), src, dst, None, None, "tcp",
                        {"hops_before": p["hops"], "hops_now": h, "ttl_before": p["ttl"], "ttl_now": ttl,
                         "connections_before": p["n"], "connections": 1, "uid": uid}, cid)
            if alert is not None:
                out.append(alert)
        return peers, out

    def finish(self) -> list[Alert]:
        return list(self.found.values()) + self._replay()[1]
