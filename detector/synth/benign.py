"""Benign activities that look a little like attacks, laid over the background mix: what a
detector must leave alone on a real HPC site.

- ``benign-dtn``: a Globus replication day on the DTNs: GridFTP control on 2811, parallel data
  streams with jumbo frames to and from partner DTNs, the Globus service polled over HTTPS every
  30 s, perfSONAR throughput and latency tests.
- ``benign-login``: a busy morning on the login nodes: users logging in over SSH (some mistype
  a password), git and pip over HTTPS, long CDN names in DNS, Linux and Windows pings, DHCP
  renewals from the one DHCP server, and a nightly-style backup pushed to a partner DTN.
- ``benign-p2p``: a workstation seeding a Linux ISO over BitTorrent: handshakes with the peers
  that answer, and as many peers that never do, plus DHT messages.
- ``benign-happy-eyeballs``: a dual-stack workstation whose IPv6 path is broken: for each site it
  visits it looks the name up (AAAA and A), its IPv6 SYN goes unanswered, and IPv4 wins 250 ms
  later (RFC 8305); some lookups happen on a resolver the capture does not see.
- ``benign-two-resolvers``: clients that send each question to both site resolvers, which
  answer a CDN name with different addresses.
- ``benign-route-change``: an outside user's long SSH session to a login node whose path
  changes halfway (the TTL of its packets drops by 8 and stays there).
"""

from __future__ import annotations

from detector.synth import dns
from detector.synth import messages as msg
from detector.synth.attacks import MS, S, Stage, _failed_ssh, _ssh_logins, _tls_sessions
from detector.synth.craft import BROADCAST_MAC, Peer
from detector.synth.packets import ip_words
from detector.synth.traffic import TH_ACK, TH_PSH, TH_SYN


