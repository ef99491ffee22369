"""Host windows: what each local host did in each time window, as a row of features that
learned baselines and anomaly models score.

A flow belongs to the window its first packet falls in, for its originator (outbound
features) and for its responder (inbound), when that host is local. Bytes out and in count
both directions of both kinds (a server sends what it is asked for); external bytes out are
those sent to addresses outside the site, over connections either side opened. Flows arrive when they end,
so rows are kept per flow (a few numbers each) and the features are computed when asked, with
the shared feature kernels (:func:`kernels.features.host_window_features`). ``rare_flows``
counts the host's outbound connections that the site model's flow scorer finds unlike any it
learned (see :mod:`detector.baseline.site_model`); it is 0 without one. Counts and bytes
are heavy-tailed: models see them as ``log1p``, and explanations give them back in the units of
the traffic.
"""

from __future__ import annotations

import numpy as np

from detector.baseline.flow_features import FAILED_STATES, FLOW_FEATURES, flow_matrix
from detector.detect.base import FlowView
from detector.site import Site
from kernels.features import host_window_features
from kernels.xp_ops import distinct, group_ids, segment_sum

FEATURES = ["flows_out", "flows_in", "bytes_out", "bytes_in", "external_bytes_out", "distinct_dsts",
            "distinct_ports", "dst_entropy", "port_entropy", "failed_out", "inbound_sources", "dns_queries",
            "dns_names", "dns_name_length", "rare_flows"]


