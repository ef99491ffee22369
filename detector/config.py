"""Configuration: frozen dataclasses, loaded from TOML and validated once.

Only the sections this version uses are defined; an unknown section or key is an error that
names it, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass, field

from detector.daemon.settings import DaemonConfig
from detector.errors import ConfigError
from detector.site import SiteConfig

# Zeek's likely_server_ports (ports its analyzers register) plus HPC services: GridFTP control
# (2811), iperf3 (5201), OWAMP/TWAMP (861/862), Slurm (6817/6818), CVMFS/Squid (3128), Lustre (988).
DEFAULT_SERVER_PORTS = (
    20, 21, 22, 23, 25, 53, 67, 69, 80, 88, 110, 111, 123, 135, 137, 138, 139, 143, 161, 162, 179,
    389, 443, 445, 464, 465, 500, 502, 514, 587, 631, 636, 853, 861, 862, 873, 988, 989, 990, 993,
    995, 1080, 1194, 1433, 1521, 1812, 1813, 1883, 2049, 2181, 2811, 3128, 3268, 3306, 3389, 3478,
    4500, 4789, 5060, 5061, 5201, 5353, 5355, 5432, 5671, 5672, 5900, 6379, 6443, 6817, 6818,
    8000, 8080, 8088, 8443, 8888, 9000, 9092, 9200, 9418, 11211, 27017,
)


@dataclass(frozen=True)
class FlowConfig:
    """How packets become flows. Times in seconds; defaults follow Zeek where it has one."""

    tcp_idle_timeout: float = 300.0  # Zeek tcp_inactivity_timeout
    udp_idle_timeout: float = 60.0  # Zeek udp_inactivity_timeout
    icmp_idle_timeout: float = 60.0  # Zeek icmp_inactivity_timeout
    other_idle_timeout: float = 60.0
    active_timeout: float = 1800.0  # interim record for long flows; 0 disables (NFStream default)
    tcp_attempt_timeout: float = 5.0  # Zeek tcp_attempt_delay: an unanswered SYN ends after this
    tcp_close_delay: float = 5.0  # Zeek tcp_close_delay: a closed connection lingers this long
    max_flows: int = 1_000_000  # flows held at once; the least recently seen are evicted beyond it
    fragment_timeout: float = 60.0
    fragment_slots: int = 65536
    server_ports: tuple[int, ...] = DEFAULT_SERVER_PORTS
    community_id_seed: int = 0
    local_nets: tuple[str, ...] = ()  # CIDRs; sets local_orig / local_resp when given
    batch_size: int = 262144  # records decoded per batch
    threads: int = 1  # decode and flow-table threads (0: one per available core)
    walk_threads: int = 0  # threads locating the records of a large mapped capture (0: the cores the flows leave, 1: one)
    detect_thread: bool = True  # detectors take in flows and events on a thread of their own, given a core left over

    def validate(self, path: str | None = None) -> FlowConfig:
        for name in ("tcp_idle_timeout", "udp_idle_timeout", "icmp_idle_timeout", "other_idle_timeout",
                     "tcp_attempt_timeout", "tcp_close_delay", "fragment_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError("must be a positive number of seconds", path, f"flows.{name}")
        if self.active_timeout < 0:
            raise ConfigError("must be 0 (off) or a positive number of seconds", path, "flows.active_timeout")
        if self.max_flows < 16:
            raise ConfigError("must be at least 16", path, "flows.max_flows")
        if self.fragment_slots < 16 or self.fragment_slots & (self.fragment_slots - 1):
            raise ConfigError("must be a power of two, at least 16", path, "flows.fragment_slots")
        if not 256 <= self.batch_size <= 16_777_216:
            raise ConfigError("must be between 256 and 16777216", path, "flows.batch_size")
        if not 0 <= self.threads <= 256:
            raise ConfigError("must be between 0 and 256", path, "flows.threads")
        if not 0 <= self.walk_threads <= 256:
            raise ConfigError("must be between 0 and 256", path, "flows.walk_threads")
        if not 0 <= self.community_id_seed <= 65535:
            raise ConfigError("must be between 0 and 65535", path, "flows.community_id_seed")
        for p in self.server_ports:
            if not 0 <= p <= 65535:
                raise ConfigError(f"port {p} is out of range", path, "flows.server_ports")
        for net in self.local_nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ConfigError(f"not a network: {exc}", path, "flows.local_nets") from None
        return self


@dataclass(frozen=True)
class Config:
    flows: FlowConfig = field(default_factory=FlowConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    detect: dict = field(default_factory=dict)  # detector name -> its Params
    disabled_detectors: tuple[str, ...] = ()
    daemon: DaemonConfig = field(default_factory=DaemonConfig)


def _build(cls, table: dict, path: str, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"unknown key (known: {', '.join(sorted(fields))})", path, f"{prefix}{key}")
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            if not isinstance(value, list):
                raise ConfigError("must be a list", path, f"{prefix}{key}")
            value = tuple(value)
        elif isinstance(default, bool) or isinstance(value, bool):
            if not isinstance(value, bool) or not isinstance(default, bool):
                raise ConfigError(f"must be a {type(default).__name__}", path, f"{prefix}{key}")
        elif isinstance(default, float):
            if not isinstance(value, int | float):
                raise ConfigError("must be a number", path, f"{prefix}{key}")
            value = float(value)
        elif isinstance(default, int):
            if not isinstance(value, int):
                raise ConfigError("must be an integer", path, f"{prefix}{key}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError("must be a string", path, f"{prefix}{key}")
        kwargs[key] = value
    return cls(**kwargs)


def _detect_section(table: dict, path: str) -> tuple[dict, tuple[str, ...]]:
    from detector.detect.registry import BY_NAME

    params, disabled = {}, ()
    for key, value in table.items():
        if key == "disabled":
            if not isinstance(value, list) or any(v not in BY_NAME for v in value):
                raise ConfigError(f"must be a list of detector names ({', '.join(BY_NAME)})", path, "detect.disabled")
            disabled = tuple(value)
        elif key in BY_NAME:
            if not isinstance(value, dict):
                raise ConfigError("must be a table", path, f"detect.{key}")
            params[key] = _build(BY_NAME[key].Params, value, path, f"detect.{key}.")
        else:
            raise ConfigError(f"unknown detector (known: {', '.join(BY_NAME)})", path, f"detect.{key}")
    return params, disabled


def load_config(path: str | None) -> Config:
    """Read and validate a TOML file; ``None`` gives the defaults."""
    if path is None:
        return Config(flows=FlowConfig().validate())
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path) from None
    known = {"flows", "site", "detect", "daemon"}
    for section in data:
        if section not in known:
            raise ConfigError(f"unknown section (known: {', '.join(sorted(known))})", path, section)
        if not isinstance(data[section], dict):
            raise ConfigError("must be a table", path, section)
    flows = _build(FlowConfig, data.get("flows", {}), path, "flows.").validate(path)
    site = _build(SiteConfig, data.get("site", {}), path, "site.").validate(path)
    params, disabled = _detect_section(data.get("detect", {}), path)
    daemon = _build(DaemonConfig, data.get("daemon", {}), path, "daemon.").validate(path)
    return Config(flows=flows, site=site, detect=params, disabled_detectors=disabled, daemon=daemon)
