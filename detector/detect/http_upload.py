"""Data sent out in HTTP request bodies (exfiltration / http_upload).

Method: the HTTP inspector reads each request's method, declared body size and content type.
POST and PUT bodies are added up per client, server and port, and judged by what the body is:

- **file uploads and routine bulk bodies** (``multipart/form-data``, print jobs in
  ``application/ipp`` or to port 631, mail submitted as ``message/*``): people upload files,
  print and send mail every day, so these count from ``file_body`` (1 MiB);
- **anything else** (form fields, JSON, ``application/octet-stream``, text, no type): from
  ``min_body`` (32 KiB), since no person types a form field that long; data pushed through a
  form or an API in bulk is what exfiltration over HTTP looks like.

A body's size is what its ``Content-Length`` declares (an upload the server cut short was still
attempted in full), unless its flow record shows the client sent fewer than ``min_body`` bytes
in all: then it is what was sent (a forged or broken length, 2^64-1 say, uploads nothing).
Medium; high when the bodies add up to ``high_body`` towards an external server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector import arrowutil as au
from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.l7.events import Events

ROUTINE_TYPES = ("multipart/form-data", "application/ipp", "message/")
IPP_PORT = 631
UIDS_KEPT = 64  # requests per pair whose flow is looked up


class HttpUpload(Detector):
    name = "http_upload"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        min_body: int = 32 * 1024
        file_body: int = 2**20
        high_body: int = 10 * 2**20
        max_pairs: int = 100_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.pairs: dict[tuple[str, str, int], dict] = {}
        self.declared: dict[str, int] = {}  # uid -> body bytes its requests declared
        self.sent: dict[str, int] = {}  # uid -> bytes its flow record shows the client sent
        # the latest batch of TCP flow records: a flow that ended in the batch its request was
        # read from reached the detectors just before the request did
        self.recent: FlowView | None = None
        self.recent_map: dict[str, int] | None = None  # its TCP records' uid -> bytes sent, when asked
        self.dropped = 0

    def observe_events(self, events: Events) -> None:
        for ev in events.http:
            r = ev.request
            if r is None or r.method not in ("POST", "PUT") or not r.content_length:
                continue
            c = ev.ctx
            port = c.dport if c.from_orig else c.sport
            ctype = (r.content_type or "").split(";")[0].strip().lower()
            routine = port == IPP_PORT or ctype.startswith(ROUTINE_TYPES)
            key = (c.client, c.server, port)
            agg = self.pairs.get(key)
            if agg is None:
                if len(self.pairs) >= self.p.max_pairs:
                    self.dropped += 1
                    continue
                agg = self.pairs[key] = {"first": c.ts_ns, "last": c.ts_ns, "bulk": 0, "routine": 0, "requests": 0,
                                         "uris": [], "host": r.host, "uid": c.uid, "types": set(), "uids": {}}
            agg["first"], agg["last"] = min(agg["first"], c.ts_ns), max(agg["last"], c.ts_ns)
            agg["requests"] += 1
            kind = "routine" if routine else "bulk"
            if len(agg["uids"]) < UIDS_KEPT or c.uid in agg["uids"]:
                agg["uids"].setdefault(c.uid, {"routine": 0, "bulk": 0})[kind] += r.content_length
                self.declared[c.uid] = self.declared.get(c.uid, 0) + r.content_length
                self._ended_already(c.uid)
            else:
                agg[kind] += r.content_length
            if ctype:
                agg["types"].add(ctype)
            if len(agg["uris"]) < 5:
                agg["uris"].append(f"{r.method} {r.uri[:120]}")

    def observe_flows(self, f: FlowView) -> None:
        """Bytes sent by the flows of declared uploads; the batch is kept (not converted) for
        requests read after their flow ended in it."""
        if not len(f):
            return
        self.recent, self.recent_map = f, None
        if not self.declared:
            return
        uid = f.batch.column("uid")
        kind = uid.type.value_type if pa.types.is_dictionary(uid.type) else uid.type
        hit = pc.is_in(uid, value_set=pa.array(list(self.declared), kind))
        rows = np.flatnonzero(au.to_numpy(pc.fill_null(hit, False)))
        for j, u in zip(rows.tolist(), uid.take(rows).to_pylist()):
            self.sent[u] = self.sent.get(u, 0) + int(f["orig_bytes"][j])

    def _ended_already(self, uid: str) -> None:
        f = self.recent
        if uid in self.sent or f is None:
            return
        if self.recent_map is None:
            tcp = np.flatnonzero(f["proto"] == "tcp")
            self.recent_map = dict(zip(f.batch.column("uid").take(tcp).to_pylist(), f["orig_bytes"][tcp].tolist()))
        if uid in self.recent_map:
            self.sent[uid] = int(self.recent_map[uid])

    def _bytes(self, agg: dict) -> tuple[int, int, bool]:
        """(bulk, routine) body bytes of a pair: as declared, or as sent where the flow sent
        less than ``min_body``; and whether that cap applied."""
        bulk, routine, capped = agg["bulk"], agg["routine"], False
        for uid, by_kind in agg["uids"].items():
            declared = by_kind["routine"] + by_kind["bulk"]
            sent = self.sent.get(uid)
            short = sent is not None and sent < declared and sent < self.p.min_body
            scale = sent / declared if short else 1.0
            capped |= scale < 1.0
            bulk += int(by_kind["bulk"] * scale)
            routine += int(by_kind["routine"] * scale)
        return bulk, routine, capped

    def finish(self) -> list[Alert]:
        out = []
        p = self.p
        for (client, server, port), a in self.pairs.items():
            bulk, routine, capped = self._bytes(a)
            total = bulk + routine
            if bulk < p.min_body and total < p.file_body:
                continue
            high = total >= p.high_body and self.site.is_external(server)
            out.append(Alert(a["first"], a["last"], "exfiltration", "http_upload", "high" if high else "medium",
                             0.8 if high else 0.55,
                             f"{client} uploaded {total:,} bytes in {a['requests']} HTTP request body(ies) to "
                             f"{a['host'] or server} ({server}:{port})", self.label, self.host_for(client, server),
                             client, server, None, port, "tcp",
                             {"body_bytes": total, "file_or_routine_bytes": routine, "requests": a["requests"],
                              "requests_seen": a["uris"], "content_types": a["types"], "http_host": a["host"],
                              "capped_by_flow_bytes": capped, "uid": a["uid"]}))
        return out
