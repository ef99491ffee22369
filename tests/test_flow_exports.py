"""Flow exports read: NetFlow v5, v9 and IPFIX from a real exporter (Debian's softflowd, reading
one of the project's captures), compared with our own flows of that capture; templates
withdrawn, expired and arriving late; malformed and truncated datagrams."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from collections import Counter

import numpy as np
import pytest

from detector.exports.decode import Decoder
from detector.exports.records import flow_batch

NS = 10**9
NOW = 1_800_000_000 * NS


def exported(tool: str, package: str, command) -> list[bytes]:
    """The datagrams ``command(port)`` (an exporter's command line) makes ``tool`` send to a
    socket of ours."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian package {package}; .ci/run installs it)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        done = subprocess.run(command(s.getsockname()[1]), capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        got = []
        try:
            while True:
                got.append(s.recv(65535))
        except TimeoutError:
            pass
    return got


def softflowd(pcap, version: int) -> list[bytes]:
    """What ``softflowd -r PCAP -v VERSION`` exports."""
    return exported("softflowd", "softflowd",
                    lambda port: ["softflowd", "-r", str(pcap), "-v", str(version), "-n", f"127.0.0.1:{port}"])


def pmacct(pcap, version: int, tmp_path) -> list[bytes]:
    """What pmacct's nfprobe plugin (``pmacctd`` reading ``pcap``) exports."""
    conf = tmp_path / f"pmacctd-{version}.conf"

    def command(port):
        conf.write_text(f"daemonize: false\npcap_savefile: {pcap}\nplugins: nfprobe\n"
                        f"nfprobe_receiver: 127.0.0.1:{port}\nnfprobe_version: {version}\n")
        return ["pmacctd", "-f", str(conf)]

    return exported("pmacctd", "pmacct", command)


def nfcapd(folder, send) -> str:
    """The file nfdump's collector writes from what ``send(port)`` sends it on loopback."""
    import time

    if shutil.which("nfcapd") is None or shutil.which("nfdump") is None:
        pytest.skip("nfdump is not installed (Debian package nfdump; .ci/run installs it)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    collector = subprocess.Popen(["nfcapd", "-p", str(port), "-b", "127.0.0.1", "-l", str(folder), "-t", "3600"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        send(port)
        time.sleep(1.0)
    finally:
        collector.terminate()
        collector.wait(10)
    [saved] = [p for p in folder.iterdir() if p.name.startswith("nfcapd.")]
    return str(saved)


def softflowd_to(pcap, version: int):
    """A ``send`` for :func:`nfcapd`: softflowd exporting ``pcap``."""
    def send(port):
        subprocess.run(["softflowd", "-r", str(pcap), "-v", str(version), "-n", f"127.0.0.1:{port}"],
                       capture_output=True, timeout=120, check=True)
    return send


def decode(datagrams: list[bytes], decoder: Decoder | None = None):
    d = decoder or Decoder()
    for k, data in enumerate(datagrams):
        d.feed(data, "127.0.0.1", NOW + k)
    return d, d.take(NOW + len(datagrams))


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    from detector.cli import main

    d = tmp_path_factory.mktemp("exports")
    assert main(["synth", "hpc-mix", "-o", str(d), "--packets", "20000", "--seed", "2", "--no-telemetry"]) == 0
    return d / "hpc-mix.pcap"


def directional(table) -> Counter:
    """Packets and IP bytes per (source, source port, destination, destination port, protocol)."""
    out = Counter()
    for r in table.to_pylist():
        key = (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["ip_proto"])
        out[key + ("pkts",)] += r["orig_pkts"]
        out[key + ("bytes",)] += r["orig_ip_bytes"]
        back = (r["resp_h"], r["resp_p"], r["orig_h"], r["orig_p"], r["ip_proto"])
        if r["resp_pkts"]:
            out[back + ("pkts",)] += r["resp_pkts"]
            out[back + ("bytes",)] += r["resp_ip_bytes"]
    return out


@pytest.fixture(scope="module")
def ours(capture):
    import pyarrow as pa

    from detector.config import load_config
    from detector.pipeline.flows_job import run_flows

    out = capture.parent / "flows.parquet"
    run_flows([str(capture)], str(out), "parquet", load_config(None).flows, progress=False)
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    keep = pa.compute.is_in(table["ip_proto"], pa.array([6, 17], pa.uint8()))
    return directional(table.filter(keep))


@pytest.mark.parametrize("version", [5, 9, 10])
def test_softflowd_exports_count_what_our_flows_count(capture, ours, version):
    """Per direction of each TCP and UDP 5-tuple, the packets and IP bytes softflowd exports equal
    ours. (ICMP is keyed differently: softflowd puts type and code in the ports of each
    direction, we pair requests with replies; timeouts split flows differently but the sums
    per 5-tuple agree. NetFlow v5 has no IPv6.)"""
    d, cols = decode(softflowd(capture, version))
    assert not [k for k in d.counts if k.startswith("dropped")], d.counts
    batch = flow_batch(cols, d.exporters)
    theirs = directional(batch.filter(np.isin(batch.column("ip_proto").to_numpy(), [6, 17])))
    if version == 5:  # NetFlow v5 carries IPv4 only
        ours = Counter({k: v for k, v in ours.items() if ":" not in k[0]})
    assert theirs == ours
    assert len(theirs) > 500
    # times: the capture's, not the exporter's clock (softflowd -r counts uptime from its start:
    # the 32-bit uptime wraps, and is unwrapped)
    ts = batch.column("ts").to_numpy().astype(np.int64)
    assert ts.min() >= 1_793_606_400 * NS - 5 * NS and ts.max() <= 1_793_606_400 * NS + 3600 * NS


@pytest.mark.parametrize("version", [9, 10])
def test_pmacct_nfprobe_exports_count_what_our_flows_count(capture, ours, version, tmp_path):
    """The same comparison with pmacct's exporter (nfprobe), NetFlow v9 and IPFIX."""
    d, cols = decode(pmacct(capture, version, tmp_path))
    assert not [k for k in d.counts if k.startswith("dropped")], d.counts
    batch = flow_batch(cols, d.exporters)
    assert directional(batch.filter(np.isin(batch.column("ip_proto").to_numpy(), [6, 17]))) == ours


def ipfix(domain: int, sets: list[bytes], export_s: int = 1_800_000_000) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), export_s, 1, domain) + body


