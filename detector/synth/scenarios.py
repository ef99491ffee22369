"""Scenarios: named, seeded recipes for synthetic captures, each with its labels.

``hpc-mix`` is the benign background of an HPC site (web and package downloads, interactive
SSH to login nodes, scp uploads, GridFTP transfers with parallel streams and jumbo frames on
DTNs towards partner sites, perfSONAR tests, package downloads by compute nodes through the
site proxy, DNS, NTP, QUIC, pings, ARP, some unanswered and refused connections).
It is the benchmark input and the quick-start data. Its size is set by a packet target.

The other scenarios lay one benign activity (``benign-*``, :mod:`detector.synth.benign`) or
one attack (:mod:`detector.synth.attacks`) over that background; ``labels.json`` gives each
incident's category, technique, hosts and time span.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from detector.synth import dns, traffic
from detector.synth.attacks import ATTACKS, Stage, spoofed_syns
from detector.synth.benign import BENIGN
from detector.synth.packets import PacketSpec, PayloadPool, ip_words
from detector.synth.site import Site, external_addresses

T0_NS = 1_793_606_400 * 1_000_000_000  # 2026-11-02 08:00:00 UTC
SNAP_PROTOCOL = 1500  # protocol packets are kept whole
SNAP_BULK = 0  # bulk data keeps headers only


@dataclass
class Scenario:
    name: str
    packets: PacketSpec
    pool: np.ndarray
    labels: dict = field(default_factory=dict)


def _endpoints(site: Site, rng, n, client_role, v6_share, server_hosts=None, server_external=True,
               cports=None, sports=None, vlan=0, inbound=False):
    """Sessions from local hosts (``client_role``) to external or local servers; with ``inbound``
    the local hosts are the servers and the external peers connect to them."""
    v6 = rng.random(n) < v6_share
    clients = site.role(client_role) if isinstance(client_role, str) else client_role
    ci = rng.integers(0, len(clients), n)
    c_hi, c_lo, c_mac, used6 = site.words(clients, v6, ci)
    if server_external:
        s_hi, s_lo = external_addresses(rng, n, used6)
        s_mac = np.full(n, site.gateway.mac_int, dtype=np.uint64)
        if inbound:
            c_hi, c_lo, c_mac, s_hi, s_lo, s_mac = s_hi, s_lo, s_mac, c_hi, c_lo, c_mac
    else:
        si = rng.integers(0, len(server_hosts), n)
        s_hi, s_lo, s_mac, _ = site.words(server_hosts, used6, si)
    return traffic.Endpoints(
        c_hi=c_hi, c_lo=c_lo, s_hi=s_hi, s_lo=s_lo, c_mac=c_mac, s_mac=s_mac,
        ip_ver=np.where(used6, 6, 4).astype(np.uint8),
        cport=cports if cports is not None else rng.integers(32768, 61000, n),
        sport=sports if np.ndim(sports) else np.full(n, sports), vlan=np.full(n, vlan))


def _heavy(rng, n, alpha, minimum, cap):
    """Pareto-tailed integers >= minimum (mean about minimum*alpha/(alpha-1) before the cap)."""
    return np.minimum((minimum * (1 + rng.pareto(alpha, n))).astype(np.int64), cap)


def _dns_templates(rng, pool: PayloadPool, k: int):
    names = [f"{w}.{d}" for w, d in zip(
        rng.choice(["www", "api", "cdn", "files", "pypi", "conda", "github", "mirror", "auth", "login"], k),
        rng.choice(["example.org", "python.org", "anaconda.org", "github.com", "globus.org", "cern.ch",
                    "es.net", "internet2.edu", "cvmfs.io", "ubuntu.com", "debian.org"], k))]
    q_off, q_len, r_off, r_len = (np.empty(k, np.int64) for _ in range(4))
    for j, name in enumerate(names):
        txid = int(rng.integers(0, 65536))
        q = dns.query(txid, name)
        r = dns.response(txid, name, "A", [bytes(rng.integers(1, 255, 4, dtype=np.uint8))], ttl=300)
        q_off[j], q_len[j] = pool.add(q), len(q)
        r_off[j], r_len[j] = pool.add(r), len(r)
    return q_off, q_len, r_off, r_len


def _opening_templates(pool: PayloadPool, k: int) -> dict[str, np.ndarray]:
    """Pool offsets of what clients send first: TLS ClientHellos (for ``https``) and SSH
    banners (``ssh``), ``k`` variants each, so that flows name their service by content."""
    from detector.synth import messages as msg

    rng = np.random.default_rng(0x7E)  # its own stream: the background's draws stay as they were
    names = ["www.example.org", "pypi.org", "github.com", "files.pythonhosted.org", "conda.anaconda.org",
             "cdn.jsdelivr.net", "login.microsoftonline.com", "www.cern.ch", "api.globus.org", "docs.python.org"]
    banners = [b"SSH-2.0-OpenSSH_9.6\r\n", b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n", b"SSH-2.0-PuTTY_Release_0.80\r\n",
               b"SSH-2.0-OpenSSH_for_Windows_9.5\r\n"]
    return {"https": np.array([pool.add(msg.client_hello(rng, names[j % len(names)])) for j in range(k)], np.int64),
            "ssh": np.array([pool.add(banners[j % len(banners)]) for j in range(k)], np.int64)}


def _partners(site: Site, rng, v6: np.ndarray):
    """(hi, lo) words of partner DTNs, IPv6 ones where ``v6``."""
    v4 = [ip_words(a) for a in site.partner_dtns if ":" not in a]
    six = [ip_words(a) for a in site.partner_dtns if ":" in a]
    pick4 = np.array(v4, np.uint64)[rng.integers(0, len(v4), len(v6))]
    pick6 = np.array(six, np.uint64)[rng.integers(0, len(six), len(v6))]
    return np.where(v6, pick6[:, 0], pick4[:, 0]), np.where(v6, pick6[:, 1], pick4[:, 1])


def _mix_chunk(site: Site, rng, pool: PayloadPool, n_flows: int, t0: int, span_ns: int, dns_t, opening_t):
    parts = []
    share = {"https": 0.36, "http": 0.04, "ssh": 0.03, "scp": 0.01, "gridftp": 0.002, "iperf": 0.001,
             "dns": 0.38, "ntp": 0.04, "quic": 0.05, "icmp": 0.03, "s0": 0.01, "rej": 0.008}
    counts = {k: max(1, int(round(v * n_flows))) for k, v in share.items()}

    def starts(n):
        return t0 + rng.integers(0, span_ns, n)

    def tcp(n, client_role, sport, v6, n_c2s, n_s2c, c2s_size, s2c_size, iat_ms, close=traffic.CLOSE_FIN,
            snap=96, external=True, servers=None, cports=None, inbound=False, opening=None):
        ep = _endpoints(site, rng, n, client_role, v6, servers, external, cports, sport, inbound=inbound)
        closes = np.full(n, close) if np.ndim(close) == 0 else close
        choices = None if opening is None else opening_t[opening]
        first = None if choices is None else choices[(np.arange(n) * 7919) % len(choices)]
        return traffic.tcp_sessions(
            rng, ep, starts(n), n_c2s, n_s2c, np.full(n, c2s_size), np.full(n, s2c_size),
            np.full(n, iat_ms * 1e6), rng.uniform(2e6, 80e6, n), closes, np.full(n, snap), first)

    n = counts["https"]
    parts.append(tcp(n, "workstation", 443, 0.2, 2 + rng.poisson(2, n), _heavy(rng, n, 1.3, 4, 20000), 300, 1448,
                     3, close=rng.choice([traffic.CLOSE_FIN, traffic.CLOSE_RST, traffic.CLOSE_OPEN], n,
                                         p=[0.85, 0.1, 0.05]), opening="https"))
    n = counts["http"]  # compute nodes fetch packages through the site proxy
    parts.append(tcp(n, "compute", 3128, 0.0, 1 + rng.poisson(1, n), _heavy(rng, n, 1.2, 3, 50000), 350, 1448, 2,
                     external=False, servers=site.role("proxy")))
    n = counts["ssh"]  # interactive sessions from outside to login nodes: keystroke-paced small packets
    parts.append(tcp(n, site.role("login"), 22, 0.15, _heavy(rng, n, 1.5, 40, 5000), _heavy(rng, n, 1.5, 40, 5000),
                     48, 90, 250, snap=SNAP_PROTOCOL, inbound=True, opening="ssh"))
    n = counts["scp"]  # uploads to login nodes
    parts.append(tcp(n, site.role("login"), 22, 0.1, _heavy(rng, n, 1.2, 200, 100000), 10 + rng.poisson(20, n),
                     1448, 40, 0.2, snap=SNAP_BULK, inbound=True))
    n_transfers = counts["gridftp"]
    streams = rng.choice([4, 8, 16], n_transfers)
    n = int(streams.sum())
    t_start = np.repeat(starts(n_transfers), streams) + rng.integers(0, 50_000_000, n)
    dtn = site.role("dtn")
    v6 = np.repeat(rng.random(n_transfers) < 0.3, streams)
    di = np.repeat(rng.integers(0, len(dtn), n_transfers), streams)
    c_hi, c_lo, c_mac, used6 = site.words(dtn, v6, di)
    p_hi, p_lo = _partners(site, rng, used6[np.cumsum(streams) - streams])
    ep = traffic.Endpoints(c_hi=c_hi, c_lo=c_lo, s_hi=np.repeat(p_hi, streams), s_lo=np.repeat(p_lo, streams),
                           c_mac=c_mac, s_mac=np.full(n, site.gateway.mac_int, np.uint64),
                           ip_ver=np.where(used6, 6, 4).astype(np.uint8), cport=rng.integers(40000, 60000, n),
                           sport=rng.integers(50000, 51001, n), vlan=np.zeros(n))
    per_stream = np.repeat(_heavy(rng, n_transfers, 1.1, 400, 400000), streams)
    parts.append(traffic.tcp_sessions(rng, ep, t_start, per_stream, per_stream // 2, np.full(n, 8948),
                                      np.full(n, 0), np.full(n, 0.05e6), np.full(n, 30e6),
                                      np.full(n, traffic.CLOSE_FIN), np.full(n, SNAP_BULK)))
    n = counts["iperf"]  # perfSONAR throughput tests between DTNs and a partner site
    ep = _endpoints(site, rng, n, dtn, 0.0, sports=5201)
    ep.s_hi[:], ep.s_lo[:] = _partners(site, rng, np.zeros(n, bool))
    parts.append(traffic.tcp_sessions(rng, ep, starts(n), _heavy(rng, n, 2.0, 2000, 40000), 50 + rng.poisson(50, n),
                                      np.full(n, 8948), np.zeros(n), np.full(n, 0.05e6), rng.uniform(2e6, 80e6, n),
                                      np.full(n, traffic.CLOSE_FIN), np.full(n, SNAP_BULK)))
    n = counts["dns"]
    k = rng.integers(0, len(dns_t[0]), n)
    ep = _endpoints(site, rng, n, "compute", 0.0, [site.by_name["dns1"]], False, sports=53)
    answered = rng.random(n) > 0.02
    parts.append(traffic.udp_exchanges(rng, ep, starts(n), np.where(answered, 2, 1), np.full(n, 40),
                                       np.full(n, 90), np.full(n, 1e6), answered, np.full(n, SNAP_PROTOCOL),
                                       dns_t[0][k], dns_t[1][k], dns_t[2][k], dns_t[3][k]))
    n = counts["ntp"]
    ep = _endpoints(site, rng, n, "compute", 0.0, [site.by_name["ntp1"]], False, cports=np.full(n, 123),
                    sports=123)
    parts.append(traffic.udp_exchanges(rng, ep, starts(n), np.full(n, 2), np.full(n, 48), np.full(n, 48),
                                       np.full(n, 1e6), np.ones(n, bool), np.full(n, SNAP_PROTOCOL)))
    n = counts["quic"]
    ep = _endpoints(site, rng, n, "workstation", 0.3, sports=443)
    parts.append(traffic.udp_exchanges(rng, ep, starts(n), _heavy(rng, n, 1.4, 10, 3000), np.full(n, 60),
                                       np.full(n, 1250), np.full(n, 5e6), np.ones(n, bool), np.full(n, 64)))
    n = counts["icmp"]
    ep = _endpoints(site, rng, n, "workstation", 0.25, sports=0)
    parts.append(traffic.icmp_echoes(rng, ep, starts(n), 1 + rng.poisson(3, n), np.full(n, 56), np.full(n, 1e9)))
    n = counts["s0"] + counts["rej"]
    close = np.r_[np.full(counts["s0"], traffic.CLOSE_UNANSWERED), np.full(counts["rej"], traffic.CLOSE_REJECTED)]
    parts.append(tcp(n, "workstation", rng.choice([25, 8080, 3389, 445], n), 0.0, np.zeros(n, int), np.zeros(n, int),
                     0, 0, 1, close=close))
    n_arp = max(1, n_flows // 200)
    hosts = site.hosts
    a = rng.integers(1, len(hosts), n_arp)
    parts.append(traffic.arp_exchanges(
        starts(n_arp), np.array([hosts[i].mac_int for i in a], np.uint64),
        np.array([hosts[i].v4_words[1] & 0xFFFFFFFF for i in a], np.uint64),
        np.full(n_arp, site.gateway.mac_int, np.uint64),
        np.full(n_arp, site.gateway.v4_words[1] & 0xFFFFFFFF, np.uint64)))
    return PacketSpec.concat(parts)


def _background(site: Site, rng, pool: PayloadPool, packets: int, span_s: float | None = None) -> PacketSpec:
    """``packets`` packets of the benign mix over ``span_s`` seconds (default: 8,000 packets a
    second, at least a minute): the first ones of a longer generated period, as a capture
    window would cut it (so some flows are still open at its end)."""
    dns_t = _dns_templates(rng, pool, 512)
    opening_t = _opening_templates(pool, 64)
    span_ns = int((span_s or max(60.0, packets / 8000.0)) * 1e9)
    parts, total, t0 = [], 0, T0_NS
    per_flow = 45.0  # packets per flow of the mix, measured; refined after each chunk
    while total < packets:
        n_flows = max(50, int((packets - total) / per_flow * 1.2) + 1)
        chunk = _mix_chunk(site, rng, pool, n_flows, t0, span_ns, dns_t, opening_t)
        parts.append(chunk)
        total += len(chunk)
        per_flow = max(5.0, len(chunk) / n_flows)
    spec = PacketSpec.concat(parts).sorted_by_time()
    return spec.take(np.arange(packets))


def _labels(name: str, seed: int, site: Site, incidents: list[dict]) -> dict:
    return {
        "scenario": name,
        "seed": seed,
        "benign": not incidents,
        "incidents": incidents,
        "hosts": [{"name": h.name, "role": h.role, "ipv4": h.ipv4, "ipv6": h.ipv6, "mac": h.mac}
                  for h in site.hosts],
    }


def hpc_mix(packets: int = 200_000, seed: int = 1) -> Scenario:
    """``packets`` packets of benign HPC-site traffic."""
    rng = np.random.default_rng(seed)
    site = Site()
    pool = PayloadPool()
    spec = _background(site, rng, pool, packets)
    return Scenario("hpc-mix", spec, pool.array(), _labels("hpc-mix", seed, site, []))


ATTACK_START_S = 20.0  # the incident starts this long into the capture
TAIL_S = 30.0  # and the capture goes on this long after it


def _overlay(name: str, lay_out) -> callable:
    """A scenario: the benign mix (``packets`` packets) with ``lay_out``'s traffic over it; the
    background is spread over the whole incident."""
    def make(packets: int = 60_000, seed: int = 1) -> Scenario:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        site = Site()
        pool = PayloadPool()
        st = Stage(site, rng, pool, T0_NS + int(ATTACK_START_S * 1e9))
        found = lay_out(st)
        incidents = [found] if found else []
        crafted = st.packets()
        end = int(crafted.ts_ns.max()) if len(crafted) else T0_NS
        span_s = max(60.0, packets / 8000.0, (end - T0_NS) / 1e9 + TAIL_S)
        spec = PacketSpec.concat([_background(site, rng, pool, packets, span_s), crafted]).sorted_by_time()
        return Scenario(name, spec, pool.array(), _labels(name, seed, site, incidents))

    make.__doc__ = lay_out.__doc__
    return make


FLOOD_RATE = 500_000  # spoofed SYNs a second in bench-syn-flood: hping3 --flood from one 1 GbE host


def bench_syn_flood(packets: int = 3_000_000, seed: int = 1) -> Scenario:
    """A flood for measuring the detector under a DoS: ``packets`` packets, 99 % of them
    unanswered SYNs from distinct spoofed sources at 500k a second (3M packets: 6 s, 3M
    sources), over 1 % of the benign mix."""
    rng = np.random.default_rng([seed, zlib.crc32(b"bench-syn-flood")])
    site = Site()
    pool = PayloadPool()
    background = max(1, packets // 100)
    span_ns = max(1, (packets - background) * 1_000_000_000 // FLOOD_RATE)
    st = Stage(site, rng, pool, T0_NS + 1_000_000_000)
    found = spoofed_syns(st, packets - background, span_ns, answered=False)
    span_s = max(1.0, (span_ns + 2_000_000_000) / 1e9)
    spec = PacketSpec.concat([_background(site, rng, pool, background, span_s), st.packets()]).sorted_by_time()
    return Scenario("bench-syn-flood", spec, pool.array(), _labels("bench-syn-flood", seed, site, [found]))


SCENARIOS = {"hpc-mix": hpc_mix, "bench-syn-flood": bench_syn_flood}
SCENARIOS.update({name: _overlay(name, fn) for name, fn in BENIGN.items()})
SCENARIOS.update({name: _overlay(name, fn) for name, fn in ATTACKS.items()})
