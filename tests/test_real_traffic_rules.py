"""The rules that keep real benign traffic quiet (issue 20), each at its boundary, on hand-built
events and flow batches: uploads judged by what the body is, short echo payloads, a VNC user who
logs in, IPv6 routers that advertise themselves, reflection below its byte floor."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from detector.detect.base import FlowView
from detector.detect.bruteforce import BruteForce
from detector.detect.floods import Floods
from detector.detect.http_upload import HttpUpload
from detector.detect.icmp_redirect import IcmpRedirect
from detector.detect.icmp_tunnel import SHORT, IcmpTunnel, os_like
from detector.l7.events import Ctx, Events, HttpEvent, PacketArrays, RfbEvent
from detector.l7.http import HttpRequest

T = 1_700_000_000 * 10**9


def ctx(client="10.0.0.5", server="203.0.113.9", dport=80, uid="C1", ts=T):
    return Ctx(ts, uid, True, client, server, 40000, dport, 6)


def post(length, ctype=None, **kw):
    return HttpEvent(ctx(**kw), HttpRequest("POST", "/up", "1.1", "h", length, ctype))


def uploads(*events, flows=None):
    d = HttpUpload()
    if flows is not None:
        d.observe_flows(FlowView(flows))
    d.observe_events(Events(http=list(events)))
    return d.finish()


def flow_batch(uid, orig_bytes):
    return pa.RecordBatch.from_pydict({"uid": [uid], "proto": ["tcp"], "orig_bytes": pa.array([orig_bytes], pa.uint64())})


def test_form_and_api_bodies_count_from_min_body():
    p = HttpUpload.Params()
    assert not uploads(post(p.min_body - 1, "application/x-www-form-urlencoded"))
    (a,) = uploads(post(p.min_body, "application/x-www-form-urlencoded"))
    assert a.severity == "medium" and a.evidence["body_bytes"] == p.min_body
    assert uploads(post(p.min_body, None)) and uploads(post(p.min_body, "application/json"))


def test_file_uploads_print_jobs_and_mail_count_from_file_body():
    p = HttpUpload.Params()
    for kw in ({"ctype": "multipart/form-data; boundary=x"}, {"ctype": "application/ipp"}, {"ctype": "message/rfc822"},
               {"ctype": None, "dport": 631}):
        assert not uploads(post(p.file_body - 1, kw["ctype"], dport=kw.get("dport", 80))), kw
        assert uploads(post(p.file_body, kw["ctype"], dport=kw.get("dport", 80))), kw


def test_a_declared_length_the_flow_never_sent_uploads_only_what_was_sent():
    huge = 2**64 - 1
    assert not uploads(post(huge, "text/plain"), flows=flow_batch("C1", 400))
    # the flow record can also come after the request (a long upload)
    d = HttpUpload()
    d.observe_events(Events(http=[post(huge, "text/plain")]))
    d.observe_flows(FlowView(flow_batch("C1", 400)))
    assert not d.finish()


def test_an_upload_the_server_cut_short_counts_as_declared():
    p = HttpUpload.Params()
    (a,) = uploads(post(p.file_body + 5, "multipart/form-data"), flows=flow_batch("C1", p.min_body + 1))
    assert a.evidence["body_bytes"] == p.file_body + 5 and not a.evidence["capped_by_flow_bytes"]


def test_high_needs_high_body_towards_an_external_server():
    p = HttpUpload.Params()
    assert uploads(post(p.high_body, "application/octet-stream"))[0].severity == "high"
    assert uploads(post(p.high_body, "application/octet-stream", server="10.0.0.9"))[0].severity == "medium"


def test_echo_payloads_of_a_timestamp_or_less_are_ordinary():
    odd = bytes((37 * k + 11) % 251 for k in range(SHORT + 1))  # no ping pattern
    assert os_like(odd[:SHORT], SHORT)
    assert not os_like(odd, SHORT + 1)


def _echo(n, payload: bytes, v6=True):
    head = np.zeros((n, 8 + len(payload)), np.uint8)
    head[:, 8:] = np.frombuffer(payload, np.uint8)
    types = np.where(np.arange(n) % 2 == 0, 128 if v6 else 8, 129 if v6 else 0)
    return Events(icmp=PacketArrays({
        "ts": T + np.arange(n) * 10**9, "src": np.array(["fe80::1" if t in (128, 8) else "fe80::2" for t in types],
                                                        dtype=object),
        "dst": np.array(["fe80::2" if t in (128, 8) else "fe80::1" for t in types], dtype=object),
        "v6": np.full(n, v6), "type": types.astype(np.uint8), "code": np.zeros(n, np.uint8),
        "payload_len": np.full(n, len(payload), np.uint32), "ttl": np.full(n, 64, np.uint8),
        "eth_src": np.zeros(n, np.uint64), "head": head, "uid": np.array(["C1"] * n, dtype=object)}))


def test_ten_short_odd_echoes_are_quiet_and_longer_ones_are_not():
    quiet = IcmpTunnel()
    quiet.observe_events(_echo(10, bytes([7, 3, 9, 1, 250, 11, 0, 4])))
    assert quiet.finish() == []
    loud = IcmpTunnel()
    loud.observe_events(_echo(10, bytes([7, 3, 9, 1, 250, 11, 0, 4]) * 3))
    (a,) = loud.finish()
    assert a.technique == "icmp_tunnel" and a.evidence["odd_payloads"] == 10


def _vnc(ok, delay_s=0.01):
    c = ctx(dport=5900)
    return RfbEvent(c, "003.008", "003.008", 2, ok, None, c.ts_ns, c.ts_ns + int(delay_s * 1e9))


def test_a_fast_vnc_failure_is_a_probe_unless_the_client_also_logs_in():
    probe = BruteForce()
    probe.observe_events(Events(rfb=[_vnc(False)]))
    (a,) = probe.finish()
    assert a.technique == "credential_probe"
    user = BruteForce()
    user.observe_events(Events(rfb=[_vnc(False), _vnc(True)]))
    assert user.finish() == []


def _icmp6(rows):
    n = len(rows)
    return Events(icmp=PacketArrays({
        "ts": T + np.arange(n), "src": np.array([r[0] for r in rows], dtype=object),
        "dst": np.array([r[1] for r in rows], dtype=object), "v6": np.ones(n, bool),
        "type": np.array([r[2] for r in rows], np.uint8), "code": np.zeros(n, np.uint8),
        "payload_len": np.full(n, 32, np.uint32), "ttl": np.full(n, 255, np.uint8),
        "eth_src": np.array([r[3] for r in rows], np.uint64),
        "head": np.zeros((n, 40), np.uint8), "uid": np.array([""] * n, dtype=object)}))


def test_an_advertised_ipv6_router_may_redirect_and_a_host_may_not():
    d = IcmpRedirect()
    d.observe_events(_icmp6([("fe80::1", "ff02::1", 134, 0x1111), ("fe80::1", "fe80::2", 137, 0x1111),
                             ("fe80::99", "fe80::2", 137, 0x9999)]))
    router, host = sorted(d.finish(), key=lambda a: a.src_ip)
    assert (router.src_ip, router.severity, router.evidence["advertised_router"]) == ("fe80::1", "low", True)
    assert (host.src_ip, host.severity) == ("fe80::99", "medium")


def test_a_router_redirect_from_another_mac_is_forged():
    d = IcmpRedirect()
    d.observe_events(_icmp6([("fe80::1", "ff02::1", 134, 0x1111), ("fe80::1", "fe80::2", 137, 0x6666)]))
    (a,) = d.finish()
    assert a.evidence["forged_router_address"] and a.severity == "high"


def _answers(victim, reflectors, nbytes):
    k = len(reflectors)
    return pa.RecordBatch.from_pydict({
        "ts": pa.array([T] * k, pa.timestamp("ns")), "proto": ["udp"] * k, "orig_h": reflectors, "resp_h": [victim] * k,
        "orig_p": [53] * k, "resp_p": [33000] * k, "orig_pkts": [10] * k, "resp_pkts": [0] * k,
        "orig_ip_bytes": [nbytes // k] * k, "resp_ip_bytes": [0] * k, "history": ["D"] * k, "conn_state": ["S0"] * k,
        "duration": [0.0] * k, "orig_bytes": [nbytes // k] * k, "resp_bytes": [0] * k, "uid": ["C"] * k})


def test_reflection_needs_its_byte_floor_from_many_reflectors():
    p = Floods.Params()
    refl = [f"192.0.2.{i}" for i in range(p.reflect_min_sources)]
    few = Floods()
    few.observe_flows(FlowView(_answers("10.0.0.5", refl, p.reflect_floor_bytes - 500)))
    assert not [a for a in few.finish() if a.technique == "reflection"]
    many = Floods()
    many.observe_flows(FlowView(_answers("10.0.0.5", refl, p.reflect_floor_bytes + 500)))
    assert [a for a in many.finish() if a.technique == "reflection"]