def template_set(tid: int, fields: list[tuple[int, int]], set_id: int = 2) -> bytes:
    rec = struct.pack(">HH", tid, len(fields)) + b"".join(struct.pack(">HH", ie, n) for ie, n in fields)
    return struct.pack(">HH", set_id, 4 + len(rec)) + rec


def data_set(tid: int, records: list[bytes]) -> bytes:
    body = b"".join(records)
    return struct.pack(">HH", tid, 4 + len(body)) + body


FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (152, 8), (153, 8)]


def record(src: int, dst: int, packets: int, start_ms: int = 1_799_999_000_000) -> bytes:
    return struct.pack(">IIHHBIIQQ", src, dst, 40000, 443, 6, packets, packets * 100, start_ms, start_ms + 500)


def test_templates_refresh_withdraw_expire_and_late_ones():
    d = Decoder(template_timeout_s=60, hold_s=5)
    # data before its template: held, then decoded when the template comes
    d.feed(ipfix(1, [data_set(300, [record(1, 2, 3)])]), "r1", NOW)
    assert d.take(NOW) is None
    d.feed(ipfix(1, [template_set(300, FIELDS)]), "r1", NOW + NS)
    cols = d.take(NOW + NS)
    assert cols.cols["packets"].tolist() == [3] and cols.cols["start_ns"].tolist() == [1_799_999_000_000 * 10**6]
    # another exporter, or another domain, has templates of its own
    d.feed(ipfix(2, [data_set(300, [record(1, 2, 4)])]), "r1", NOW + 2 * NS)
    d.feed(ipfix(1, [data_set(300, [record(1, 2, 5)])]), "r2", NOW + 2 * NS)
    assert d.take(NOW + 2 * NS) is None
    # withdrawn (a template record of no fields): its data waits, then is dropped
    d.feed(ipfix(1, [struct.pack(">HHHH", 2, 8, 300, 0), data_set(300, [record(1, 2, 6)])]), "r1", NOW + 3 * NS)
    assert d.take(NOW + 10 * NS) is None
    assert d.counts["templates withdrawn"] == 1 and d.counts["dropped: no template"] == 3
    # refreshed, then not refreshed for longer than the timeout: expired
    d.feed(ipfix(1, [template_set(300, FIELDS)]), "r1", NOW + 20 * NS)
    d.feed(ipfix(1, [data_set(300, [record(1, 2, 7)])]), "r1", NOW + 100 * NS)
    assert d.take(NOW + 200 * NS) is None and d.counts["templates expired"] == 1


