"""Connections that last for hours (unauthorized_access / long_connection).

Method: RITA's long-connection analysis. A connection's records are joined by their five-tuple
(a long flow is written as interim records every ``[flows] active_timeout``; the next record of
the same connection starts within ``gap_s`` of the previous one's end), and a connection that
spans ``min_duration_s`` (1 h) or more is reported with its bytes each way and its first
payload's protocol. Records shorter than ``track_from_s`` are not kept (a long connection is
made of interim records as long as the active timeout; its last, shorter piece is left out of
the span and the bytes).

Severity follows the evidence: low alone (SSH sessions, VPNs and persistent websockets last
hours too); medium for a local host's outbound connection to an external destination that no
site host had contacted before it began (what an implant calling home looks like); raised to
high by the shared rule (:mod:`detector.detect.corroboration`) when the same pair also shows a
port/protocol mismatch (``port_mismatch``) or beacons (``beaconing``).

State is columnar and mergeable (issue 21): per five-tuple (address ids, ports, protocol) the
time its kept records cover (:class:`KeyedSums`; at most ``max_connections``, past which those
covering least go first), and its earliest ``PIECES`` records as a follower table. A report
chains only the five-tuples whose records span ``min_duration_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detector.alerts import Alert
from detector.detect.address_columns import string_ids
from detector.detect.base import Detector, FlowView
from detector.detect.first_contact import FirstContacts
from detector.detect.keyed_table import KeyedSums, KeyedTable, Led, Names, key_ids
from detector.flows.services import service_name
from kernels.xp_ops import group_starts

PIECES = 256  # records kept per five-tuple (a week of 30-minute interim records is 336)
TUPLE = ("src", "sport", "dst", "dport", "proto")
PROTO_CODE = {"tcp": 6, "udp": 17}


def _least_covered_out(cols: dict) -> np.ndarray:
    return cols["covered"]


class LongConnection(Detector):
    name = "long_connection"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        min_duration_s: float = 3600.0
        gap_s: float = 600.0
        track_from_s: float = 300.0  # records at least this long are kept (interim ones are active_timeout long)
        max_connections: int = 100_000
        max_destinations: int = 1_000_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.tuples = KeyedSums(TUPLE, {"covered": "sum", "first": "min", "last": "max"}, self.p.max_connections,
                                _least_covered_out)
        self.pieces = KeyedTable(TUPLE, ("start", "uid"), PIECES)  # the earliest records of each
        self.led = Led(self.tuples, self.pieces)
        self.names = Names()  # addresses, uids, services and community ids
        self.first_contact = FirstContacts(self.p.max_destinations)

    @property
    def evictions(self) -> int:
        """Five-tuples dropped at ``max_connections``; destinations at ``max_destinations``."""
        return self.tuples.evicted + self.first_contact.evicted

    def merge(self, other: LongConnection) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        self.tuples.merge(other.tuples)
        self.pieces.merge(other.pieces)
        self.led.reconcile()
        self.names.merge(other.names)
        self.first_contact.merge(other.first_contact)

    def observe_flows(self, f: FlowView) -> None:
        if not len(f):
            return
        self.first_contact.note(f)
        proto = f["proto"]
        dur = np.nan_to_num(f["duration"].astype(float))
        rows = np.flatnonzero(((proto == "tcp") | (proto == "udp")) & (dur >= self.p.track_from_s))
        if not len(rows):
            return
        start = f["ts"][rows].astype(np.int64)
        end = start + (dur[rows] * 1e9).astype(np.int64)
        key = {"src": f.ids("orig_h")[rows], "sport": f["orig_p"][rows].astype(np.int64), "dst": f.ids("resp_h")[rows],
               "dport": f["resp_p"][rows].astype(np.int64),
               "proto": np.where(proto[rows] == "tcp", PROTO_CODE["tcp"], PROTO_CODE["udp"]).astype(np.int64)}
        codes = f["first_payload"][rows].astype(np.int64) if "first_payload" in f else np.full(len(rows), -1)
        service = [s or (service_name(c, p) if c > 0 else None)  # (long records are few)
                   for s, c, p in zip(f.take("service", rows), codes.tolist(), key["dport"].tolist())]
        service_text = pa.array(service, pa.string())
        self.led.add({**key, "covered": end - start, "first": start, "last": end},
                     {**key, "start": start, "end": end,
                      "out": np.nan_to_num(f["orig_bytes"][rows].astype(float)).astype(np.int64),
                      "in": np.nan_to_num(f["resp_bytes"][rows].astype(float)).astype(np.int64),
                      "uid": f.ids_at("uid", rows), "service": string_ids(service_text),
                      "cid": f.ids_at("community_id", rows)})
        self.names.add(string_ids(service_text), service_text)
        for name in ("orig_h", "resp_h", "uid", "community_id"):
            self.names.add(*f.named(name, rows))
        self.names.prune(self._held_ids)

    def _held_ids(self) -> list[np.ndarray]:
        T, P = self.led.rows(), self.pieces.rows()
        return ([T["src"], T["dst"]] if T else []) + ([P[k] for k in ("uid", "service", "cid")] if P else [])

    def _connections(self, P: dict, rows: slice):
        """The records ``rows`` of one five-tuple (in time order), chained into connections where
        one starts within ``gap_s`` of the previous one's end."""
        gap = round(self.p.gap_s * 1e9)
        chain: list[int] = []
        end = 0
        for j in range(rows.start, rows.stop):
            if chain and int(P["start"][j]) > end + gap:
                yield chain
                chain = []
            chain.append(j)
            end = max(end, int(P["end"][j]))
        if chain:
            yield chain

    def finish(self) -> list[Alert]:
        T = self.led.rows()
        if not T:
            return []
        P = self.pieces.rows()
        spans = np.flatnonzero(T["last"] - T["first"] >= self.p.min_duration_s * 1e9)  # (a chain spans no more)
        if not len(spans):
            return []
        held = key_ids(P, TUPLE)
        starts = np.flatnonzero(group_starts(np, [P[k] for k in TUPLE]))
        ends = np.append(starts[1:], len(held))
        at = dict(zip(held[starts].tolist(), zip(starts.tolist(), ends.tolist())))
        out = []
        for t in spans.tolist():
            where = at.get(int(key_ids({k: T[k][t:t + 1] for k in TUPLE}, TUPLE)[0]))
            if where is None:
                continue
            for chain in self._connections(P, slice(*where)):
                alert = self._alert(T, t, P, chain)
                if alert is not None:
                    out.append(alert)
        return out

    def _alert(self, T: dict, t: int, P: dict, chain: list[int]) -> Alert | None:
        first = chain[0]
        start, end = int(P["start"][first]), int(P["end"][chain].max())
        hours = (end - start) / 3.6e12
        if hours * 3600 < self.p.min_duration_s:
            return None
        client, server, uid, service, cid = self.names.text(np.array(
            [T["src"][t], T["dst"][t], P["uid"][first], P["service"][first], P["cid"][first]], np.uint64))
        cport, port = int(T["sport"][t]), int(T["dport"][t])
        proto = "tcp" if int(T["proto"][t]) == PROTO_CODE["tcp"] else "udp"
        sent, got = int(P["out"][chain].sum()), int(P["in"][chain].sum())
        outbound = self.site.is_local(client) and self.site.is_external(server)
        new = outbound and self.first_contact.get(server, start) >= start
        return Alert(
            start, end, "unauthorized_access", "long_connection", "medium" if new else "low",
            0.55 if new else 0.3,
            f"{client} kept a connection to {server}:{port}/{proto} open for {hours:.1f} h "
            f"({sent:,} bytes out, {got:,} in{', ' + service if service else ''})"
            + (", to a destination no site host had contacted before" if new else ""),
            self.label, self.host_for(client, server), client, server, cport, port, proto,
            {"hours": round(hours, 2), "bytes_out": sent, "bytes_in": got, "records": len(chain),
             "service": service, "new_destination": new, "uid": uid}, cid)
