"""Link-layer header types: which ones the decoder reads, and names for messages."""

from __future__ import annotations

from kernels.parse import SUPPORTED_LINK_TYPES

NAMES = {
    0: "NULL (BSD loopback)",
    1: "ETHERNET",
    9: "PPP",
    12: "RAW (DLT 12)",
    14: "RAW (DLT 14)",
    50: "PPP_HDLC",
    101: "RAW",
    104: "C_HDLC (Cisco HDLC)",
    105: "IEEE802_11",
    108: "LOOP (OpenBSD loopback)",
    113: "LINUX_SLL",
    127: "IEEE802_11_RADIOTAP",
    147: "USER0",
    192: "PPI",
    228: "IPV4",
    229: "IPV6",
    239: "NFLOG",
    276: "LINUX_SLL2",
}


def name(link_type: int) -> str:
    return NAMES.get(link_type, "unknown")


def is_supported(link_type: int) -> bool:
    return link_type in SUPPORTED_LINK_TYPES


def unsupported_message(link_type: int) -> str:
    supported = ", ".join(f"{t} ({NAMES[t]})" for t in SUPPORTED_LINK_TYPES)
    return f"link type {link_type} ({name(link_type)}) is not supported; supported: {supported}"
