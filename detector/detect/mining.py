"""Cryptocurrency mining and blockchain nodes (compute_theft).

Methods, strongest first (after the zeek-cryptomining package and nDPI's mining detection):

- ``stratum``: the mining protocol itself on any port: Stratum JSON-RPC methods
  (``mining.subscribe``, ``mining.notify``, ...), XMRig's ``login`` with a miner agent, or
  bitcoind's ``getwork``/``getblocktemplate``. High; critical from a compute node.
- ``mining_pool_domain``: DNS lookups, TLS server names or HTTP hosts of known mining pools and
  browser-mining services. High.
- ``crypto_p2p``: a blockchain node's peer protocol (Bitcoin-family magic, Monero levin), or
  a host talking to ``p2p_min_peers`` external peers on a node port (8333, 18080, 30303, ...).
  Medium: a node is not a miner, but it has no place on an HPC node.
- ``mining_port``: long connections to well-known pool ports, as weak evidence only. Low.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.l7.events import Events

POOL_DOMAINS = (
    "minexmr.com", "supportxmr.com", "nanopool.org", "f2pool.com", "ethermine.org", "2miners.com", "hashvault.pro",
    "moneroocean.stream", "herominers.com", "xmrpool.eu", "minergate.com", "nicehash.com", "coinhive.com",
    "coin-hive.com", "crypto-loot.com", "cryptoloot.pro", "webminepool.com", "authedmine.com", "jsecoin.com",
    "monerohash.com", "unmineable.com", "viabtc.com", "antpool.com", "slushpool.com", "braiins.com", "poolin.com",
    "btc.com", "miningpoolhub.com", "c3pool.com", "gulf.moneroocean.stream", "xmrig.com", "dwarfpool.com",
    "hashcity.org", "zpool.ca", "prohashing.com", "mining-dutch.nl", "kryptex.network", "emcd.io",
)
POOL_PORTS = {3333, 4444, 5555, 7777, 9999, 14433, 14444, 45560, 45700, 20535, 10128, 13333, 17777, 3357}
NODE_PORTS = {8333: "bitcoin", 18333: "bitcoin-testnet", 18080: "monero", 30303: "ethereum", 9333: "litecoin",
              22556: "dogecoin", 8233: "zcash", 9999: "dash"}


_POOL_SET = frozenset(POOL_DOMAINS)


def pool_domain(name: str | None) -> str | None:
    """The known pool domain ``name`` is, or is under."""
    if not name:
        return None
    labels = name.lower().strip(".").split(".")
    for k in range(len(labels)):
        suffix = ".".join(labels[k:])
        if suffix in _POOL_SET:
            return suffix
    return None


class Mining(Detector):
    name = "mining"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        p2p_min_peers: int = 3
        pool_port_min_duration_s: float = 60.0
        extra_pool_domains: tuple[str, ...] = ()

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.found: dict[tuple[str, str], Alert] = {}
        self.node_peers: dict[tuple[str, int], set[str]] = defaultdict(set)
        self.node_first: dict[tuple[str, int], tuple[int, str, str]] = {}

    def _domain(self, name):
        d = pool_domain(name)
        if d is None and name:
            n = name.lower().strip(".")
            d = next((x for x in self.p.extra_pool_domains if n == x or n.endswith("." + x)), None)
        return d

    def _add(self, host: str, technique: str, alert: Alert) -> None:
        key = (host, technique)
        seen = self.found.get(key)
        if seen is None:
            alert.evidence.setdefault("sightings", 1)
            self.found[key] = alert
        else:
            seen.evidence["sightings"] = seen.evidence.get("sightings", 1) + 1
            seen.ts_end_ns = max(seen.ts_end_ns, alert.ts_ns)

    def observe_events(self, events: Events) -> None:
        for ev in events.mining:
            c = ev.ctx
            miner, pool = c.client, c.server
            port = c.dport if c.from_orig else c.sport
            if ev.protocol.startswith("p2p:"):
                net = ev.protocol[4:]
                self._add(miner, "crypto_p2p", Alert(
                    c.ts_ns, c.ts_ns, "compute_theft", "crypto_p2p", "medium", 0.6,
                    f"{miner} speaks the {net} peer-to-peer protocol with {pool}:{port} ({ev.methods[0]} message): "
                    "a cryptocurrency node running on this host", self.label, self.host_for(miner, pool), miner, pool,
                    None, port, "tcp", {"network": net, "message": ev.methods[0], "uid": c.uid}))
                continue
            compute = miner in self.site.compute
            severity = "critical" if compute else "high"
            self._add(miner, "stratum", Alert(
                c.ts_ns, c.ts_ns, "compute_theft", "stratum", severity, 0.97 if compute else 0.9,
                f"{miner} is mining: it sent {', '.join(ev.methods[:4])} to {pool}:{port}"
                + (f" as {ev.agent}" if ev.agent else ""), self.label, self.host_for(miner, pool), miner, pool, None,
                port, "tcp", {"methods": ev.methods, "agent": ev.agent, "protocol": ev.protocol, "pool": pool,
                              "uid": c.uid}))
        names = [(ev.ctx, ev.msg.qname, "DNS query") for ev in events.dns if not ev.msg.response]
        names += [(ev.ctx, ev.client_hello.sni, "TLS server name") for ev in events.tls
                  if ev.client_hello and ev.client_hello.sni]
        names += [(ev.ctx, ev.request.host, "HTTP host") for ev in events.http if ev.request and ev.request.host]
        for c, name, how in names:
            d = self._domain(name)
            if d is None:
                continue
            self._add(c.client, "mining_pool_domain", Alert(
                c.ts_ns, c.ts_ns, "compute_theft", "mining_pool_domain", "high", 0.8,
                f"{c.client} contacted {name}, a cryptocurrency mining service ({how})", self.label,
                self.host_for(c.client), c.client, c.server, None, c.dport if c.from_orig else c.sport,
                "tcp" if c.proto == 6 else "udp", {"name": name, "pool_domain": d, "seen_in": how, "uid": c.uid}))

    def observe_flows(self, f: FlowView) -> None:
        rp = f["resp_p"]
        ports = np.asarray(list(NODE_PORTS) + list(POOL_PORTS))
        # the responder's port only: an originator's port is ephemeral, and one that happens to
        # equal a coin's port (a busy server's clients have thousands) says nothing
        cand = np.flatnonzero(np.isin(rp, ports))
        for j in cand.tolist():
            src, dst, port = f["orig_h"][j], f["resp_h"][j], int(rp[j])
            if port in NODE_PORTS:
                node_port = port
                local, peer = (src, dst) if self.site.is_local(src) else (dst, src)
                if not self.site.is_external(peer):
                    continue
                self.node_peers[(local, node_port)].add(peer)
                self.node_first.setdefault((local, node_port), (int(f["ts"][j]), peer, f["uid"][j]))
            elif port in POOL_PORTS and float(f["duration"][j]) >= self.p.pool_port_min_duration_s \
                    and self.site.is_external(dst):
                self._add(src, "mining_port", Alert(
                    int(f["ts"][j]), int(f["ts"][j]), "compute_theft", "mining_port", "low", 0.3,
                    f"{src} kept a {float(f['duration'][j]):.0f} s connection to {dst}:{port}, a port mining pools "
                    "use (weak evidence on its own)", self.label, self.host_for(src), src, dst, None, port, "tcp",
                    {"port": port, "uid": f["uid"][j]}, f["community_id"][j]))

    def finish(self) -> list[Alert]:
        for (local, port), peers in self.node_peers.items():
            if len(peers) < self.p.p2p_min_peers or (local, "crypto_p2p") in self.found:
                continue
            ts, peer, uid = self.node_first[(local, port)]
            self._add(local, "crypto_p2p", Alert(
                ts, ts, "compute_theft", "crypto_p2p", "medium", 0.6,
                f"{local} talks to {len(peers)} external peers on port {port} ({NODE_PORTS[port]} nodes): "
                "a cryptocurrency node running on this host", self.label, local, local, peer, None, port, "tcp",
                {"network": NODE_PORTS[port], "peers": sorted(peers)[:16], "peer_count": len(peers), "uid": uid}))
        return list(self.found.values())