@pytest.mark.parametrize("data, why", [
    (b"\x00", "truncated header"),
    (b"\x00\x07" + b"\x00" * 30, "version 7"),
    (ipfix(1, [template_set(300, FIELDS)])[:-6], "truncated"),
    (ipfix(1, [struct.pack(">HH", 300, 2)]), "truncated set"),
    (struct.pack(">HHIIII", 5, 30, 0, 0, 0, 0) + b"\x00" * 60, "truncated message"),
])
def test_malformed_datagrams_are_counted(data, why):
    d = Decoder()
    d.feed(data, "r1", NOW)
    d.take(NOW)
    assert any(why in k for k in d.counts if k.startswith("dropped")), d.counts


def test_biflow_reverse_counts_and_ipv6():
    fields = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (150, 4), (151, 4)]
    rec = struct.pack(">HH", 301, len(fields) + 2) + b"".join(struct.pack(">HH", ie, n) for ie, n in fields) + \
        struct.pack(">HHI", 0x8000 | 2, 4, 29305) + struct.pack(">HHI", 0x8000 | 1, 4, 29305)
    tset = struct.pack(">HH", 2, 4 + len(rec)) + rec
    src = bytes.fromhex("20010db8000000000000000000000001")
    dst = bytes.fromhex("20010db8000000000000000000000002")
    data = src + dst + struct.pack(">HHBIIIIII", 51000, 443, 6, 10, 1500, 1_799_999_000, 1_799_999_010, 8, 9000)
    d, cols = decode([ipfix(1, [tset, data_set(301, [data])])])
    [r] = flow_batch(cols, d.exporters).to_pylist()
    assert (r["orig_h"], r["resp_h"], r["orig_pkts"], r["orig_ip_bytes"], r["resp_pkts"], r["resp_ip_bytes"]) == (
        "2001:db8::1", "2001:db8::2", 10, 1500, 8, 9000)
    assert r["duration"] == 10.0 and r["orig_bytes"] == 1500 - 10 * 40


def test_two_directions_are_one_connection():
    """softflowd and most NetFlow exporters send each direction alone: the two become one
    connection, originated by the side that started first, with Zeek's state from the flags."""
    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (2, 4), (1, 4), (152, 8), (153, 8)]

    def rec(src, dst, sport, dport, flags, packets, start, size=60):
        return struct.pack(">IIHHBBIIQQ", src, dst, sport, dport, 6, flags, packets, packets * size, start, start + 900)

    t0 = 1_799_999_000_000
    client, server = 0x0A0A010A, 0xC6336410
    records = [rec(server, client, 22, 50000, 0x12 | 0x01 | 0x08, 8, t0 + 1),  # the server's answer, second
               rec(client, server, 50000, 22, 0x02 | 0x10 | 0x01 | 0x08, 9, t0),  # the client, first
               rec(client, server, 50001, 23, 0x02, 1, t0, 40),  # nobody answered
               rec(client, server, 50002, 25, 0x02, 1, t0, 40), rec(server, client, 25, 50002, 0x14, 1, t0 + 1, 40)]
    tset = template_set(302, fields)
    d, cols = decode([ipfix(1, [tset, data_set(302, records)])])
    rows = {r["resp_p"]: r for r in flow_batch(cols, d.exporters).to_pylist()}
    assert sorted(rows) == [22, 23, 25]
    ssh = rows[22]
    assert (ssh["orig_h"], ssh["orig_p"], ssh["orig_pkts"], ssh["resp_pkts"]) == ("10.10.1.10", 50000, 9, 8)
    assert (ssh["conn_state"], ssh["history"]) == ("SF", "ShAaDdFf") and ssh["duration"] == pytest.approx(0.901)
    assert rows[23]["conn_state"] == "S0" and (rows[25]["conn_state"], rows[25]["history"]) == ("REJ", "Sr")


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    from detector.cli import main

    d = tmp_path_factory.mktemp("export-attacks")
    assert main(["synth", "scan-ports", "access-ssh-bruteforce", "exfil-bulk-upload", "-o", str(d), "--packets", "3000",
                 "--no-telemetry"]) == 0
    return d


