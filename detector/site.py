"""What the site knows about itself: its networks, gateways, servers and host roles.

Loaded from the ``[site]`` section of the configuration. Without it the site is inferred:
private address ranges are local (and the analysis says so), and the gateway is the MAC address
that most outbound traffic is sent to.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass

log = logging.getLogger("detector.site")

PRIVATE_NETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
                "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128")
MULTICAST_NETS = ("224.0.0.0/4", "ff00::/8", "255.255.255.255/32")


@dataclass(frozen=True)
class SiteConfig:
    """The ``[site]`` section. Lists of addresses accept single addresses and CIDR networks."""

    local_nets: tuple[str, ...] = ()  # empty: the private ranges
    gateways: tuple[str, ...] = ()  # IPs of the default gateways (ARP spoofing of them is critical)
    dns_servers: tuple[str, ...] = ()
    dhcp_servers: tuple[str, ...] = ()
    routers: tuple[str, ...] = ()  # hosts allowed to send ICMP redirects
    dtns: tuple[str, ...] = ()  # data-transfer nodes
    login_nodes: tuple[str, ...] = ()
    compute_nets: tuple[str, ...] = ()  # compute nodes reach the Internet only through proxies
    proxies: tuple[str, ...] = ()
    partner_dtns: tuple[str, ...] = ()  # peers of normal bulk transfers (GridFTP/Globus replication)
    transfer_ports: tuple[str, ...] = ("50000-51000", "2811", "443")
    local_domains: tuple[str, ...] = ()  # names that may resolve to local addresses
    ssh_host_keys: tuple[str, ...] = ()  # pins: "HOST:PORT=SHA256:..." (learned from traffic too)
    tls_certs: tuple[str, ...] = ()  # pins: "NAME=<sha256 hex>"
    internal_cas: tuple[str, ...] = ()  # the site's own CAs: issuer names ("CN=HPC Root CA") or SHA-256 of CA certs
    host_names: tuple[str, ...] = ()  # "NAME=ADDRESS": nodes as telemetry and Slurm name them (cn0012=10.10.100.12)
    gpu_allocations: str = ""  # a GPU allocation map (host gpus start end job), for sites without Slurm
    timezone: str = "UTC"  # the zone of local times without one (nvidia-smi timestamps)

    def validate(self, path: str | None = None) -> SiteConfig:
        from detector.errors import ConfigError

        for name in ("local_nets", "gateways", "dns_servers", "dhcp_servers", "routers", "dtns", "login_nodes",
                     "compute_nets", "proxies", "partner_dtns"):
            for value in getattr(self, name):
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"not an address or network: {exc}", path, f"site.{name}") from None
        for value in self.transfer_ports:
            lo, _, hi = str(value).partition("-")
            if not (lo.isdigit() and (not hi or hi.isdigit()) and int(lo) <= int(hi or lo) <= 65535):
                raise ConfigError(f"{value!r} is not a port or a port range", path, "site.transfer_ports")
        for value in self.internal_cas:
            if value.strip().lower().endswith((".pem", ".crt")) and not os.path.isfile(value.strip()):
                raise ConfigError(f"{value!r}: no such PEM file of CA certificates", path, "site.internal_cas")
        for value in self.ssh_host_keys + self.tls_certs:
            if "=" not in value:
                raise ConfigError(f"{value!r}: a pin is written KEY=VALUE", path, "site.ssh_host_keys / site.tls_certs")
        for value in self.host_names:
            name, eq, addr = value.partition("=")
            try:
                ipaddress.ip_address(addr.strip())
            except ValueError:
                raise ConfigError(f"{value!r}: write NAME=ADDRESS (cn0012=10.10.100.12)", path,
                                  "site.host_names") from None
            if not eq or not name.strip():
                raise ConfigError(f"{value!r}: write NAME=ADDRESS (cn0012=10.10.100.12)", path, "site.host_names")
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{self.timezone!r} is not a time zone (an IANA name: UTC, Europe/Berlin)", path,
                              "site.timezone") from None
        return self

    @property
    def addresses(self) -> dict[str, str]:
        """``host_names`` as name -> address."""
        return {n.strip(): a.strip() for n, _, a in (v.partition("=") for v in self.host_names)}


class NetSet:
    """Networks with a membership test for address strings; answers are memoised per set
    (detectors ask about the same few thousand hosts millions of times)."""

    CACHE_SIZE = 1 << 18

    def __init__(self, items):
        self.nets = tuple(ipaddress.ip_network(x, strict=False) for x in items)
        self._masks = _masks(self.nets)
        self._known: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.nets)

    def add(self, items) -> None:
        self.nets += tuple(ipaddress.ip_network(x, strict=False) for x in items)
        self._masks = _masks(self.nets)
        self._known.clear()

    def contains_ipv4(self, values: np.ndarray) -> np.ndarray:
        """Whether each IPv4 address (integers) is in one of the set's IPv4 networks."""
        import numpy as np  # here: the configuration is read without NumPy

        found = np.zeros(len(values), bool)
        v = values.astype(np.uint32)
        for version, net, mask in self._masks:
            if version == 4:
                found |= (v & np.uint32(mask)) == np.uint32(net)
        return found

    def __contains__(self, addr) -> bool:
        hit = self._known.get(addr)
        if hit is None:
            if len(self._known) >= self.CACHE_SIZE:
                self._known.clear()
            hit = self._known[addr] = _in_masks(self._masks, addr)
        return hit


