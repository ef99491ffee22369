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

State is columnar and mergeable: each peer's earliest ``KEEP_EARLIEST`` established connections
and its earliest connection at each hop count are :class:`KeyedTable` rows of 64-bit ids (their
text in :class:`Names`), folded in any order of batches; at most ``max_connections`` rows a
table, past which each peer's latest connections are evicted first (counted). Reports replay the held rows
per peer in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detector.alerts import Alert
from detector.detect.address_columns import string_ids
from detector.detect.base import Detector, FlowView
from detector.detect.keyed_table import KeyedTable, Names
from kernels.xp_ops import group_starts

INITIAL_TTLS = np.array([32, 64, 128, 255])
KEEP_EARLIEST = 256  # connections kept per peer for the replay in time order
MAX_HOP_COUNTS = 16  # hop counts per peer whose earliest connection the replay also sees
TEXT_COLUMNS = ("src", "dst", "uid", "cid")  # the id columns whose text Names keeps


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


def established_rows(f: FlowView) -> np.ndarray:
    """:func:`established` over the ``history`` column, as one mask."""
    has = {c: f.has_text("history", c) for c in "hAaDd"}
    return (has["h"] & has["A"]) | (has["D"] & (has["d"] | has["a"])) | (has["d"] & has["A"])


def _deepest_out(cols: dict) -> np.ndarray:
    """Eviction priority: each peer's connections ranked by time, the latest ranks going first
    over all peers, so that every peer keeps its earliest ones (a peer's move is only seen
    after connections that settled its hop count)."""
    order = np.lexsort((cols["ts"], cols["src"]))
    src = cols["src"][order]
    starts = group_starts(np, [src])
    at = np.arange(len(src))
    rank = np.empty(len(src), np.int64)
    rank[order] = at - np.maximum.accumulate(np.where(starts, at, 0))
    return -rank


