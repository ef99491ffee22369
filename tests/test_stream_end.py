"""The L7 tap ends a TLS or SSH stream as soon as no bytes to come can add to its event (a
resumed session, a stream that is not TLS, keys already changed), and a late or resent
handshake packet of that flow opens no second stream."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from detector.config import FlowConfig
from detector.flows.engine import FlowEngine
from detector.l7 import ssh, tls
from detector.l7.events import Events
from detector.l7.tap import L7Tap
from detector.pipeline.ingest import Ingest
from detector.synth import messages as msg
from tests.capture_files import Rec, pcap_bytes

S = 1_000_000_000
T0 = 1_700_000_000 * S
C, SV = "10.0.0.5", "192.0.2.80"
CMAC, SMAC = "02:00:00:00:00:05", "02:00:00:00:00:80"


def _pieces(rng) -> dict[str, bytes]:
    leaf = msg.certificate(rng, "portal.example.org", "R11", "Let's Encrypt")
    return {"hello": msg.client_hello(rng, "portal.example.org"), "flight": msg.server_flight(rng, [leaf]),
            "finish": msg.client_finish(rng), "server_finish": msg.server_finish(rng), "app": msg.app_data(rng, 300),
            "junk": rng.bytes(40), "banner": b"SSH-2.0-OpenSSH_9.6\r\n", "kexinit": msg.ssh_kexinit(rng),
            "reply": msg.ssh_kex_reply(rng, msg.ssh_host_key(3)), "line": b"a line before the banner\r\n"}


PIECES = _pieces(np.random.default_rng(7))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(PIECES)), min_size=1, max_size=6), st.data())
def test_a_settled_parse_is_final_whatever_bytes_follow(names, data):
    """What the early end rests on: once a parser says a direction is settled, any longer
    stream with those bytes first parses to the same result."""
    stream = b"".join(PIECES[n] for n in names)
    cut = data.draw(st.integers(0, len(stream)))
    head = stream[:cut]
    msgs, settled = tls.handshake_scan(head)
    if settled:
        assert tls.handshake_scan(stream) == (msgs, True)
    text, start, settled = ssh.banner_scan(head)
    if settled:
        assert ssh.banner_scan(stream) == (text, start, True)
    if text is not None:
        key, settled = ssh.host_key_scan(head, start)
        if settled:
            assert ssh.host_key_scan(stream, start) == (key, True)


def test_what_settles_a_direction():
    p = PIECES
    assert tls.handshake_scan(p["hello"]) == (tls.handshake_messages(p["hello"]), False)  # a flight may follow
    assert tls.handshake_scan(p["hello"][:20]) == ([], False)  # cut short: the record may be completed
    assert tls.handshake_scan(p["hello"] + p["server_finish"])[1]  # change_cipher_spec: handshake over
    assert tls.handshake_scan(b"\x47ET / HTTP/1.1\r\n") == ([], True)  # not TLS at all
    assert ssh.banner_scan(b"SSH-2.0-x") == (None, 0, False)  # the line may still end
    assert ssh.banner_scan(b"x" * 600) == (None, 0, True)  # no line of 512 bytes
    assert ssh.banner_scan(b"\r\n" * 16 + b"SSH-2.0-x\r\n") == (None, 0, True)  # 16 lines without one
    server = p["banner"] + p["kexinit"] + p["reply"]
    start = ssh.banner_scan(server)[1]
    assert ssh.host_key_scan(server, start)[0] is not None
    client = p["banner"] + p["kexinit"] + msg.ssh_kex_client(np.random.default_rng(1))
    assert ssh.host_key_scan(client, start) == (None, False)  # the reply may still come
    assert ssh.host_key_scan(client + b"\x00\x00\x00\x0c\x0a\x15" + bytes(10), start) == (None, True)  # new keys


def _frames(messages: list[tuple[bool, bytes]], port: int) -> list[Rec]:
    """A TCP session carrying ``messages`` (from_client, payload), one segment each."""
    c, s = {"src": C, "dst": SV, "ttl": 64}, {"src": SV, "dst": C, "ttl": 50}
    seq = {True: 100, False: 500}
    out = [(True, TCP(sport=40000, dport=port, flags="S", seq=99)),
           (False, TCP(sport=port, dport=40000, flags="SA", seq=499, ack=100))]
    for from_client, payload in messages:
        tcp = TCP(sport=40000, dport=port, flags="PA", seq=seq[True], ack=seq[False]) if from_client else \
            TCP(sport=port, dport=40000, flags="PA", seq=seq[False], ack=seq[True])
        out.append((from_client, tcp / payload))
        seq[from_client] += len(payload)
    frames = []
    for k, (from_client, seg) in enumerate(out):
        ip = IP(**(c if from_client else s)) / seg
        eth = Ether(src=CMAC, dst=SMAC) if from_client else Ether(src=SMAC, dst=CMAC)
        frames.append(Rec(T0 + k * S // 100, bytes(eth / ip)))
    return frames


def _tap_run(tmp_path, messages, port, snap: int | None = None, padded=()) -> tuple[Events, Events, L7Tap]:
    """The events one batch gives, those the end of input gives, and the tap (frames cut to
    ``snap`` bytes, as a capture's snap length cuts them; the frames of messages ``padded``
    with Ethernet padding after the IP packet)."""
    frames = [Rec(r.ts_ns, r.data[:snap], len(r.data)) if snap else r for r in _frames(messages, port)]
    for k in padded:
        frames[2 + k] = Rec(frames[2 + k].ts_ns, frames[2 + k].data + bytes(6))
    path = tmp_path / "s.pcap"
    path.write_bytes(pcap_bytes(frames))
    engine, tap = FlowEngine(dataclasses.replace(FlowConfig(), batch_size=4096)), L7Tap()
    (b,) = Ingest([str(path)], 4096).batches()
    engine.process(b)
    return tap.process(b, engine.cols, b.n), tap.flush(), tap


def test_a_resumed_tls_session_ends_at_the_change_of_cipher(tmp_path):
    rng = np.random.default_rng(3)
    hello = msg.client_hello(rng, "portal.example.org")
    # an abbreviated handshake: ServerHello, ChangeCipherSpec, Finished; no certificates come
    flight = tls.handshake_messages(msg.server_flight(rng, []))
    server = msg._record(msg._handshake(2, flight[0][1])) + msg.server_finish(rng)
    messages = [(True, hello), (False, server)] + [(k % 2 == 0, msg.app_data(rng, 200)) for k in range(12)]
    ev, end, tap = _tap_run(tmp_path, messages, 443)
    assert [e.client_hello.sni for e in ev.tls] == ["portal.example.org"]  # handed on in the batch
    assert ev.tls[0].server_hello is not None and ev.tls[0].certificates == []
    assert not tap.streams and end.tls == []


def test_a_resent_banner_after_the_end_opens_no_second_stream(tmp_path):
    rng = np.random.default_rng(4)
    shake = msg.ssh_handshake(rng, msg.ssh_host_key(9))
    messages = shake + [(False, b"SSH-2.0-OpenSSH_8.7\r\n")] + [(k % 2 == 0, rng.bytes(64)) for k in range(6)]
    ev, end, _ = _tap_run(tmp_path, messages, 22)
    events = ev.ssh + end.ssh
    assert len(events) == 1
    e = events[0]
    assert (e.client_banner, e.server_banner, e.host_key_type) == ("SSH-2.0-OpenSSH_9.6", "SSH-2.0-OpenSSH_8.7",
                                                                  "ssh-ed25519")


def test_an_ssh_stream_without_a_key_ends_once_both_sides_have_changed_keys(tmp_path):
    """Banners both ways, key exchange without a reply this parser reads (a method it does not
    know), new keys both ways: nothing more can come, so the stream ends before the input does."""
    rng = np.random.default_rng(5)
    newkeys = b"\x00\x00\x00\x0c\x0a\x15" + bytes(10)
    messages = [(False, b"SSH-2.0-OpenSSH_8.7\r\n"), (True, b"SSH-2.0-OpenSSH_9.6\r\n"), (True, msg.ssh_kexinit(rng)),
                (False, msg.ssh_kexinit(rng)), (True, newkeys), (False, newkeys)] + \
        [(k % 2 == 0, rng.bytes(64)) for k in range(6)]
    ev, end, tap = _tap_run(tmp_path, messages, 22)
    assert [(e.client_banner, e.host_key) for e in ev.ssh] == [("SSH-2.0-OpenSSH_9.6", None)]
    assert end.ssh == [] and not tap.streams


def test_bytes_after_a_cut_packet_do_not_follow_on(tmp_path):
    """A ClientHello cut by the snap length is not completed with the next packet's bytes (they
    would parse as a garbled hello); the cut direction is settled, and a frame's Ethernet
    padding is not taken for payload."""
    rng = np.random.default_rng(6)
    messages = [(True, msg.client_hello(rng, "portal.example.org")), (False, msg.server_flight(rng, []))] + \
        [(True, bytes(300)) for _ in range(4)]
    ev, end, tap = _tap_run(tmp_path, messages, 443, snap=120)
    assert ev.tls + end.tls == [] and not tap.streams
    ev, end, _ = _tap_run(tmp_path, messages, 443)  # the same, captured whole
    assert [e.client_hello.sni for e in ev.tls + end.tls] == ["portal.example.org"]


def test_ethernet_padding_is_not_stream_bytes(tmp_path):
    rng = np.random.default_rng(8)
    messages = msg.ssh_handshake(rng, msg.ssh_host_key(9))  # the server's banner first
    ev, end, _ = _tap_run(tmp_path, messages, 22, padded=[0])
    assert [e.host_key_type for e in ev.ssh + end.ssh] == ["ssh-ed25519"]
