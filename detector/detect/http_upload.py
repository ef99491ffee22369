"""Data sent out in HTTP request bodies (exfiltration / http_upload).

Method: the HTTP inspector reads each request's method, body size and content type. Cleartext
uploads are rare on today's networks and each one is a copy of data leaving its host, so they
are reported per client and server: a POST or PUT whose body reaches ``min_body`` bytes, or a
multipart form carrying a file. High when the bodies add up to ``high_body`` bytes towards an
external server.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector
from detector.l7.events import Events


class HttpUpload(Detector):
    name = "http_upload"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        min_body: int = 32 * 1024
        high_body: int = 10 * 2**20

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.pairs: dict[tuple[str, str, int], dict] = {}

    def observe_events(self, events: Events) -> None:
        for ev in events.http:
            r = ev.request
            if r is None or r.method not in ("POST", "PUT"):
                continue
            size = r.content_length or 0
            multipart = bool(r.content_type and r.content_type.lower().startswith("multipart/form-data"))
            if size < self.p.min_body and not (multipart and size >= 1024):
                continue
            c = ev.ctx
            agg = self.pairs.setdefault((c.client, c.server, c.dport if c.from_orig else c.sport), {
                "first": c.ts_ns, "last": c.ts_ns, "bytes": 0, "requests": 0, "uris": [], "host": r.host,
                "uid": c.uid, "types": set()})
            agg["last"] = max(agg["last"], c.ts_ns)
            agg["bytes"] += size
            agg["requests"] += 1
            if r.content_type:
                agg["types"].add(r.content_type.split(";")[0])
            if len(agg["uris"]) < 5:
                agg["uris"].append(f"{r.method} {r.uri[:120]}")

    def finish(self) -> list[Alert]:
        out = []
        for (client, server, port), a in self.pairs.items():
            high = a["bytes"] >= self.p.high_body and self.site.is_external(server)
            out.append(Alert(a["first"], a["last"], "exfiltration", "http_upload", "high" if high else "medium",
                             0.8 if high else 0.55,
                             f"{client} uploaded {a['bytes']:,} bytes in {a['requests']} HTTP request body(ies) to "
                             f"{a['host'] or server} ({server}:{port})", self.label, self.host_for(client, server),
                             client, server, None, port, "tcp",
                             {"body_bytes": a["bytes"], "requests": a["requests"], "requests_seen": a["uris"],
                              "content_types": a["types"], "http_host": a["host"], "uid": a["uid"]}))
        return out
