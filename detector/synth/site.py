"""The synthetic HPC site: its hosts, their roles and addresses, and the outside world.

Local IPv4 addresses are in 10.10.0.0/16 and local IPv6 in 2001:db8:10::/48 (documentation
prefix); external peers are drawn from public-looking prefixes. All traffic to the outside
passes the site gateway, whose MAC address it carries. The partner sites' DTNs that this
site replicates data with are in the documentation prefixes 198.51.100.0/24 and
2001:db8:51::/48. :meth:`Site.config_toml` writes what the site knows about itself as a
``[site]`` section for ``detector analyze --config``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.synth.packets import ip_words, mac_int

V4_MAPPED = 0x0000FFFF00000000
_EXTERNAL_V4_FIRST_OCTETS = np.array([20, 23, 34, 35, 45, 52, 54, 64, 66, 72, 81, 85, 91, 93, 104, 128, 129,
                                      130, 131, 134, 137, 138, 140, 141, 145, 147, 151, 152, 155, 157, 162, 185,
                                      188, 192, 193, 194, 195, 199, 206, 212, 213], dtype=np.uint64)


@dataclass(frozen=True)
class Host:
    name: str
    role: str  # login, dtn, compute, service, gateway, workstation
    ipv4: str
    ipv6: str | None
    mac: str

    @property
    def v4_words(self) -> tuple[int, int]:
        return ip_words(self.ipv4)

    @property
    def v6_words(self) -> tuple[int, int]:
        return ip_words(self.ipv6) if self.ipv6 else self.v4_words

    @property
    def mac_int(self) -> int:
        return mac_int(self.mac)


def _mac(i: int) -> str:
    return "02:1a:c5:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)


class Site:
    """A site with login nodes, DTNs, compute nodes, service hosts and a gateway."""

    def __init__(self, n_login: int = 4, n_dtn: int = 4, n_compute: int = 64, n_workstations: int = 32):
        hosts = [Host("gw", "gateway", "10.10.0.1", "2001:db8:10::1", _mac(1)),
                 Host("dns1", "service", "10.10.0.53", "2001:db8:10::53", _mac(2)),
                 Host("ntp1", "service", "10.10.0.123", "2001:db8:10::123", _mac(3)),
                 Host("proxy1", "proxy", "10.10.0.80", "2001:db8:10::80", _mac(4))]
        for i in range(n_login):
            hosts.append(Host(f"login{i + 1}", "login", f"10.10.1.{10 + i}", f"2001:db8:10:1::{10 + i:x}",
                              _mac(0x100 + i)))
        for i in range(n_dtn):
            hosts.append(Host(f"dtn{i + 1}", "dtn", f"10.10.2.{10 + i}", f"2001:db8:10:2::{10 + i:x}",
                              _mac(0x200 + i)))
        for i in range(n_compute):
            hosts.append(Host(f"cn{i + 1:04d}", "compute", f"10.10.{100 + i // 250}.{1 + i % 250}", None,
                              _mac(0x1000 + i)))
        for i in range(n_workstations):
            hosts.append(Host(f"ws{i + 1}", "workstation", f"10.10.50.{10 + i}", f"2001:db8:10:50::{10 + i:x}",
                              _mac(0x500 + i)))
        self.hosts = hosts
        self.by_name = {h.name: h for h in hosts}
        self.partner_dtns = [f"198.51.100.{10 + i}" for i in range(6)] + [f"2001:db8:51::{10 + i:x}" for i in range(6)]

    def config_toml(self) -> str:
        """The ``[site]`` configuration section describing this site."""
        def arr(values):
            return "[" + ", ".join(f'"{v}"' for v in values) + "]"

        gw = self.gateway
        login = [h.ipv4 for h in self.role("login")] + [h.ipv6 for h in self.role("login") if h.ipv6]
        dtn = [h.ipv4 for h in self.role("dtn")] + [h.ipv6 for h in self.role("dtn") if h.ipv6]
        proxies = [h.ipv4 for h in self.role("proxy")]
        return "\n".join([
            "# the synthetic HPC site of `detector synth` (see detector/synth/site.py)",
            "[site]",
            f'local_nets = {arr(["10.10.0.0/16", "2001:db8:10::/48"])}',
            f"gateways = {arr([gw.ipv4, gw.ipv6])}",
            f"routers = {arr([gw.ipv4, gw.ipv6])}",
            f"dhcp_servers = {arr([gw.ipv4])}",
            f'dns_servers = {arr([self.by_name["dns1"].ipv4, self.by_name["dns1"].ipv6])}',
            f"login_nodes = {arr(login)}",
            f"dtns = {arr(dtn)}",
            f'compute_nets = {arr(["10.10.100.0/22"])}',
            f"proxies = {arr(proxies)}",
            f'partner_dtns = {arr(["198.51.100.0/24", "2001:db8:51::/48"])}',
            f"host_names = {arr(f'{h.name}={h.ipv4}' for h in self.hosts)}",
            'timezone = "Europe/Berlin"  # nvidia-smi writes local time',
            "",
        ])

    def role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    @property
    def gateway(self) -> Host:
        return self.by_name["gw"]

    def words(self, hosts: list[Host], v6: np.ndarray, idx: np.ndarray):
        """(hi, lo, mac) arrays for ``hosts[idx]``, IPv6 where ``v6`` and the host has it."""
        v4 = np.array([h.v4_words for h in hosts], dtype=np.uint64)
        v6w = np.array([h.v6_words for h in hosts], dtype=np.uint64)
        has6 = np.array([h.ipv6 is not None for h in hosts])
        use6 = v6 & has6[idx]
        hi = np.where(use6, v6w[idx, 0], v4[idx, 0])
        lo = np.where(use6, v6w[idx, 1], v4[idx, 1])
        mac = np.array([h.mac_int for h in hosts], dtype=np.uint64)[idx]
        return hi, lo, mac, use6


def external_addresses(rng: np.random.Generator, n: int, v6: np.ndarray):
    """``n`` external addresses as (hi, lo) words; IPv6 where ``v6``."""
    first = _EXTERNAL_V4_FIRST_OCTETS[rng.integers(0, len(_EXTERNAL_V4_FIRST_OCTETS), n)]
    rest = rng.integers(0, 1 << 24, n, dtype=np.uint64)
    v4_lo = np.uint64(V4_MAPPED) | (first << np.uint64(24)) | rest
    v6_hi = np.uint64(0x2A00000000000000) | rng.integers(0, 1 << 48, n, dtype=np.uint64)
    v6_lo = rng.integers(1, 1 << 62, n, dtype=np.uint64)
    hi = np.where(v6, v6_hi, np.uint64(0))
    lo = np.where(v6, v6_lo, v4_lo)
    return hi, lo


_LOCAL_V6_PREFIX = np.uint64(0x20010DB80010)


def path_ttl(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The TTL a packet from each address arrives with at the site's capture point: 64 from
    local hosts (and the unspecified and broadcast addresses), and 64 less 4-19 routers from
    external ones, fixed per address as a route is."""
    hi = np.asarray(hi, np.uint64)
    lo = np.asarray(lo, np.uint64)
    v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    a4 = lo & np.uint64(0xFFFFFFFF)
    local4 = v4 & (((a4 >> np.uint64(16)) == np.uint64(0x0A0A)) | (a4 == 0) | (a4 == np.uint64(0xFFFFFFFF)))
    local6 = ~v4 & ((hi >> np.uint64(16)) == _LOCAL_V6_PREFIX)
    mixed = (lo ^ (hi * np.uint64(0x9E3779B97F4A7C15))) * np.uint64(0xBF58476D1CE4E5B9)
    hops = np.uint64(4) + (mixed >> np.uint64(60))
    return np.where(local4 | local6, 64, 64 - hops.astype(np.int64)).astype(np.uint8)
