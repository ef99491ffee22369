"""Protocol messages in wire format for synthetic incidents: TLS 1.2 handshakes with X.509
certificates, SSH banners and key exchange, DHCP, ICMP redirects, Stratum and HTTP.

Only what the protocols' clear-text parts carry is built, byte-exact where an inspector reads
it (names, fingerprints, message types) and filled with seeded random bytes elsewhere (keys,
nonces, signatures).
"""

from __future__ import annotations

import json
import struct

import numpy as np

# -- DER / X.509 --------------------------------------------------------------------------------


def _der(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        head = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + value


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _name(cn: str, org: str | None = None) -> bytes:
    rdns = []
    if org:
        rdns.append(_der(0x31, _seq(_der(0x06, b"\x55\x04\x0a"), _der(0x0C, org.encode()))))
    rdns.append(_der(0x31, _seq(_der(0x06, b"\x55\x04\x03"), _der(0x0C, cn.encode()))))
    return _seq(*rdns)


def certificate(rng: np.random.Generator, subject_cn: str, issuer_cn: str, issuer_org: str | None = None,
                subject_org: str | None = None, not_before: str = "261001000000Z",
                not_after: str = "270101000000Z") -> bytes:
    """A DER X.509 v3 certificate (RSA key and signature are random bytes of the right size)."""
    sha256_rsa = _seq(_der(0x06, bytes.fromhex("2a864886f70d01010b")), b"\x05\x00")
    rsa = _seq(_der(0x06, bytes.fromhex("2a864886f70d010101")), b"\x05\x00")
    key = _der(0x03, b"\x00" + _seq(_der(0x02, b"\x00" + rng.bytes(256)), _der(0x02, b"\x01\x00\x01")))
    tbs = _seq(
        _der(0xA0, _der(0x02, b"\x02")),
        _der(0x02, b"\x01" + rng.bytes(15)),
        sha256_rsa,
        _name(issuer_cn, issuer_org),
        _seq(_der(0x17, not_before.encode()), _der(0x17, not_after.encode())),
        _name(subject_cn, subject_org),
        _seq(rsa, key),
    )
    return _seq(tbs, sha256_rsa, _der(0x03, b"\x00" + rng.bytes(256)))


# -- TLS 1.2 ------------------------------------------------------------------------------------
CIPHERS_BROWSER = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C,
                   0x009D, 0x002F, 0x0035)


def _record(body: bytes, ctype: int = 22) -> bytes:
    return struct.pack(">BHH", ctype, 0x0303, len(body)) + body


