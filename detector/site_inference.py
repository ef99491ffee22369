"""What the site is, when its configuration does not say: the busiest public hosts.

With no ``local_nets`` configured the private ranges are taken as local. A sensor on a DTN or a
login node with a public address sees that address talk to a large share of all the addresses
in the capture, and it is the host the alerts are about; so, on the first batch of packets, any
public address whose distinct peers are at least ``PEER_SHARE`` of all addresses seen (and at
least ``MIN_PEERS``; up to ``MAX_HOSTS`` such hosts) is taken as local too, and the summary says
so (the first ``SAMPLE`` IP packets are looked at). Peers, not packets: the far end of one bulk transfer carries most packets but has one peer.
A capture taken at a border link, where no single host talks to everyone, infers nothing.
"""

from __future__ import annotations

import logging

import numpy as np

from detector import arrowutil as au
from detector.site import Site
from kernels import l7_select as ks
from kernels import packet_columns as pc

log = logging.getLogger("detector.site")

PEER_SHARE = 0.25
MIN_PEERS = 10
MAX_HOSTS = 4
MIN_PACKETS = 100
SAMPLE = 1 << 16  # IP packets looked at


def busiest_hosts(cols: pc.PacketColumns, n: int, share: float = PEER_SHARE, limit: int = MAX_HOSTS) -> list[str]:
    """Addresses that exchange packets with at least ``share`` of all the other addresses seen
    in the first ``n`` packets (and with ``MIN_PEERS``), most connected first."""
    ip = np.flatnonzero((cols.ip_ver[:n] == 4) | (cols.ip_ver[:n] == 6))[:SAMPLE]
    if len(ip) < MIN_PACKETS:
        return []
    mix = np.uint64(0x9E3779B97F4A7C15)
    src = cols.src_ip_hi[ip] * mix ^ cols.src_ip_lo[ip]  # distinct addresses, distinct keys (practically)
    dst = cols.dst_ip_hi[ip] * mix ^ cols.dst_ip_lo[ip]
    a, b = np.concatenate([src, dst]), np.concatenate([dst, src])
    _, rows = np.unique(a * np.uint64(0xC2B2AE3D27D4EB4F) ^ b, return_index=True)  # one row per (address, peer)
    addrs, first, peers = np.unique(a[rows], return_index=True, return_counts=True)
    need = max(MIN_PEERS, share * (len(addrs) - 1))
    top = np.argsort(-peers, kind="stable")[:limit]
    top = top[peers[top] >= need]
    if not len(top):
        return []
    picked = rows[first[top]]  # a row of the doubled arrays: < len(ip) means the address was the source
    pkt = np.concatenate([ip, ip])[picked].astype(np.int64)
    k = len(pkt)
    sb, db = np.empty(k * 39, np.uint8), np.empty(k * 39, np.uint8)
    so, do = np.empty(k + 1, np.int64), np.empty(k + 1, np.int64)
    ks.packet_addresses(cols, pkt, sb, so, db, do)
    text_src, text_dst = au.strings(sb, so, k).to_pylist(), au.strings(db, do, k).to_pylist()
    return [text_src[j] if picked[j] < len(ip) else text_dst[j] for j in range(k)]


def infer_local_hosts(site: Site, cols: pc.PacketColumns, n: int) -> list[str]:
    """Add the busiest public hosts to ``site``'s local hosts when its configuration named no
    local networks; returns them."""
    if not site.inferred_local:
        return []
    hosts = [h for h in busiest_hosts(cols, n) if not site.is_local(h) and h not in site.multicast]
    if hosts:
        site.add_local_hosts(hosts)
        log.info("site: no local_nets configured: also taking the busiest public host(s) %s as local",
                 ", ".join(hosts))
    return hosts
