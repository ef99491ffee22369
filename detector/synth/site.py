"""The synthetic HPC site: its hosts, their roles and addresses, and the outside world.

Local IPv4 addresses are in 10.10.0.0/16 and local IPv6 in 2001:db8:10::/48 (documentation
prefix); external peers are drawn from public-looking prefixes. All traffic to the outside
passes the site gateway, whose MAC address it carries.
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
                 Host("ntp1", "service", "10.10.0.123", "2001:db8:10::123", _mac(3))]
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
