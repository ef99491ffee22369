"""Compute nodes talking to the Internet directly (compute_theft / compute_outbound).

Method: site policy. Compute nodes (``site.compute_nets``) reach outside only through the
proxies in ``site.proxies``, if at all; any session they open to an external address bypasses
that, which is how the 2020 HPC intrusions fetched tools and reached mining pools. One alert per
compute node, medium, high from ``high_destinations`` distinct destinations. Does nothing when
no compute network is configured.

State is columnar and mergeable (issue 21): per compute node (a 64-bit address id) its time span
and bytes (:class:`KeyedSums`), a bottom-k sample of its ``destination:port`` pairs by crc32
(the same sample as :class:`DistinctSample`), up to 33 ports and its earliest session; at most
``max_hosts`` nodes, past which those with the fewest bytes are evicted and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.alerts import Alert
from detector.detect.address_columns import crc32_column, padded, string_ids
from detector.detect.base import Detector, FlowView
from detector.detect.keyed_table import KeyedSums, KeyedTable, Led, Names, key_rows
from detector.detect.sample import sampled_count

SAMPLE = 256  # destinations kept per node (bottom-k by crc32: exact counts below this)
PORTS = 32  # ports named per node


def _least_bytes_out(cols: dict) -> np.ndarray:
    return cols["bytes"]


class ComputeOutbound(Detector):
    name = "compute_outbound"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        high_destinations: int = 10
        max_hosts: int = 100_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.hosts = KeyedSums(("src",), {"first": "min", "last": "max", "bytes": "sum"}, self.p.max_hosts,
                               _least_bytes_out)
        self.dsts = KeyedTable(("src",), ("crc", "dst"), SAMPLE + 1, unique=True)
        self.ports = KeyedTable(("src",), ("port",), PORTS + 1, unique=True)
        self.example = KeyedTable(("src",), ("t", "uid"), 1)  # the earliest session names the alert
        self.led = Led(self.hosts, self.dsts, self.ports, self.example)
        self.names = Names()

    @property
    def evictions(self) -> int:
        return self.hosts.evicted

    def merge(self, other: ComputeOutbound) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        for mine, theirs in ((self.hosts, other.hosts), (self.dsts, other.dsts), (self.ports, other.ports),
                             (self.example, other.example)):
            mine.merge(theirs)
        self.led.reconcile()
        self.names.merge(other.names)

    def observe_flows(self, f: FlowView) -> None:
        site = self.site
        if not site.compute:
            return
        external = ~f.member("resp_h", site.local) & ~f.member("resp_h", site.multicast)
        rows = np.flatnonzero(f.member("orig_h", site.compute) & external & ~f.member("resp_h", site.proxies)
                              & f.has_value("resp_h") & f.has_value("resp_p"))
        if not len(rows):
            return
        src, t, port = f.ids("orig_h")[rows], f["ts"][rows].astype(np.int64), f["resp_p"][rows].astype(np.int64)
        # "destination:port", as text only for the rows at hand
        at = pa.array(rows)
        where = pc.binary_join_element_wise(f.batch.column("resp_h").take(at),
                                            pc.cast(f.batch.column("resp_p").take(at), pa.string()), ":")
        mat = padded(where.combine_chunks() if isinstance(where, pa.ChunkedArray) else where)
        dst_ids = string_ids(mat)
        nbytes = np.nan_to_num(f["orig_bytes"][rows].astype(float)) + np.nan_to_num(f["resp_bytes"][rows].astype(float))
        self.led.add({"src": src, "first": t, "last": t, "bytes": nbytes.astype(np.int64)},
                     {"src": src, "crc": crc32_column(mat).astype(np.int64), "dst": dst_ids},
                     {"src": src, "port": port},
                     {"src": src, "t": t, "uid": f.ids_at("uid", rows), "cid": f.ids_at("community_id", rows)})
        self.names.add(dst_ids, where)
        for name in ("orig_h", "uid", "community_id"):
            self.names.add(*f.named(name, rows))
        self.names.prune(self._held_ids)

    def _held_ids(self) -> list[np.ndarray]:
        H, D, E = self.hosts.rows(), self.dsts.rows(), self.example.rows()
        return [r[k] for r, keys in ((H, ("src",)), (D, ("dst",)), (E, ("uid", "cid"))) if r for k in keys]

    def finish(self) -> list[Alert]:
        H = self.led.rows()
        if not H:
            return []
        D, P, E = self.dsts.rows(), self.ports.rows(), self.example.rows()
        out = []
        for c, src in enumerate(self.names.text(H["src"])):
            key = (H["src"][c],)
            d, p, e = key_rows(D, ("src",), key), key_rows(P, ("src",), key), key_rows(E, ("src",), key)
            n_dst, exact = sampled_count(D["crc"][d], SAMPLE)
            dsts = sorted(self.names.text(D["dst"][d][:SAMPLE]))
            uid, cid = self.names.text(np.array([E["uid"][e.start], E["cid"][e.start]], np.uint64))
            first_dst, _, first_port = dsts[0].rpartition(":")
            high = n_dst >= self.p.high_destinations
            out.append(Alert(int(H["first"][c]), int(H["last"][c]), "compute_theft", "compute_outbound",
                             "high" if high else "medium", 0.8 if high else 0.6,
                             f"Compute node {src} opened sessions to {'' if exact else 'about '}{n_dst} "
                             "Internet destination(s) "
                             f"({', '.join(dsts[:3])}) without the proxy", self.label, src, src, first_dst, None,
                             int(first_port), None,
                             {"destinations": dsts[:32], "ports": P["port"][p][:PORTS].tolist(),
                              "bytes": int(H["bytes"][c]), "uid": uid}, cid))
        return out