@pytest.mark.parametrize("name, technique", [("scan-ports", "port_scan"), ("access-ssh-bruteforce", "ssh_bruteforce"),
                                             ("exfil-bulk-upload", "bulk_upload")])
def test_attacks_are_found_in_saved_ipfix_exports(attacks, name, technique, tmp_path):
    """The same detectors over softflowd's IPFIX export of an attack, saved as an IPFIX file
    (RFC 5655) and read with analyze --flows: no capture given."""
    import json

    from detector.cli import main

    saved = tmp_path / f"{name}.ipfix"
    saved.write_bytes(b"".join(softflowd(attacks / f"{name}.pcap", 10)))
    out = tmp_path / "alerts.jsonl"
    assert main(["analyze", "--flows", str(saved), "--config", str(attacks / "site.toml"), "-o", str(out), "-q",
                 "--min-severity", "medium"]) == 0
    assert technique in [json.loads(x)["technique"] for x in out.read_text().splitlines()]


def test_a_cut_ipfix_file_is_read_to_the_cut(attacks, tmp_path, capsys):
    from detector.cli import main

    data = b"".join(softflowd(attacks / "scan-ports.pcap", 10))
    cut = tmp_path / "cut.ipfix"
    cut.write_bytes(data[:-50])
    assert main(["analyze", "--flows", str(cut), "-o", str(tmp_path / "a.jsonl")]) == 1
    err = capsys.readouterr().err
    assert f"warning: {cut}: offset " in err and "cut short" in err
    not_flows = tmp_path / "notes.txt"
    not_flows.write_text("hello")
    assert main(["analyze", "--flows", str(not_flows), "-o", str(tmp_path / "a.jsonl")]) == 2
    assert "not an IPFIX file nor an nfcapd file" in capsys.readouterr().err


def test_nfcapd_files_through_nfdump(capture, ours, tmp_path):
    """nfdump's collector (nfcapd) receives softflowd's NetFlow v9; its file, read with
    analyze --flows through nfdump -o json, counts what our flows count."""
    saved = nfcapd(tmp_path, softflowd_to(capture, 9))
    from detector.exports.files import read_flows

    problems = []
    batches = list(read_flows(saved, problems))
    import pyarrow as pa

    table = pa.Table.from_batches(batches)
    keep = pa.compute.is_in(table["ip_proto"], pa.array([6, 17], pa.uint8()))
    assert problems == [] and directional(table.filter(keep)) == ours


# -- the collector and the daemon --------------------------------------------------------------
def test_collector_takes_udp_datagrams_and_ipfix_over_tcp():
    import threading
    import time

    from detector.exports.collector import Collector

    stop = threading.Event()
    c = Collector(["udp://127.0.0.1:0", "tcp://127.0.0.1:0"])
    c.start(stop)
    try:
        (_, udp_port), (_, tcp_port) = c.addresses
        message = ipfix(1, [template_set(300, FIELDS), data_set(300, [record(1, 2, 3)])])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(message, ("127.0.0.1", udp_port))
        with socket.create_connection(("127.0.0.1", tcp_port)) as t:
            t.sendall(message + message[:10])  # one whole message, then a piece of the next ...
            time.sleep(0.3)
            t.sendall(message[10:])  # ... and its rest
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        got = []
        while len(got) < 3 and time.monotonic() < deadline:
            got += c.drain()
            time.sleep(0.05)
    finally:
        stop.set()
        c.close()
    assert sorted(len(d) for d, *_ in got) == [len(message)] * 3
    assert {p.split(":")[0] for _, p, *_ in got} == {"127.0.0.1"} and sorted(s for *_, s in got) == [False, True, True]


