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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.detect.first_contact import FirstContacts
from detector.flows.services import service_name

PIECES = 256  # records kept per five-tuple (a week of 30-minute interim records is 336)


class LongConnection(Detector):
    name = "long_connection"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        min_duration_s: float = 3600.0
        gap_s: float = 600.0
        track_from_s: float = 300.0  # records at least this long are kept (interim ones are active_timeout long)
        max_connections: int = 100_000
        max_destinations: int = 1_000_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.pieces: dict[tuple, list[tuple]] = {}  # five-tuple -> its records (start, end, out, in, uid, ...)
        self.first_contact = FirstContacts(self.p.max_destinations)
        self.dropped = 0

    @property
    def evictions(self) -> int:
        """Records dropped at ``max_connections`` and the pieces cap; destinations at ``max_destinations``."""
        return self.dropped + self.first_contact.evicted

    def observe_flows(self, f: FlowView) -> None:
        if not len(f):
            return
        self.first_contact.note(f)
        proto = f["proto"]
        dur = f["duration"].astype(float)
        rows = np.flatnonzero(((proto == "tcp") | (proto == "udp")) & (dur >= self.p.track_from_s))
        has_codes = "first_payload" in f
        for j in rows.tolist():
            key = (f["orig_h"][j], int(f["orig_p"][j]), f["resp_h"][j], int(f["resp_p"][j]), proto[j])
            pieces = self.pieces.get(key)
            if pieces is None:
                if len(self.pieces) >= self.p.max_connections:
                    self.dropped += 1
                    continue
                pieces = self.pieces[key] = []
            elif len(pieces) >= PIECES:  # the earliest are kept, whatever order records come in
                self.dropped += 1
                latest = max(range(len(pieces)), key=lambda k: pieces[k][0])
                if int(f["ts"][j]) >= pieces[latest][0]:
                    continue
                pieces.pop(latest)
            code = int(f["first_payload"][j]) if has_codes else -1
            start = int(f["ts"][j])
            pieces.append((start, start + int(dur[j] * 1e9), int(f["orig_bytes"][j]), int(f["resp_bytes"][j]),
                           f["uid"][j], f["service"][j] or (service_name(code, key[3]) if code > 0 else None),
                           f["community_id"][j]))

    def _connections(self, pieces: list[tuple]):
        """The pieces in time order, chained into connections where one starts within
        ``gap_s`` of the previous one's end (whatever order they arrived in)."""
        gap = self.p.gap_s * 1e9
        chain: list[tuple] = []
        end = 0
        for piece in sorted(pieces):
            if chain and piece[0] > end + gap:
                yield chain
                chain = []
            chain.append(piece)
            end = max(end, piece[1])
        if chain:
            yield chain

    def finish(self) -> list[Alert]:
        out = []
        for (client, cport, server, port, proto), pieces in self.pieces.items():
            for chain in self._connections(pieces):
                alert = self._alert(client, cport, server, port, proto, chain)
                if alert is not None:
                    out.append(alert)
        return out

    def _alert(self, client, cport, server, port, proto, chain) -> Alert | None:
        first = chain[0]
        c = {"start": first[0], "end": max(p[1] for p in chain), "out": sum(p[2] for p in chain),
             "in": sum(p[3] for p in chain), "uid": first[4], "service": first[5], "cid": first[6],
             "records": len(chain)}
        hours = (c["end"] - c["start"]) / 3.6e12
        if hours * 3600 < self.p.min_duration_s:
            return None
        outbound = self.site.is_local(client) and self.site.is_external(server)
        new = outbound and self.first_contact.get(server, c["start"]) >= c["start"]
        return Alert(
            c["start"], c["end"], "unauthorized_access", "long_connection", "medium" if new else "low",
            0.55 if new else 0.3,
            f"{client} kept a connection to {server}:{port}/{proto} open for {hours:.1f} h "
            f"({c['out']:,} bytes out, {c['in']:,} in{', ' + c['service'] if c['service'] else ''})"
            + (", to a destination no site host had contacted before" if new else ""),
            self.label, self.host_for(client, server), client, server, cport, port, proto,
            {"hours": round(hours, 2), "bytes_out": c["out"], "bytes_in": c["in"], "records": c["records"],
             "service": c["service"], "new_destination": new, "uid": c["uid"]}, c["cid"])
