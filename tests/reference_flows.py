"""A slow, independent reader for checking the fast path: plain Python over dpkt.

It knows nothing of the project's code. It counts IPv4/IPv6 packets, and per conversation
(direction-agnostic 5-tuple plus VLAN) the packets and IP bytes, summed over the whole capture.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter

import dpkt

ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
ICMP6_PAIRS = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130, 139: 140,
               140: 139, 144: 145, 145: 144}


def _packets(path):
    with open(path, "rb") as fh:
        data = fh.read()
    import io

    f = io.BytesIO(data)
    try:
        reader = dpkt.pcap.Reader(f)
        dl = reader.datalink()
        for _ts, buf in reader:
            yield dl, buf
        return
    except ValueError:
        f.seek(0)
    reader = dpkt.pcapng.Reader(f)
    # dpkt's pcapng reader knows one link type per file: enough for single-interface captures
    dl = reader.datalink()
    for _ts, buf in reader:
        yield dl, buf


def _l3(dl, buf):
    """(ip object or None, vlan)"""
    vlan = 0
    try:
        if dl == 1:
            eth = dpkt.ethernet.Ethernet(buf)
            if getattr(eth, "vlan_tags", None):
                vlan = eth.vlan_tags[0].id
            return eth.data, vlan
        if dl in (0, 108):
            fam = struct.unpack("<I" if dl == 0 else ">I", buf[:4])[0]
            if dl == 0 and fam > 0xFFFF:
                fam = struct.unpack(">I", buf[:4])[0]
            body = buf[4:]
            if fam == 2:
                return dpkt.ip.IP(body), 0
            if fam in (10, 24, 28, 30):
                return dpkt.ip6.IP6(body), 0
            return None, 0
        if dl in (12, 14, 101, 228, 229):
            v = buf[0] >> 4
            return (dpkt.ip.IP(buf) if v == 4 else dpkt.ip6.IP6(buf) if v == 6 else None), 0
        if dl == 113:
            return dpkt.sll.SLL(buf).data, 0
        if dl == 276:
            proto = struct.unpack(">H", buf[:2])[0]
            body = buf[20:]
            return (dpkt.ip.IP(body) if proto == 0x0800 else dpkt.ip6.IP6(body) if proto == 0x86DD else None), 0
    except (dpkt.UnpackError, struct.error, IndexError):
        return None, vlan
    return None, 0


def _is_ip(obj) -> bool:
    return isinstance(obj, (dpkt.ip.IP, dpkt.ip6.IP6))


def count_ip_packets(path) -> int:
    return sum(1 for dl, buf in _packets(path) if _is_ip(_l3(dl, buf)[0]))


def _addr(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def conversations(path) -> tuple[Counter, Counter]:
    """Per direction-agnostic key: packets and IP bytes."""
    items = []
    first_frag_ports = {}
    for dl, buf in _packets(path):
        ip, vlan = _l3(dl, buf)
        if not _is_ip(ip):
            continue
        v6 = isinstance(ip, dpkt.ip6.IP6)
        proto = ip.nxt if v6 else ip.p
        payload = ip.data
        frag_key = None
        if v6:
            ip_len = 40 + ip.plen
            fh = ip.extension_hdrs.get(44) if hasattr(ip, "extension_hdrs") else None
            if fh is not None and (fh.frag_off or fh.m_flag):
                frag_key = (ip.src, ip.dst, proto, fh.id)
                if fh.frag_off:
                    payload = None
                proto = fh.nxt if fh.nxt else proto
        else:
            ip_len = ip.len
            off = ip.offset
            if off or ip.mf:
                frag_key = (ip.src, ip.dst, proto, ip.id)
                if off:
                    payload = None
        sport = dport = 0
        if payload is not None and not isinstance(payload, bytes):
            if proto in (6, 17, 132):
                sport, dport = payload.sport, payload.dport
            elif proto in (1, 58):
                pairs = ICMP6_PAIRS if proto == 58 else ICMP4_PAIRS
                sport, dport = payload.type, pairs.get(payload.type, payload.code)
        elif payload is not None and isinstance(payload, bytes) and proto in (6, 17, 132) and len(payload) >= 4:
            sport, dport = struct.unpack(">HH", payload[:4])
        if frag_key is not None and payload is not None:
            first_frag_ports[frag_key] = (sport, dport)
        items.append((ip.src, ip.dst, proto, vlan, sport, dport, frag_key if payload is None else None, ip_len))
    pkts, nbytes = Counter(), Counter()
    for src, dst, proto, vlan, sport, dport, pending, ip_len in items:
        if pending is not None:
            sport, dport = first_frag_ports.get(pending, (0, 0))
        a, b = (_addr(src), sport), (_addr(dst), dport)
        key = (min(a, b, key=_order), max(a, b, key=_order), proto, vlan)
        pkts[key] += 1
        nbytes[key] += ip_len
    return pkts, nbytes


def _order(ep):
    ip = ipaddress.ip_address(ep[0])
    packed = ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed
    return packed, ep[1]


def flow_conversations(rows) -> tuple[Counter, Counter]:
    """The same sums from flow records (several records of one conversation add up)."""
    proto_num = {"tcp": 6, "udp": 17, "sctp": 132}
    pkts, nbytes = Counter(), Counter()
    for r in rows:
        a, b = (r["orig_h"], r["orig_p"]), (r["resp_h"], r["resp_p"])
        key = (min(a, b, key=_order), max(a, b, key=_order), r["ip_proto"] if r["proto"] not in proto_num
               else proto_num[r["proto"]], r["vlan"])
        pkts[key] += r["orig_pkts"] + r["resp_pkts"]
        nbytes[key] += r["orig_ip_bytes"] + r["resp_ip_bytes"]
    return pkts, nbytes