def _globus_transfer(st: Stage, dtn, partner: str, t: int, streams: int, mib: int, push: bool) -> int:
    """One GridFTP transfer: a control session on 2811 and ``streams`` parallel data streams
    (jumbo frames, one-way data) between partner ports 50000-51000."""
    r = st.rng
    local, remote = st.peer(dtn), st.peer(partner)
    ctl = [(True, msg.client_hello(r, None, alpn=())), (False, msg.server_flight(
        r, [msg.certificate(r, f"{partner}", "Globus Connect Server CA", "Globus")])),
           (True, msg.client_finish(r)), (False, msg.server_finish(r))] + [(bool(k % 2), 120) for k in range(20)]
    end = st.craft.tcp_session(t, local, remote, int(r.integers(40000, 60000)), 2811, ctl, rtt_ns=12 * MS)
    per_stream = mib // streams
    a, b = (local, remote) if push else (remote, local)  # the sending side opens the data stream
    for k in range(streams):
        data = [(True, 8 << 20)] * max(1, per_stream // 8)
        e = st.craft.tcp_session(t + 50 * MS + k * MS, a, b, int(r.integers(50000, 51001)),
                                 int(r.integers(50000, 51001)), data, rtt_ns=12 * MS, gap_ns=2 * MS, segment=8948)
        end = max(end, e)
    return end


def dtn_day(st: Stage) -> None:
    """Globus replication between the site's DTNs and partner DTNs, with the service polled
    over HTTPS and perfSONAR tests (benign: data leaves, by design)."""
    partners = [a for a in st.site.partner_dtns if ":" not in a]
    dtns = st.site.role("dtn")
    t = st.t0
    for k in range(6):
        t = _globus_transfer(st, dtns[k % len(dtns)], partners[k % len(partners)], t, int(st.rng.choice([4, 8])),
                             int(st.rng.choice([64, 128, 256])), push=k % 3 != 2) + 5 * S
    end = t
    api = st.peer(st.external((3, 18, 54)))
    chain = [msg.certificate(st.rng, "transfer.api.globus.org", "Amazon RSA 2048 M02", "Amazon")]
    poll = st.t0
    while poll < end:  # Globus Connect Server polls its task queue
        _tls_sessions(st, st.peer(dtns[0]), api, poll, "transfer.api.globus.org", chain, 1, 0)
        poll += int((30 + st.rng.uniform(-0.5, 0.5)) * S)
    for k in range(4):  # perfSONAR: iperf3 throughput and owamp latency tests to a partner
        r = st.rng
        st.craft.tcp_session(st.t0 + k * 60 * S, st.peer(dtns[1]), st.peer(partners[1]), int(r.integers(40000, 60000)),
                             5201, [(True, 2 << 20)] * 16, rtt_ns=12 * MS, gap_ns=5 * MS, segment=8948)
        for j in range(100):
            st.craft.udp(st.t0 + k * 60 * S + j * 100 * MS, st.peer(dtns[1]), st.peer(partners[1]), 8760, 861,
                         r.bytes(40))
    return None


def login_morning(st: Stage) -> None:
    """Users on the login nodes (benign: a mistyped password, long CDN names, many pings)."""
    r = st.rng
    logins = st.site.role("login")
    t = st.t0
    users = [st.peer(st.external((128, 129, 130, 131, 141, 145))) for _ in range(24)]
    for k, user in enumerate(users):
        node = logins[k % len(logins)]
        key = msg.ssh_host_key(1 + (k % len(logins)))
        if k % 6 == 5:  # one mistyped password: a short failed connection first
            _failed_ssh(st, user, st.peer(node), t, key, tries=1)
        _ssh_logins(st, user, st.peer(node), t + 8 * S, key, 1, 0, typed=int(r.integers(40, 160)))
        t += int(r.uniform(10, 40) * S)
    end = t
    names = ["github.com", "pypi.org", "files.pythonhosted.org", "conda.anaconda.org", "gitlab.com"]
    certs = {n: [msg.certificate(r, n, "DigiCert Global G2 TLS RSA SHA256 2020 CA1", "DigiCert Inc")] for n in names}
    tt = st.t0
    while tt < end:
        n = names[int(r.integers(0, len(names)))]
        srv = st.peer(f"140.82.{int(r.integers(112, 114))}.{int(r.integers(1, 255))}")
        _tls_sessions(st, st.peer(logins[int(r.integers(0, len(logins)))]), srv, tt, n, certs[n], 1, 0)
        tt += int(r.uniform(3, 20) * S)
    resolver = st.peer(st.host("dns1"))
    cdn = ["e3528.dscg.akamaiedge.net", "d3ag4hukkh62yn.cloudfront.net", "s3-r-w.eu-central-1.amazonaws.com",
           "prod-azure-westeurope-1.blob.core.windows.net", "a1887.dscq.akamai.net", "r4---sn-4g5ednsz.googlevideo.com",
           "login.microsoftonline.com", "ocsp.digicert.com", "dualstack.python.map.fastly.net"]
    tt = st.t0
    while tt < end:
        c = st.peer(logins[int(r.integers(0, len(logins)))])
        name = cdn[int(r.integers(0, len(cdn)))]
        txid, port = int(r.integers(0, 65536)), int(r.integers(20000, 60000))
        st.craft.udp(tt, c, resolver, port, 53, dns.query(txid, name, "A"))
        st.craft.udp(tt + 2 * MS, resolver, c, 53, port, dns.response(txid, name, "A", [r.bytes(4)], ttl=20))
        tt += int(r.uniform(0.2, 3) * S)
    for k in range(6):  # Linux pings from login nodes, Windows pings from workstations
        src = st.peer(logins[k % len(logins)])
        dst = st.peer(st.external((8, 9, 1)))
        ident = int(r.integers(1, 65535))
        for j in range(10):
            tp = st.t0 + k * 30 * S + j * S
            st.craft.ip(tp, src, dst, 1, 8, 0, msg.linux_ping_payload(j), seq=(ident << 16) | j)
            st.craft.ip(tp + 9 * MS, dst, src, 1, 0, 0, msg.linux_ping_payload(j), seq=(ident << 16) | j, ttl=117)
        ws = st.peer(st.host(f"ws{1 + k}"))
        for j in range(4):
            tp = st.t0 + k * 30 * S + j * S + 500 * MS
            win = b"abcdefghijklmnopqrstuvwabcdefghi"
            st.craft.ip(tp, ws, dst, 1, 8, 0, win, seq=(1 << 16) | j, ttl=128)
            st.craft.ip(tp + 9 * MS, dst, ws, 1, 0, 0, win, seq=(1 << 16) | j, ttl=117)
    gw = st.site.gateway
    bcast = Peer(0, ip_words("255.255.255.255")[1], BROADCAST_MAC, 4, "255.255.255.255")
    for k in range(8):  # DHCP renewals answered by the one server
        c = st.host(f"ws{1 + k}")
        xid = int(r.integers(0, 2**32))
        tp = st.t0 + k * 40 * S
        st.craft.udp(tp, st.peer(c), st.peer(gw), 68, 67, msg.dhcp(msg.REQUEST, xid, c.mac_int, requested=c.ipv4))
        st.craft.udp(tp + 2 * MS, st.peer(gw), bcast, 67, 68,
                     msg.dhcp(msg.ACK, xid, c.mac_int, c.ipv4, gw.ipv4, gw.ipv4, "10.10.0.53"), dst_mac=BROADCAST_MAC)
    backup = st.peer([a for a in st.site.partner_dtns if ":" not in a][0])
    st.craft.tcp_session(st.t0 + 60 * S, st.peer(logins[0]), backup, 50555, 22,
                         msg.ssh_handshake(r, msg.ssh_host_key(77)) + [(True, 4 << 20)] * 80, rtt_ns=12 * MS,
                         gap_ns=3 * MS, segment=65160)
    return None


def p2p_seeding(st: Stage) -> None:
    r = st.rng
    ws = st.peer(st.host("ws20"))
    t = st.t0
    info_hash = r.bytes(20)
    for k in range(80):
        peer = st.peer(st.external((24, 46, 73, 78, 82, 89, 92, 109, 178, 212)))
        port = int(r.integers(6881, 65000))
        if k % 2:  # a peer the tracker listed but that has gone away: SYNs nobody answers
            for j in range(3):
                st.craft.ip(t + j * S, ws, peer, 6, 51000 + k, port, flags=TH_SYN, seq=1000 + k)
        else:
            hs = b"\x13BitTorrent protocol" + bytes(8) + info_hash + b"-qB4620-" + r.bytes(12)
            st.craft.tcp_session(t, ws, peer, 51000 + k, port, [(True, hs), (False, hs), (True, 2000),
                                                                 (False, 16384 * 4)], rtt_ns=60 * MS)
        dht = b"d1:ad2:id20:" + r.bytes(20) + b"6:target20:" + r.bytes(20) + b"e1:q9:find_node1:t2:aa1:y1:qe"
        st.craft.udp(t + 200 * MS, ws, st.peer(st.external((31, 37, 79, 85, 95))), 6881, int(r.integers(1024, 65000)),
                     dht)
        t += int(r.uniform(0.2, 1.5) * S)


def happy_eyeballs(st: Stage) -> None:
    r = st.rng
    ws = st.host("ws21")
    c4, c6 = st.peer(ws), st.peer(ws, v6=True)
    resolver4 = st.peer(st.host("dns1"))
    t = st.t0
    for k in range(40):
        name = f"www.site{k}.example.net"
        a4 = f"{int(r.choice([93, 104, 151, 185]))}.{int(r.integers(1, 255))}.{int(r.integers(0, 256))}.{int(r.integers(1, 255))}"
        a6 = f"2a02:{int(r.integers(0x1000, 0xffff)):x}::{k + 1:x}"
        if k % 4:  # the lookups this capture sees; the others went to a resolver elsewhere (DoH)
            txid, port = int(r.integers(0, 65536)), int(r.integers(20000, 60000))
            st.craft.udp(t, c4, resolver4, port, 53, dns.query(txid, name, "AAAA"))
            st.craft.udp(t + 3 * MS, resolver4, c4, 53, port, dns.response(txid, name, "AAAA", [_v6_bytes(a6)], ttl=60))
            st.craft.udp(t + 1 * MS, c4, resolver4, port + 1, 53, dns.query(txid ^ 1, name, "A"))
            st.craft.udp(t + 4 * MS, resolver4, c4, 53, port + 1, dns.response(txid ^ 1, name, "A", [_v4_bytes(a4)],
                                                                               ttl=60))
        t += 10 * MS
        cport = 40000 + 2 * k
        for j in range(2):  # the IPv6 attempt goes nowhere (a SYN and its retry)
            st.craft.ip(t + j * S, c6, st.peer(a6), 6, cport, 443, flags=TH_SYN, seq=77 + k)
        st.craft.tcp_session(t + 250 * MS, c4, st.peer(a4), cport + 1, 443,
                             [(True, msg.client_hello(r, name)), (False, 5000)], rtt_ns=30 * MS)
        t += int(r.uniform(2, 6) * S)


def two_resolvers(st: Stage) -> None:
    r = st.rng
    resolvers = [st.peer(st.host("dns1")), st.peer("9.9.9.9")]
    t = st.t0
    names = ["e3528.dscg.akamaiedge.net", "d3ag4hukkh62yn.cloudfront.net", "dualstack.python.map.fastly.net"]
    for k in range(60):
        c = st.peer(st.host(f"ws{1 + k % 8}"))
        name = names[k % len(names)]
        txid, port = int(r.integers(0, 65536)), int(r.integers(20000, 60000))
        for j, res in enumerate(resolvers):  # the same question to both, each answers by its location
            st.craft.udp(t + j * MS, c, res, port, 53, dns.query(txid, name, "A"))
            st.craft.udp(t + (8 + 20 * j) * MS, res, c, 53, port, dns.response(txid, name, "A", [r.bytes(4)], ttl=20))
        t += int(r.uniform(0.5, 3) * S)


def route_change(st: Stage) -> None:
    r = st.rng
    user, node = st.peer(st.external((128, 141))), st.peer(st.host("login2"))
    key = msg.ssh_host_key(2)
    shake = msg.ssh_handshake(r, key)
    typing = [(bool(k % 3), int(r.integers(36, 120))) for k in range(300)]
    half = len(typing) // 2
    end = st.craft.tcp_session(st.t0, user, node, 53111, 22, shake + typing[:half], rtt_ns=40 * MS, gap_ns=300 * MS,
                               close="open", isn=(1000, 9000))
    # the rest of the same connection after the path changed: eight routers more for the user's packets
    sent = sum(len(b) if isinstance(b, bytes) else b for c, b in shake + typing[:half] if c)
    recv = sum(len(b) if isinstance(b, bytes) else b for c, b in shake + typing[:half] if not c)
    moved = Peer(user.hi, user.lo, user.mac, user.ver, user.text, user.ttl - 8)
    t = end + 300 * MS
    c_seq, s_seq = 1001 + sent, 9001 + recv
    for from_user, n in typing[half:]:
        if from_user:
            st.craft.ip(t, moved, node, 6, 53111, 22, r.bytes(n), flags=TH_ACK | TH_PSH, seq=c_seq, ack=s_seq)
            c_seq += n
        else:
            st.craft.ip(t, node, moved, 6, 22, 53111, r.bytes(n), flags=TH_ACK | TH_PSH, seq=s_seq, ack=c_seq)
            s_seq += n
        t += int(r.uniform(0.1, 0.5) * S)


def _v4_bytes(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def _v6_bytes(a: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(a).packed


BENIGN = {"benign-dtn": dtn_day, "benign-login": login_morning, "benign-p2p": p2p_seeding,
          "benign-happy-eyeballs": happy_eyeballs, "benign-two-resolvers": two_resolvers,
          "benign-route-change": route_change}