def _handshake(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


def _ext(etype: int, data: bytes) -> bytes:
    return struct.pack(">HH", etype, len(data)) + data


def client_hello(rng: np.random.Generator, sni: str | None, ciphers=CIPHERS_BROWSER, alpn=("h2", "http/1.1")) -> bytes:
    exts = b""
    if sni:
        host = sni.encode()
        exts += _ext(0, struct.pack(">HBH", len(host) + 3, 0, len(host)) + host)
    exts += _ext(10, struct.pack(">H", 8) + struct.pack(">HHHH", 29, 23, 24, 25))
    exts += _ext(11, b"\x01\x00")
    exts += _ext(13, struct.pack(">H", 8) + struct.pack(">HHHH", 0x0403, 0x0804, 0x0401, 0x0503))
    if alpn:
        names = b"".join(bytes([len(a)]) + a.encode() for a in alpn)
        exts += _ext(16, struct.pack(">H", len(names)) + names)
    exts += _ext(23, b"")
    exts += _ext(65281, b"\x00")
    cs = b"".join(struct.pack(">H", c) for c in ciphers)
    body = (struct.pack(">H", 0x0303) + rng.bytes(32) + b"\x20" + rng.bytes(32) + struct.pack(">H", len(cs)) + cs
            + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
    return _record(_handshake(1, body))


def server_flight(rng: np.random.Generator, certs: list[bytes], cipher: int = 0xC02F) -> bytes:
    """ServerHello, Certificate (leaf first), ServerKeyExchange and ServerHelloDone (TLS 1.2)."""
    exts = _ext(65281, b"\x00") + _ext(11, b"\x01\x00") + _ext(23, b"")
    hello = (struct.pack(">H", 0x0303) + rng.bytes(32) + b"\x20" + rng.bytes(32) + struct.pack(">HB", cipher, 0)
             + struct.pack(">H", len(exts)) + exts)
    chain = b"".join(len(c).to_bytes(3, "big") + c for c in certs)
    ske = b"\x03\x00\x1d\x20" + rng.bytes(32) + b"\x04\x01\x01\x00" + rng.bytes(256)
    return _record(_handshake(2, hello) + _handshake(11, len(chain).to_bytes(3, "big") + chain)
                   + _handshake(12, ske) + _handshake(14, b""))


def client_finish(rng: np.random.Generator) -> bytes:
    """ClientKeyExchange, ChangeCipherSpec and the encrypted Finished."""
    return (_record(_handshake(16, b"\x20" + rng.bytes(32))) + _record(b"\x01", 20) + _record(rng.bytes(40)))


def server_finish(rng: np.random.Generator) -> bytes:
    return _record(b"\x01", 20) + _record(rng.bytes(40))


def app_data(rng: np.random.Generator, n: int) -> bytes:
    return _record(rng.bytes(max(n - 5, 1)), 23)


# -- SSH ------------------------------------------------------------------------------------------
def _sshstr(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _ssh_packet(rng: np.random.Generator, payload: bytes) -> bytes:
    pad = 8 - (len(payload) + 5) % 8
    pad = pad + 8 if pad < 4 else pad
    return struct.pack(">IB", len(payload) + pad + 1, pad) + payload + rng.bytes(pad)


def ssh_host_key(seed: int) -> bytes:
    """An Ed25519 public key blob, fixed by ``seed``."""
    return _sshstr(b"ssh-ed25519") + _sshstr(np.random.default_rng(seed).bytes(32))


def ssh_kexinit(rng: np.random.Generator) -> bytes:
    lists = [b"curve25519-sha256,ecdh-sha2-nistp256,diffie-hellman-group14-sha256", b"ssh-ed25519,rsa-sha2-512",
             b"chacha20-poly1305@openssh.com,aes128-ctr", b"chacha20-poly1305@openssh.com,aes128-ctr",
             b"hmac-sha2-256", b"hmac-sha2-256", b"none,zlib@openssh.com", b"none,zlib@openssh.com", b"", b""]
    payload = b"\x14" + rng.bytes(16) + b"".join(_sshstr(x) for x in lists) + b"\x00" + b"\x00" * 4
    return _ssh_packet(rng, payload)


def ssh_kex_client(rng: np.random.Generator) -> bytes:
    """KEX_ECDH_INIT (30) with the client's ephemeral key."""
    return _ssh_packet(rng, b"\x1e" + _sshstr(rng.bytes(32)))


def ssh_kex_reply(rng: np.random.Generator, host_key: bytes) -> bytes:
    """KEX_ECDH_REPLY (31): host key, server ephemeral key, signature; then NEWKEYS (21)."""
    sig = _sshstr(_sshstr(b"ssh-ed25519") + _sshstr(rng.bytes(64)))
    return _ssh_packet(rng, b"\x1f" + _sshstr(host_key) + _sshstr(rng.bytes(32)) + sig) + _ssh_packet(rng, b"\x15")


def ssh_handshake(rng: np.random.Generator, host_key: bytes, client: str = "SSH-2.0-OpenSSH_9.6",
                  server: str = "SSH-2.0-OpenSSH_8.7") -> list[tuple[bool, bytes]]:
    """The clear-text start of an SSH connection as (from_client, bytes) messages."""
    return [(False, server.encode() + b"\r\n"), (True, client.encode() + b"\r\n"), (True, ssh_kexinit(rng)),
            (False, ssh_kexinit(rng)), (True, ssh_kex_client(rng)), (False, ssh_kex_reply(rng, host_key)),
            (True, _ssh_packet(rng, b"\x15"))]


# -- DHCP ----------------------------------------------------------------------------------------
DISCOVER, OFFER, REQUEST, ACK = 1, 2, 3, 5


def _ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def dhcp(msg_type: int, xid: int, client_mac: int, your_ip: str = "0.0.0.0", server_id: str | None = None,
         router: str | None = None, dns: str | None = None, requested: str | None = None) -> bytes:
    op = 2 if msg_type in (OFFER, ACK) else 1
    head = struct.pack(">BBBBIHH", op, 1, 6, 0, xid, 0, 0x8000)
    head += b"\x00" * 4 + _ip4(your_ip) + (_ip4(server_id) if server_id and op == 2 else b"\x00" * 4) + b"\x00" * 4
    head += client_mac.to_bytes(6, "big") + b"\x00" * 10 + b"\x00" * 192 + b"\x63\x82\x53\x63"
    opts = bytes([53, 1, msg_type])
    if server_id:
        opts += bytes([54, 4]) + _ip4(server_id)
    if requested:
        opts += bytes([50, 4]) + _ip4(requested)
    if op == 2:
        opts += bytes([51, 4]) + struct.pack(">I", 3600) + bytes([1, 4, 255, 255, 0, 0])
        if router:
            opts += bytes([3, 4]) + _ip4(router)
        if dns:
            opts += bytes([6, 4]) + _ip4(dns)
    else:
        opts += bytes([55, 4, 1, 3, 6, 15])
    return head + opts + b"\xff" + b"\x00" * max(0, 300 - len(head) - len(opts) - 1)


# -- ICMP ------------------------------------------------------------------------------------------
def ip_header_copy(src: str, dst: str, proto: int = 6, sport: int = 44321, dport: int = 443) -> bytes:
    """The IPv4 header plus 8 bytes of a packet, as an ICMP error or redirect quotes it."""
    return (struct.pack(">BBHHHBBH", 0x45, 0, 60, 0x1C46, 0x4000, 63, proto, 0) + _ip4(src) + _ip4(dst)
            + struct.pack(">HHI", sport, dport, 0x5A5A5A5A))


def linux_ping_payload(seq: int) -> bytes:
    """56 bytes as Linux ping sends them: an 8-byte timestamp, then 0x10, 0x11, ..."""
    return struct.pack("<II", 1_793_606_400 + seq, 0) + bytes(range(0x10, 0x10 + 48))


# -- Stratum / JSON-RPC and HTTP -----------------------------------------------------------------
def jsonrpc(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def http_request(method: str, host: str, path: str, agent: str, body_len: int = 0,
                 content_type: str | None = None, extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {agent}", "Accept: */*"]
    if body_len:
        lines.append(f"Content-Length: {body_len}")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http_response(status: int = 200, body_len: int = 0, content_type: str = "text/html") -> bytes:
    return (f"HTTP/1.1 {status} OK\r\nServer: nginx\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {body_len}\r\n\r\n").encode()