class TtlChange(Detector):
    name = "ttl_change"
    version = "3"

    @dataclass(frozen=True)
    class Params:
        min_delta: int = 5
        high_delta: int = 16
        peer_min_connections: int = 3  # established connections before a peer's hop count is known
        max_peers: int = 100_000  # peers taken from a site model
        max_connections: int = 2_000_000  # rows a table holds (about 60 B each); past it, peers' latest go first

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.found: dict[tuple, Alert] = {}
        self.seeded: dict[str, dict] = {}  # from a site model
        cap = self.p.max_connections
        self.early = KeyedTable(("src",), ("ts", "dst", "uid"), KEEP_EARLIEST, cap, _deepest_out)
        self.first_at = KeyedTable(("src", "h"), ("ts", "dst", "uid"), 1, cap, _deepest_out)
        self.names = Names()  # the text of the addresses, uids and community ids held

    def learned(self) -> dict:
        """The peers whose hop count had settled."""
        peers, _ = self._replay(all_peers=True)
        settled = [(i, p) for i, p in peers.items() if p["n"] >= self.p.peer_min_connections]
        text = dict(zip(string_ids(pa.array(list(self.seeded), pa.string())).tolist(), self.seeded)) \
            if self.seeded else {}
        names = self.names.text(np.array([i for i, _ in settled], np.uint64)) if settled else []
        return {"peers": {text.get(i) or name: [p["hops"], p["n"], p["ttl"]]
                          for (i, p), name in zip(settled, names)}}

    def seed(self, pins: dict) -> None:
        for addr, (hops, n, ttl) in dict(pins.get("peers", {})).items():
            if len(self.seeded) < self.p.max_peers:
                self.seeded.setdefault(str(addr), {"hops": int(hops), "n": int(n), "ttl": int(ttl)})

    def merge(self, other: TtlChange) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        self.early.merge(other.early)
        self.first_at.merge(other.first_at)
        self.names.merge(other.names)
        for key, alert in other.found.items():
            mine = self.found.get(key)
            self.found[key] = alert if mine is None else self._combined(mine, alert)
        for addr, p in other.seeded.items():
            self.seeded.setdefault(addr, p)

    @property
    def evictions(self) -> int:
        """Connections dropped at ``max_connections``."""
        return self.early.evicted + self.first_at.evicted

    def observe_flows(self, f: FlowView) -> None:
        tcp = np.flatnonzero((f["proto"] == "tcp") & established_rows(f))
        if not len(tcp):
            return
        for side, other in (("orig", "resp"), ("resp", "orig")):
            lo = np.nan_to_num(f[f"{side}_ttl_min"][tcp].astype(float))
            hi = np.nan_to_num(f[f"{side}_ttl_max"][tcp].astype(float))
            h_lo = hops(lo)
            delta = np.abs(h_lo - hops(hi))
            far = delta >= self.p.min_delta
            for j, d, ttl, ttl_hi in zip(tcp[far].tolist(), delta[far].tolist(), lo[far].tolist(),
                                         hi[far].tolist()):
                self._injected(f, j, side, int(ttl), int(ttl_hi), int(d))
            learn = ~far & (lo > 0)
            self._learn(f, (tcp[learn], f"{side}_h", f"{other}_h"), h_lo[learn], lo[learn])

    def _injected(self, f, j, side, lo, hi, d) -> None:
        src, dst = (f.take("orig_h", [j])[0], f.take("resp_h", [j])[0])
        if side == "resp":
            src, dst = dst, src
        sport = int(f["orig_p"][j] if side == "orig" else f["resp_p"][j])
        dport = int(f["resp_p"][j] if side == "orig" else f["orig_p"][j])
        ts, end = int(f["ts"][j]), int(f["ts"][j] + f["duration"][j] * 1e9)
        alert = Alert(
            ts, end, "mitm", "ttl_change", "low", 0.35,
            f"Packets claiming to come from {src}:{sport} in its established connection to {dst}:{dport} arrived "
            f"with TTLs {lo} and {hi} ({d} hops apart): segments injected by another host (session hijacking "
            "or reset injection), or a route change",
            self.label, self.host_for(dst, src), src, dst, sport, dport, "tcp",
            {"ttl_min": lo, "ttl_max": hi, "hop_difference": d, "far": d >= self.p.high_delta, "direction": side,
             "history": f["history"][j],
             "uid": f["uid"][j], "connections": 1, "ports": [f"{sport}->{dport}"]}, f["community_id"][j])
        key = ("inject", src, dst)
        seen = self.found.get(key)
        self.found[key] = alert if seen is None else self._combined(seen, alert)

    def _combined(self, a: Alert, b: Alert) -> Alert:
        """One alert per pair of hosts: the earlier connection's, with the other's connections
        counted in (the same whatever order batches or partitions come in)."""
        first, then = (a, b) if (a.ts_ns, a.evidence["uid"]) <= (b.ts_ns, b.evidence["uid"]) else (b, a)
        ev, add = first.evidence, then.evidence
        ev["connections"] += add["connections"]
        ev["hop_difference"] = max(ev["hop_difference"], add["hop_difference"])
        ev["far"] = ev["hop_difference"] >= self.p.high_delta
        ev["ports"] = sorted(set(ev["ports"]) | set(add["ports"]))[:16]  # any 16, the same in any order
        first.ts_end_ns = max(first.ts_end_ns, then.ts_end_ns)
        return first

    def _learn(self, f: FlowView, at: tuple[np.ndarray, str, str], h: np.ndarray, ttl: np.ndarray) -> None:
        """Hold what the replay needs of connections ``rows`` sent from column ``src``."""
        rows, src, dst = at
        if not len(rows):
            return
        cols = {"src": f.ids(src)[rows], "dst": f.ids(dst)[rows], "uid": f.ids_at("uid", rows),
                "cid": f.ids_at("community_id", rows), "ts": f["ts"][rows].astype(np.int64),
                "h": h.astype(np.int16), "ttl": ttl.astype(np.int16)}
        self.early.add(cols)
        self.first_at.add(cols)
        for name in (src, dst, "uid", "community_id"):
            self.names.add(*f.named(name, rows))
        self.names.prune(lambda: [r[k] for r in (self.early.rows(), self.first_at.rows()) if r for k in TEXT_COLUMNS])

    def _connections(self) -> dict[str, np.ndarray]:
        """The held connections, once each, by peer and then in time order: each peer's
        earliest ones, and its earliest at each of its first ``MAX_HOP_COUNTS`` hop counts."""
        E, F = self.early.rows(), self.first_at.rows()
        if not E:
            return {}
        order = np.lexsort((F["uid"], F["dst"], F["ts"], F["src"]))
        F = {k: v[order] for k, v in F.items()}
        starts = group_starts(np, [F["src"]])
        rank = np.arange(len(starts)) - np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))
        cols = {k: np.concatenate([E[k], F[k][rank < MAX_HOP_COUNTS]]) for k in E}
        order = np.lexsort((cols["h"], cols["uid"], cols["dst"], cols["ts"], cols["src"]))
        cols = {k: v[order] for k, v in cols.items()}
        once = group_starts(np, [cols[k] for k in ("src", "ts", "dst", "uid", "h")])
        return {k: v[once] for k, v in cols.items()}

    def _replay(self, all_peers: bool = False) -> tuple[dict[int, dict], list[Alert]]:
        """A peer's hop count over its connections in time order; a settled count that later
        moves by ``min_delta`` is reported at low severity (routes do change; injection is
        within one connection). Returns the alerts and the hop counts learned per address id
        (from the seeds and established connections: all peers with ``all_peers``, else those
        replayed one connection at a time). Only peers whose hop count ever moves from their
        first, or that a site model seeded, are replayed in Python."""
        seeds = list(self.seeded)
        ids = string_ids(pa.array(seeds, pa.string())) if seeds else np.zeros(0, np.uint64)
        peers = {i: dict(self.seeded[a]) for i, a in zip(ids.tolist(), seeds)}
        C = self._connections()
        if not C:
            return peers, []
        gs = np.flatnonzero(group_starts(np, [C["src"]]))
        sizes = np.diff(np.append(gs, len(C["src"])))
        gid = np.repeat(np.arange(len(gs)), sizes)
        h = C["h"].astype(np.int64)
        steady = np.ones(len(gs), bool)
        steady[gid[np.abs(h - h[gs][gid]) >= self.p.min_delta]] = False
        steady &= ~np.isin(C["src"][gs], ids)
        if all_peers:
            for s, hops, n, ttl in zip(C["src"][gs[steady]].tolist(), h[gs[steady]].tolist(), sizes[steady].tolist(),
                                       C["ttl"][gs[steady]].tolist()):
                peers[s] = {"hops": hops, "n": n, "ttl": ttl}
        rows = np.flatnonzero(~steady[gid])
        found: list[tuple[int, dict, dict]] = []  # (row of the first moved connection, before, alert state)
        last, p, moved = None, None, None
        for j, s, hops, ttl in zip(rows.tolist(), C["src"][rows].tolist(), h[rows].tolist(), C["ttl"][rows].tolist()):
            if s != last:
                last, p, moved = s, peers.get(s), None
            if p is None:
                p = peers[s] = {"hops": hops, "n": 0, "ttl": ttl}
            if abs(hops - p["hops"]) < self.p.min_delta:
                p["n"] += 1
            elif p["n"] < self.p.peer_min_connections:
                p.update(hops=hops, n=1, ttl=ttl)  # not settled yet: start over
            elif moved is not None:
                moved["connections"] += 1
            else:
                moved = {"connections": 1}
                found.append((j, dict(p), moved))
        return peers, self._moved_alerts(C, found)

    def _moved_alerts(self, C: dict, found: list) -> list[Alert]:
        if not found:
            return []
        at = np.array([j for j, _, _ in found], np.int64)
        text = {k: self.names.text(C[k][at]) for k in TEXT_COLUMNS}
        out = []
        for k, (j, p, moved) in enumerate(found):
            src, dst, ts, h, ttl = text["src"][k], text["dst"][k], int(C["ts"][j]), int(C["h"][j]), int(C["ttl"][j])
            out.append(Alert(
                ts, ts, "mitm", "ttl_change", "low", 0.3,
                f"{src} is {h} hops away in a connection to {dst} after {p['n']} connections at {p['hops']} "
                f"hops (TTL {ttl} against {p['ttl']}): its traffic now takes another path, or comes from "
                "another host", self.label, self.host_for(dst, src), src, dst, None, None, "tcp",
                {"hops_before": p["hops"], "hops_now": h, "ttl_before": p["ttl"], "ttl_now": ttl,
                 "connections_before": p["n"], "connections": moved["connections"], "uid": text["uid"][k]},
                text["cid"][k]))
        return out

    def finish(self) -> list[Alert]:
        return list(self.found.values()) + self._replay()[1]
