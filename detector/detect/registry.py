"""The detectors ``detector analyze`` runs, in order, and how to build them from configuration."""

from __future__ import annotations

from detector.detect.arp_spoof import ArpSpoof
from detector.detect.base import Detector
from detector.detect.beaconing import Beaconing
from detector.detect.bruteforce import BruteForce
from detector.detect.bulk_upload import BulkUpload
from detector.detect.compute_outbound import ComputeOutbound
from detector.detect.dns_spoof import DnsSpoof
from detector.detect.dns_tunnel import DnsTunnel
from detector.detect.floods import Floods
from detector.detect.gateway_mac import GatewayMac
from detector.detect.gpu_theft import TELEMETRY_DETECTORS
from detector.detect.host_anomaly import HostAnomaly
from detector.detect.http_upload import HttpUpload
from detector.detect.icmp_redirect import IcmpRedirect
from detector.detect.icmp_tunnel import IcmpTunnel
from detector.detect.key_pins import KeyPins
from detector.detect.long_connection import LongConnection
from detector.detect.mining import Mining
from detector.detect.port_mismatch import PortMismatch
from detector.detect.port_scan import PortScan
from detector.detect.probe_signs import ProbeSigns
from detector.detect.remote_shell import RemoteShell
from detector.detect.rexmit import RexmitInconsistency
from detector.detect.rogue_dhcp import RogueDhcp
from detector.detect.session_hijack import SessionHijack
from detector.detect.tls_certs import TlsCerts
from detector.detect.ttl_change import TtlChange
from detector.detect.tunnels import Tunnels
from detector.site import Site

DETECTORS: tuple[type[Detector], ...] = (
    DnsTunnel, IcmpTunnel, BulkUpload, HttpUpload, Tunnels,
    ArpSpoof, GatewayMac, IcmpRedirect, RogueDhcp, DnsSpoof, KeyPins, TlsCerts, SessionHijack, TtlChange, RexmitInconsistency,
    Mining, Beaconing, ComputeOutbound,
    BruteForce, RemoteShell, LongConnection, PortMismatch,
    PortScan, ProbeSigns,
    Floods,
    HostAnomaly,
)
BY_NAME = {d.name: d for d in DETECTORS + TELEMETRY_DETECTORS}  # (telemetry ones: see gpu_theft)


def build_detectors(site: Site, params: dict[str, object] | None = None,
                    disabled: tuple[str, ...] = ()) -> list[Detector]:
    """One instance of each enabled detector, with the parameters given per name."""
    params = params or {}
    return [cls(params.get(cls.name), site) for cls in DETECTORS if cls.name not in disabled]