class HostWindows:
    def __init__(self, site: Site, window_s: float = 600.0, max_flows: int | None = None, rare_flows=None):
        self.site = site
        # with a flow scorer (a fitted site model), each flow is scored once, as it arrives, and
        # only its verdict kept; without one (training), its features are kept to fit one
        self.rare_flows = rare_flows
        self.max_flows = max_flows if max_flows is not None else site.window_flows_max
        self.dropped_flows = 0  # beyond max_flows: counted, not kept
        self.window_ns = int(window_s * 1e9)
        self.hosts: dict[str, int] = {}
        self.peers: dict[str, int] = {}
        self._out: list[tuple] = []
        self._in: list[tuple] = []
        self._flow_rows: list[np.ndarray] = []  # per outbound flow, its FLOW_FEATURES (parallel to _out)
        self._rows = 0  # flows and DNS questions kept
        self._dns: list[tuple[int, int, int, int]] = []  # (host id, window, name key, name length)

    def observe_dns(self, events) -> None:
        """DNS questions the site's hosts asked (from the L7 tap): how many, how many distinct
        names, how long (tunnels and DGAs ask many long, distinct names)."""
        for ev in events:
            m = ev.msg
            if m.response or not m.qname or not self.site.is_local(ev.ctx.src):
                continue
            host = self.hosts.setdefault(ev.ctx.src, len(self.hosts))
            self._dns.append((host, ev.ctx.ts_ns // self.window_ns, hash(m.qname) & 0x7FFFFFFFFFFFFFFF, len(m.qname)))
            self._rows += 1

    @staticmethod
    def _ids(f: FlowView, name: str, table: dict[str, int], rows: np.ndarray) -> np.ndarray:
        """Run-wide integer ids of column ``name`` at ``rows`` (one dict step per distinct value)."""
        values, codes = f.distinct(name)
        ids = np.fromiter((table.setdefault(v, len(table)) for v in values), np.int64, len(values))
        return ids[codes[rows]]

    def observe(self, f: FlowView) -> None:
        site = self.site
        if len(self) >= self.max_flows:
            self.dropped_flows += len(f)
            return
        window = f["ts"] // self.window_ns
        out = np.flatnonzero(f.member("orig_h", site.local))
        if len(out):
            external = ~f.member("resp_h", site.local)[out] & ~f.member("resp_h", site.multicast)[out]
            ob = f["orig_bytes"][out].astype(np.float64)
            features = flow_matrix(f, out)
            rare = self.rare_flows(features) if self.rare_flows is not None else np.zeros(len(out), bool)
            self._out.append((self._ids(f, "orig_h", self.hosts, out), window[out],
                              self._ids(f, "resp_h", self.peers, out), f["resp_p"][out].astype(np.int64), ob,
                              f["resp_bytes"][out].astype(np.float64), np.where(external, ob, 0.0),
                              np.isin(f["conn_state"][out], FAILED_STATES).astype(np.float64),
                              rare.astype(np.float64)))
            if self.rare_flows is None:
                self._flow_rows.append(features)
            self._rows += len(out)
        inb = np.flatnonzero(f.member("resp_h", site.local))
        if len(inb):
            # the host answered: what it received is the originator's bytes, what it sent back
            # (to outside peers: data pulled out of the site) the responder's
            external = ~f.member("orig_h", site.local)[inb]
            sent = f["resp_bytes"][inb].astype(np.float64)
            self._in.append((self._ids(f, "resp_h", self.hosts, inb), window[inb],
                             self._ids(f, "orig_h", self.peers, inb), sent,
                             f["orig_bytes"][inb].astype(np.float64), np.where(external, sent, 0.0)))
            self._rows += len(inb)

    def __len__(self) -> int:
        return self._rows

    def flows(self) -> np.ndarray:
        """Every outbound flow's ``FLOW_FEATURES`` seen so far (kept only without a scorer)."""
        if not self._flow_rows:
            return np.zeros((0, len(FLOW_FEATURES)), np.float32)
        return np.concatenate(self._flow_rows)

    def table(self, rare_flows=None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(host of each row, window start (ns) of each row, features)``, one row per
        (host, window) with any traffic, in ``FEATURES`` order (raw units). ``rare_flows``, when
        given, scores the kept flow features (training: the scorer was fitted after the flows
        were seen); otherwise the verdicts given as flows arrived count."""
        cols_out = [np.concatenate(c) for c in zip(*self._out)] if self._out else None
        cols_in = [np.concatenate(c) for c in zip(*self._in)] if self._in else None
        dns = np.array(self._dns, np.int64).reshape(-1, 4)
        keys = []
        if cols_out is not None:
            keys.append(cols_out[0] << 32 | cols_out[1])
        if cols_in is not None:
            keys.append(cols_in[0] << 32 | cols_in[1])
        if len(dns):
            keys.append(dns[:, 0] << 32 | dns[:, 1])
        if not keys:
            return [], np.zeros(0, np.int64), np.zeros((0, len(FEATURES)))
        all_keys = distinct(np, np.concatenate(keys))
        X = np.zeros((len(all_keys), len(FEATURES)))
        if cols_out is not None:
            host, window, dst, port, ob, rb, ext, failed, rare = cols_out
            hw = host_window_features(np, host, window, dst, port, ob, rb)
            rows = np.searchsorted(all_keys, hw["keys_host"] << 32 | hw["keys_window"])
            for name in ("flows", "bytes_out", "bytes_in", "distinct_dsts", "distinct_ports", "dst_entropy",
                         "port_entropy"):
                X[rows, FEATURES.index("flows_out" if name == "flows" else name)] = hw[name]
            ids, first = group_ids(np, host, window)
            rows = np.searchsorted(all_keys, host[first] << 32 | window[first])
            n = len(first)
            if rare_flows is not None:
                rare = rare_flows(self.flows()).astype(np.float64)
            for name, values in (("external_bytes_out", ext), ("failed_out", failed), ("rare_flows", rare)):
                X[rows, FEATURES.index(name)] = segment_sum(np, ids, values, n)
        if cols_in is not None:
            host, window, src, sent, received, ext = cols_in
            hw = host_window_features(np, host, window, src, np.zeros(len(host), np.int64), sent, received)
            rows = np.searchsorted(all_keys, hw["keys_host"] << 32 | hw["keys_window"])
            X[rows, FEATURES.index("flows_in")] = hw["flows"]
            X[rows, FEATURES.index("inbound_sources")] = hw["distinct_dsts"]
            X[rows, FEATURES.index("bytes_out")] += hw["bytes_out"]
            X[rows, FEATURES.index("bytes_in")] += hw["bytes_in"]
            ids, first = group_ids(np, host, window)
            rows = np.searchsorted(all_keys, host[first] << 32 | window[first])
            X[rows, FEATURES.index("external_bytes_out")] += segment_sum(np, ids, ext, len(first))
        if len(dns):
            host, window, name, length = dns.T
            hw = host_window_features(np, host, window, name, np.zeros(len(host), np.int64),
                                      length.astype(np.float64), np.zeros(len(host)))
            rows = np.searchsorted(all_keys, hw["keys_host"] << 32 | hw["keys_window"])
            X[rows, FEATURES.index("dns_queries")] = hw["flows"]
            X[rows, FEATURES.index("dns_names")] = hw["distinct_dsts"]
            X[rows, FEATURES.index("dns_name_length")] = hw["bytes_out"] / np.maximum(hw["flows"], 1)
        names = np.array(list(self.hosts), dtype=object)
        hosts = names[(all_keys >> 32).astype(np.int64)].tolist()
        return hosts, (all_keys & 0xFFFFFFFF).astype(np.int64) * self.window_ns, X