@pytest.mark.slow
def test_a_flood_of_a_million_datagrams_costs_bounded_memory():
    """10^6 datagrams on loopback, nobody draining: the queue stays under its cap and what does
    not fit is counted."""
    import threading
    import time

    from detector.exports.collector import Collector

    stop = threading.Event()
    c = Collector(["udp://127.0.0.1:0"], max_queued_bytes=4 << 20)
    c.start(stop)
    message = ipfix(1, [data_set(300, [record(1, 2, 3)] * 30)])  # 1 kB each
    try:
        port = c.addresses[0][1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for _ in range(1_000_000):
                u.sendto(message, ("127.0.0.1", port))
        time.sleep(1.0)
    finally:
        stop.set()
        c.close()
    assert c.most_queued <= 4 << 20 and c.counts["dropped: queue full"] > 0
    assert c.counts["messages"] * len(message) <= 4 << 20
    # empty datagrams cost their keeping too
    c2 = Collector(["udp://127.0.0.1:0"], max_queued_bytes=1 << 20)
    for _ in range(100_000):
        c2._put(b"", "x:1", False)
    assert c2.most_queued <= 1 << 20 and c2.counts["dropped: queue full"] > 0
    c2.close()


def test_daemon_collects_softflowd_exports_and_detects(attacks, tmp_path):
    """detector run --flow-listen: softflowd sends its IPFIX export of an SSH password-guessing
    capture; the daemon reports ssh_bruteforce from the exports alone."""
    import dataclasses
    import json
    import threading
    import time

    from detector.backend import CPU
    from detector.config import load_config
    from detector.daemon.service import Daemon

    cfg = load_config(str(attacks / "site.toml"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    alerts = tmp_path / "alerts.jsonl"
    cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(
        cfg.daemon, flow_listen=(f"udp://127.0.0.1:{port}",), metrics="", state=str(tmp_path / "state.db"),
        alerts=str(alerts), poll_s=0.2, report_s=0.5).validate())
    daemon = Daemon(cfg, CPU)
    daemon.start()
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        subprocess.run(["softflowd", "-r", str(attacks / "access-ssh-bruteforce.pcap"), "-v", "10", "-n",
                        f"127.0.0.1:{port}"], capture_output=True, timeout=120, check=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "ssh_bruteforce" not in (alerts.read_text() if alerts.exists() else ""):
            time.sleep(0.2)
    finally:
        daemon.stop.set()
        runner.join(30)
    found = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert "ssh_bruteforce" in [a["technique"] for a in found]
    assert daemon.metrics.registry.get_sample_value("detector_export_records_total") > 100


# -- IPFIX out ---------------------------------------------------------------------------------
def test_our_ipfix_export_reads_back_and_nfdump_reads_it(capture, ours, tmp_path):
    """Our flow records as IPFIX biflows: our decoder reads them back with every count, and
    nfdump's collector (a real one) reads the same counts, the responder's as its out_ fields."""
    import json
    import os
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from detector.exports.ipfix_out import MAX_MESSAGE, IpfixEncoder

    table = pq.read_table(capture.parent / "flows.parquet")
    rb = table.combine_chunks().to_batches()[0]
    enc = IpfixEncoder(template_every_s=60)
    messages = enc.messages(rb, 1_800_000_000.0)
    later = enc.messages(rb.slice(0, 5), 1_800_000_030.0)
    assert all(len(m) <= MAX_MESSAGE for m in messages + later)
    assert sum(m[16:18] == b"\x00\x02" for m in messages + later) == 1  # templates once until the refresh is due
    assert enc.messages(rb.slice(0, 1), 1_800_000_061.0)[0][16:18] == b"\x00\x02"
    d, cols = decode(messages)
    back = flow_batch(cols, d.exporters)
    assert back.num_rows == rb.num_rows
    keep = pa.compute.is_in(back.column("ip_proto"), pa.array([6, 17], pa.uint8()))
    assert directional(back.filter(keep)) == ours

    def send(port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for m in IpfixEncoder().messages(rb, time.time()):
                u.sendto(m, ("127.0.0.1", port))
                time.sleep(0.001)

    saved = nfcapd(tmp_path, send)
    records = json.loads(subprocess.run(["nfdump", "-r", str(saved), "-o", "json"], capture_output=True, check=True,
                                        env={**os.environ, "TZ": "UTC"}).stdout)
    assert len(records) == rb.num_rows
    assert sum(r["in_packets"] + r.get("out_packets", 0) for r in records) == \
        sum(rb.column("orig_pkts").to_pylist()) + sum(rb.column("resp_pkts").to_pylist())


def test_daemon_sends_its_flow_records_as_ipfix(capture, tmp_path):
    """[daemon] ipfix_export: the flow records of a capture the daemon reads (a rotating
    folder) reach a collector (ours, listening on loopback)."""
    import dataclasses
    import threading
    import time

    from detector.backend import CPU
    from detector.config import load_config
    from detector.daemon.service import Daemon
    from detector.exports.collector import Collector

    stop = threading.Event()
    collector = Collector(["udp://127.0.0.1:0"])
    collector.start(stop)
    folder = tmp_path / "ring"
    folder.mkdir()
    shutil.copy(capture, folder / "a.pcap")
    cfg = load_config(None)
    cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(
        cfg.daemon, pcap_dir=str(folder), settle_s=0.2, poll_s=0.2, metrics="", state=str(tmp_path / "state.db"),
        ipfix_export=f"udp://127.0.0.1:{collector.addresses[0][1]}").validate())
    daemon = Daemon(cfg, CPU)
    daemon.start()
    runner = threading.Thread(target=daemon.run)
    runner.start()
    time.sleep(3.0)
    daemon.stop.set()
    runner.join(30)
    time.sleep(0.5)
    stop.set()
    collector.close()
    _, cols = decode([m for m, *_ in collector.drain()])
    assert len(cols) == daemon.stages.flows_seen > 100


# -- what odd exporters send -------------------------------------------------------------------
def test_random_and_mutated_messages_never_raise():
    """Mutations of valid v5, v9 and IPFIX messages (flipped bytes, cut lengths, odd field
    lengths, huge values): decoding and turning into flow records never raise."""
    rng = np.random.default_rng(7)
    v6 = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (21, 4), (22, 4)]
    base = [ipfix(1, [template_set(300, FIELDS), data_set(300, [record(1, 2, 3)] * 3)]),
            ipfix(1, [template_set(301, v6), data_set(301, [bytes(16) + bytes(15) + b"\x01" + bytes(17)])]),
            ipfix(1, [template_set(302, [(160, 8), (34, 16)], set_id=3), data_set(302, [b"\xff" * 24])]),
            struct.pack(">HHIIII", 5, 1, 0, 0, 0, 0) + bytes(48),
            struct.pack(">HHIIII", 9, 1, 1000, 1_800_000_000, 1, 0) + template_set(400, FIELDS, set_id=0)
            + data_set(400, [record(1, 2, 3)])]
    d = Decoder(hold_s=0.0)
    for k in range(3000):
        m = bytearray(base[k % len(base)])
        for _ in range(int(rng.integers(1, 4))):
            m[int(rng.integers(0, len(m)))] = int(rng.integers(0, 256))
        if k % 7 == 0:
            m = m[:int(rng.integers(0, len(m)))]
        d.feed(bytes(m), f"r{k % 5}", NOW + k)
        if k % 50 == 0:
            cols = d.take(NOW + k)
            if cols is not None:
                flow_batch(cols, d.exporters, d.run)
    assert d.counts["messages"] == 3000


def test_data_is_read_with_the_template_it_came_under():
    d = Decoder()
    d.feed(ipfix(1, [template_set(300, FIELDS), data_set(300, [record(1, 2, 3)])]), "r1", NOW)
    swapped = [(8, 4), (12, 4), (11, 2), (7, 2), (4, 1), (1, 4), (2, 4), (152, 8), (153, 8)]
    d.feed(ipfix(1, [template_set(300, swapped)]), "r1", NOW + 1)  # redefined before the poll
    cols = d.take(NOW + 2).cols
    assert (cols["packets"].tolist(), cols["sport"].tolist()) == ([3], [40000])


def test_withdraw_all_options_withdrawal_and_v9_padding():
    d = Decoder()
    d.feed(ipfix(1, [template_set(300, FIELDS), template_set(301, FIELDS)]), "r1", NOW)
    d.feed(ipfix(2, [template_set(300, FIELDS)]), "r1", NOW)
    d.feed(ipfix(1, [struct.pack(">HHHH", 2, 8, 2, 0)]), "r1", NOW)  # all templates of domain 1
    assert sorted(k[1:] for k in d.templates) == [(2, 300)] and d.counts["templates withdrawn"] == 2
    opts = struct.pack(">HHH", 310, 1, 1) + struct.pack(">HH", 160, 8)
    d.feed(ipfix(2, [struct.pack(">HH", 3, 4 + len(opts)) + opts]), "r1", NOW)
    d.feed(ipfix(2, [struct.pack(">HHHHHH", 3, 12, 310, 0, 999, 0)]), "r1", NOW)  # two withdrawals
    assert (("r1", 2, 310) not in d.templates) and d.counts["templates withdrawn"] == 3
    # a v9 options template flowset padded to 4 bytes
    v9opts = struct.pack(">HHH", 400, 4, 4) + struct.pack(">HHHH", 1, 4, 34, 4) + b"\x00\x00"
    d.feed(struct.pack(">HHIIII", 9, 1, 1000, 1_800_000_000, 1, 7) + struct.pack(">HH", 1, 4 + len(v9opts)) + v9opts,
           "r9", NOW)
    assert ("r9", 7, 400) in d.templates and not [k for k in d.counts if k.startswith("dropped")]


def test_odd_addresses_and_ipfix_uptimes_without_a_boot_time():
    fields = [(27, 16), (28, 16), (4, 1), (2, 4), (1, 4), (22, 4), (21, 4)]
    rec = bytes(16) + bytes(15) + b"\x01" + struct.pack(">BIIII", 58, 1, 72, 5_000, 9_000)
    d, cols = decode([ipfix(1, [template_set(303, fields), data_set(303, [rec])], export_s=1_800_000_000)])
    [r] = flow_batch(cols, d.exporters, d.run).to_pylist()
    assert (r["orig_h"], r["resp_h"]) == ("::", "::1")
    # no systemInitTimeMilliseconds: the record ended when it was exported, and lasted 4 s
    assert r["ts"].timestamp() == 1_800_000_000 - 4 and r["duration"] == 4.0


def test_a_tcp_collector_that_is_down_never_holds_the_daemon(capture, ours):
    import time

    import pyarrow.parquet as pq

    from detector.exports.ipfix_out import IpfixExporter

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there
    exporter = IpfixExporter(f"tcp://127.0.0.1:{port}")
    rb = pq.read_table(capture.parent / "flows.parquet").to_batches()[0]
    t0 = time.monotonic()
    for _ in range(5):
        exporter.write(rb)
    assert time.monotonic() - t0 < 2.0 and exporter.sent == 0 and exporter.lost == 5 * rb.num_rows
    exporter.close()


def test_nfcapd_records_are_paired_into_connections(capture, tmp_path):
    """nfdump gives each direction alone too: they are paired as our flows are."""
    saved = nfcapd(tmp_path, softflowd_to(capture, 10))
    from detector.exports.files import read_flows

    [rb] = list(read_flows(saved, []))
    both = np.asarray(rb.column("resp_pkts")) > 0
    tcp = np.asarray(rb.column("ip_proto")) == 6
    assert both[tcp].mean() > 0.8  # (the rest: SYNs nobody answered)