_NUMERIC: dict[str, tuple[int, int]] = {}


def _numeric(addr) -> tuple[int, int]:
    """``(IP version, address as an integer)`` of an address string; IPv4-mapped IPv6
    addresses count as IPv4; ``(0, 0)`` when it is not an address. Memoised for all sets."""
    hit = _NUMERIC.get(addr)
    if hit is None:
        try:
            hit = (4, int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big"))
        except (OSError, TypeError):
            try:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
                hit = (4, value & 0xFFFFFFFF) if value >> 32 == 0xFFFF else (6, value)
            except (OSError, TypeError):
                hit = (0, 0)
        if len(_NUMERIC) >= NetSet.CACHE_SIZE:
            _NUMERIC.clear()
        _NUMERIC[addr] = hit
    return hit


def _masks(nets) -> tuple[tuple[int, int, int], ...]:
    return tuple((n.version, int(n.network_address), int(n.netmask)) for n in nets)


def _in_masks(masks, addr: str) -> bool:
    version, value = _numeric(addr)
    for v, net, mask in masks:
        if v == version and value & mask == net:
            return True
    return False


class Site:
    """Runtime view of :class:`SiteConfig`, plus what is inferred from the traffic."""

    def __init__(self, cfg: SiteConfig | None = None):
        self.cfg = cfg = cfg or SiteConfig()
        self.inferred_local = not cfg.local_nets
        self.local = NetSet(cfg.local_nets or PRIVATE_NETS)
        self.multicast = NetSet(MULTICAST_NETS)
        self.gateways = set(cfg.gateways)
        self.dns_servers = NetSet(cfg.dns_servers)
        self.dhcp_servers = NetSet(cfg.dhcp_servers)
        self.routers = NetSet(cfg.routers)
        self.dtns = NetSet(cfg.dtns)
        self.login_nodes = NetSet(cfg.login_nodes)
        self.compute = NetSet(cfg.compute_nets)
        self.proxies = NetSet(cfg.proxies)
        self.partners = NetSet(cfg.partner_dtns)
        self.transfer_ports = []
        for value in cfg.transfer_ports:
            lo, _, hi = str(value).partition("-")
            self.transfer_ports.append((int(lo), int(hi or lo)))
        self.local_domains = tuple(d.lower().strip(".") for d in cfg.local_domains)
        self.gateway_macs: set[int] = set()  # inferred by the ARP detector
        self._local_names: dict[str, bool] = {}
        self.busiest: list[str] = []  # public hosts taken as local (see site_inference)
        self.model = None  # the learned site model (detector.baseline.site_model), when given
        self.clock_ns: int | None = None  # live input: the wall clock (windows still open are not judged)
        self.window_flows_max = 20_000_000  # flows a site model's host windows keep (the daemon sets its own)
        if self.inferred_local:
            log.info("site: no local_nets configured: taking the private ranges (%s) as local",
                     ", ".join(PRIVATE_NETS[:4]))

    def is_local(self, addr: str) -> bool:
        return addr in self.local

    def add_local_hosts(self, hosts: list[str]) -> None:
        """Take ``hosts`` as local too (inferred: the configuration named no local networks)."""
        self.busiest += hosts
        self.local.add(hosts)

    def is_external(self, addr: str) -> bool:
        return not self.is_local(addr) and addr not in self.multicast

    def role(self, addr: str) -> str:
        if addr in self.dtns:
            return "dtn"
        if addr in self.login_nodes:
            return "login"
        if addr in self.compute:
            return "compute"
        return "host" if self.is_local(addr) else "external"

    def has_role(self, addr: str) -> bool:
        """Whether ``[site]`` names ``addr`` as one of its servers (gateway, DNS, DHCP, DTN,
        login node, proxy, router)."""
        return addr in self.gateways or any(addr in s for s in (
            self.dns_servers, self.dhcp_servers, self.dtns, self.login_nodes, self.proxies, self.routers))

    def is_local_name(self, name: str) -> bool:
        hit = self._local_names.get(name)
        if hit is None:
            if len(self._local_names) >= NetSet.CACHE_SIZE:
                self._local_names.clear()
            hit = self._local_names[name] = self._is_local_name(name)
        return hit

    def _is_local_name(self, name: str) -> bool:
        n = name.lower().strip(".")
        if n.endswith((".local", ".lan", ".internal", ".home.arpa", ".in-addr.arpa", ".ip6.arpa", ".localdomain")) \
                or "." not in n:
            return True
        return any(n == d or n.endswith("." + d) for d in self.local_domains)


_PRIVATE = NetSet(PRIVATE_NETS)


def is_private(addr: str) -> bool:
    return addr in _PRIVATE
