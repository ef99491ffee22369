"""``detector run``: rotating captures processed once each across restarts, crash-safe state,
configuration errors, sinks and Zeek logs. The daemon runs as a child process, as in
production; waits poll its state database and are bounded (no timing is asserted)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detector.cli import main
from detector.daemon.state import State
from detector.sources import open_capture

WAIT_S = 120


def packets_in(path) -> int:
    reader = open_capture(str(path), 4096)
    try:
        return sum(b.n for b in reader.batches())
    finally:
        reader.src.close()


def start(tmp: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "detector", "run", "--state", str(tmp / "state.db"), "--alerts",
           str(tmp / "alerts.jsonl"), "--metrics", "", "--backend", "cpu", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait_line(proc.stderr, "detector run: started", WAIT_S):  # signal handlers are in place then
        proc.kill()
        pytest.fail(f"the daemon did not start within {WAIT_S} s ({proc.wait(timeout=30)})")
    return proc


def wait_line(stream, marker: str, timeout: float) -> bool:
    """Whether a line containing ``marker`` comes out of ``stream`` within ``timeout`` seconds
    (read in a thread: a silent child cannot hang the test)."""
    import threading

    found = threading.Event()

    def reader():
        for line in stream:
            if marker in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    return found.wait(timeout)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the daemon did not stop within 60 s of signal {sig}: {err}")
    return proc.returncode, err


def processed(db: Path) -> dict[str, int]:
    """file name -> packets, as the daemon's state records them."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {os.path.basename(p): n for p, n in con.execute("SELECT path, packets FROM files")}
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        con.close()


def wait_for(what, proc: subprocess.Popen, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"gave up waiting after {timeout} s: {proc.stderr.read() if proc.stderr else ''}")


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    d = tmp_path_factory.mktemp("rot_src")
    assert main(["synth", "theft-stratum", "access-ssh-bruteforce", "mitm-arp-spoof", "-o", str(d),
                 "--packets", "4000"]) == 0
    return d


def test_rotating_folder_processes_each_file_once_across_a_restart(captures, tmp_path):
    """Files appear one by one, the newest still being written; each is processed once it is
    complete, exactly once, including across a restart midway."""
    folder = tmp_path / "ring"
    folder.mkdir()
    names = ["theft-stratum", "access-ssh-bruteforce", "mitm-arp-spoof"]
    sources = [captures / f"{n}.pcap" for n in names]
    db = tmp_path / "state.db"
    t0 = time.time() - 1000

    def put(k: int, partial: bool = False) -> Path:
        target = folder / f"ring_{k:05d}.pcap"
        data = sources[k % len(sources)].read_bytes()
        target.write_bytes(data[: len(data) // 2] if partial else data)
        os.utime(target, (t0 + k, t0 + k))  # rotation order, as the writer's clock gives it
        return target

    put(0)
    growing = put(1, partial=True)  # the writer is still on it
    proc = start(tmp_path, "--pcap-dir", str(folder), "--config", str(captures / "site.toml"))
    assert wait_for(lambda: processed(db), proc) == {"ring_00000.pcap": packets_in(sources[0])}
    time.sleep(1.5)  # a few polls: the file being written must stay untouched
    assert "ring_00001.pcap" not in processed(db)
    shutil.copyfile(sources[1], growing)  # the writer finishes it ...
    os.utime(growing, (t0 + 1, t0 + 1))
    put(2)  # ... and moves on
    wait_for(lambda: "ring_00001.pcap" in processed(db), proc)
    code, err = stop(proc)
    assert code == 0, err

    put(3)
    proc = start(tmp_path, "--pcap-dir", str(folder), "--config", str(captures / "site.toml"))
    wait_for(lambda: "ring_00002.pcap" in processed(db), proc)
    code, err = stop(proc)
    assert code == 0, err
    done = processed(db)
    assert done == {f"ring_{k:05d}.pcap": packets_in(sources[k % 3]) for k in range(3)}  # 3 is the newest
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    keys = [(a["detector"], a["technique"], a["host"], a["src_ip"], a["dst_ip"], a["dst_port"], a["severity"])
            for a in lines]
    assert len(keys) == len(set(keys)), "an incident was reported twice"
    found = {a["category"] for a in lines}
    assert {"compute_theft", "unauthorized_access", "mitm"} <= found, found
    with State(str(db)) as st:
        assert st.integrity() == "ok" and st.outbox_size() == 0


def still_pinned(before, after) -> bool:
    """Every pin in ``before`` is in ``after`` unchanged (``after`` may hold more)."""
    if isinstance(before, dict):
        return isinstance(after, dict) and all(k in after and still_pinned(v, after[k]) for k, v in before.items())
    if isinstance(before, list):
        return isinstance(after, list) and all(item in after for item in before)
    return before == after


def test_still_pinned_sees_a_changed_binding():
    before = {"bindings": [[1, 10], [2, 20]]}
    assert still_pinned(before, {"bindings": [[2, 20], [1, 10], [3, 30]]})
    assert not still_pinned(before, {"bindings": [[1, 10], [2, 21], [3, 30]]})
    assert not still_pinned(before, {"other": []})


def test_kill_9_keeps_pins_and_a_sound_database(captures, tmp_path):
    """After a file is processed the detectors' pins are committed; a kill -9 while the next
    file is being read loses nothing committed, the database passes integrity_check, and a
    restart resumes: it finishes the remaining files and keeps the pins."""
    folder = tmp_path / "ring"
    folder.mkdir()
    db = tmp_path / "state.db"
    t0 = time.time() - 1000
    for k, name in enumerate(["access-ssh-bruteforce", "theft-stratum", "mitm-arp-spoof", "theft-stratum"]):
        target = folder / f"cap{k}.pcap"
        shutil.copyfile(captures / f"{name}.pcap", target)
        os.utime(target, (t0 + k, t0 + k))
    proc = start(tmp_path, "--pcap-dir", str(folder), "--config", str(captures / "site.toml"))
    wait_for(lambda: "cap0.pcap" in processed(db), proc)
    proc.kill()  # SIGKILL: no clean-up at all
    proc.communicate(timeout=30)
    with State(str(db)) as st:
        assert st.integrity() == "ok"
        pins = st.pins()
    assert pins.get("key_pins"), pins.keys()  # the SSH host keys seen in cap0
    before = processed(db)
    proc = start(tmp_path, "--pcap-dir", str(folder), "--config", str(captures / "site.toml"))
    wait_for(lambda: "cap2.pcap" in processed(db), proc)
    code, err = stop(proc)
    assert code == 0, err
    after = processed(db)
    assert all(after[name] == n for name, n in before.items())
    assert set(after) == {"cap0.pcap", "cap1.pcap", "cap2.pcap"}
    with State(str(db)) as st:
        assert st.integrity() == "ok"
        for name, value in pins.items():
            # later files add pins (new ARP bindings, new host keys); none pinned before may change
            kept = st.pins()[name]
            assert still_pinned(value, kept), (name, value, kept)


@pytest.mark.parametrize("body, key", [
    ("[daemon]\nsnaplen = 'big'\n", "daemon.snaplen"),
    ("[daemon]\nsnaplen = 10\n", "daemon.snaplen"),
    ("[daemon]\nmetrics = 'everywhere'\n", "daemon.metrics"),
    ("[daemon]\nsyslog = 'carrier-pigeon://x'\n", "daemon.syslog"),
    ("[daemon]\nifaces = 'eth0'\n", "daemon.ifaces"),
    ("[daemon]\nmin_severity = 'urgent'\n", "daemon.min_severity"),
])
def test_bad_config_is_refused_naming_the_key(tmp_path, capsys, body, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    assert main(["run", "--config", str(cfg), "--pcap-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"key '{key}'" in err and str(cfg) in err and "Traceback" not in err


def test_no_source_and_a_missing_interface_are_clear_errors(tmp_path, capsys):
    assert main(["run", "--state", str(tmp_path / "s.db"), "--metrics", ""]) == 2
    assert "no source" in capsys.readouterr().err
    assert main(["run", "--iface", "nosuchif0", "--state", str(tmp_path / "s.db"), "--metrics", ""]) == 2
    assert "nosuchif0" in capsys.readouterr().err


def test_sighup_keeps_the_old_config_when_the_new_one_is_broken_and_reopens_files(captures, tmp_path):
    """logrotate moves the alerts file and sends SIGHUP: new alerts go to a new file; a reload
    with a broken configuration is refused and the daemon goes on."""
    folder = tmp_path / "ring"
    folder.mkdir()
    cfg = tmp_path / "site.toml"
    shutil.copyfile(captures / "site.toml", cfg)
    db = tmp_path / "state.db"
    shutil.copyfile(captures / "theft-stratum.pcap", folder / "a.pcap")
    os.utime(folder / "a.pcap", (time.time() - 100, time.time() - 100))
    shutil.copyfile(captures / "theft-stratum.pcap", folder / "z.pcap")  # the one being written
    os.utime(folder / "z.pcap", (time.time() + 3600, time.time() + 3600))
    proc = start(tmp_path, "--pcap-dir", str(folder), "--config", str(cfg))
    alerts = tmp_path / "alerts.jsonl"
    wait_for(lambda: alerts.exists() and alerts.stat().st_size > 0, proc)
    os.replace(alerts, tmp_path / "alerts.jsonl.1")
    cfg.write_text(cfg.read_text() + "\n[daemon]\nsnaplen = 'huge'\n")
    proc.send_signal(signal.SIGHUP)
    shutil.copyfile(captures / "mitm-arp-spoof.pcap", folder / "b.pcap")
    os.utime(folder / "b.pcap", (time.time() - 50, time.time() - 50))
    wait_for(lambda: "b.pcap" in processed(db), proc)
    wait_for(lambda: alerts.exists() and "mitm" in alerts.read_text(), proc)
    code, err = stop(proc)
    assert code == 0, err
    assert "reload refused" in err and "daemon.snaplen" in err
    assert "compute_theft" in (tmp_path / "alerts.jsonl.1").read_text()


def test_syslog_sink_sends_rfc5424_over_udp(tmp_path):
    from detector.daemon.sinks import SyslogSink

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    sink = SyslogSink(f"udp://127.0.0.1:{rx.getsockname()[1]}")
    alert = {"severity": "high", "category": "mitm", "technique": "arp_spoof"}
    sink.send([alert], [json.dumps(alert)])
    msg = rx.recv(65536).decode()
    sink.close()
    rx.close()
    assert msg.startswith("<107>1 ")  # facility 13 (log audit) * 8 + severity 3 (err)
    head, _, body = msg.partition("] ")
    assert 'technique="arp_spoof"' in head and json.loads(body) == alert


def test_webhook_sink_retries_until_the_receiver_answers(tmp_path):
    import http.server
    import threading

    from detector.daemon.sinks import WebhookSink

    got, calls = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            calls.append(1)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if len(calls) == 1:  # the first attempt fails
                self.send_response(503)
            else:
                got.append(json.loads(body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/alerts", retries=3)
    sink.send([{"severity": "low"}], ['{"severity": "low"}'])
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    sink.close()
    server.shutdown()
    assert got == [{"severity": "low"}] and len(calls) == 2 and sink.dropped == 0


def test_jsonl_sink_rotates_by_size(tmp_path):
    from detector.daemon.sinks import JsonlSink

    path = tmp_path / "a.jsonl"
    sink = JsonlSink(str(path), max_bytes=200, keep=2)
    line = json.dumps({"x": "y" * 80})
    for _ in range(7):
        sink.send([{}], [line])
    sink.close()
    assert (tmp_path / "a.jsonl.1").exists() and (tmp_path / "a.jsonl.2").exists()
    assert not (tmp_path / "a.jsonl.3").exists()  # keep=2
    total = sum(len(p.read_text().splitlines()) for p in tmp_path.glob("a.jsonl*"))
    assert 5 <= total <= 7  # the oldest rotated file was dropped, nothing else


ZEEK_CONN = """#separator \\x09
#set_separator\t,
#empty_field\t(empty)
#unset_field\t-
#path\tconn
#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents
#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]
"""


def test_zeek_conn_log_feeds_the_same_detectors(tmp_path):
    """A vertical port scan written by Zeek (TSV conn.log), read as it grows: one scan alert,
    and the position in the log is committed as lines are read."""
    log = tmp_path / "conn.log"
    rows = []
    for port in range(1, 301):
        rows.append(f"{1700000000 + port * 0.01:.6f}\tC{port}\t10.1.0.5\t40000\t10.1.0.9\t{port}\ttcp\t-\t0.001\t0\t0"
                    f"\tREJ\tT\tT\t0\tSr\t1\t44\t1\t40\t(empty)")
    log.write_text(ZEEK_CONN + "\n".join(rows[:150]) + "\n")
    proc = start(tmp_path, "--zeek-log", str(log))
    db = tmp_path / "state.db"

    def offset():
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            row = con.execute("SELECT offset FROM zeek").fetchone()
            con.close()
            return row[0] if row else 0
        except sqlite3.OperationalError:
            return 0

    wait_for(lambda: offset() == log.stat().st_size, proc)
    with open(log, "a") as fh:
        fh.write("\n".join(rows[150:]) + "\n")
    wait_for(lambda: offset() == log.stat().st_size, proc)
    code, err = stop(proc)
    assert code == 0, err
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    scans = [a for a in alerts if a["technique"] == "port_scan"]
    # reported once, as soon as the first lines showed it; the same incident at the same
    # severity is not reported again until daemon.renotify_s has passed
    assert len(scans) == 1 and scans[0]["src_ip"] == "10.1.0.5" and scans[0]["dst_ip"] == "10.1.0.9"
    assert scans[0]["evidence"]["port_count"] >= 150 and scans[0]["severity"] == "high"


def test_an_open_miners_session_is_reported_once_quiet_not_at_its_end(tmp_path):
    """Live input never reaches "end of input": a Stratum session that stays open is reported
    once its stream has been quiet for a moment (what Stages.expire does on the wall clock),
    and a capture read to its end reports the same."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    from detector.config import load_config
    from detector.pipeline.stages import Stages

    a, b = ("52:54:00:00:00:01", "10.9.0.5"), ("52:54:00:00:00:02", "10.9.0.77")
    msg = b'{"id":1,"method":"mining.subscribe","params":["XMRig/6.21.0"]}\n'
    pkts = [Ether(src=a[0], dst=b[0]) / IP(src=a[1], dst=b[1]) / TCP(sport=40000, dport=3333, flags="S", seq=1),
            Ether(src=b[0], dst=a[0]) / IP(src=b[1], dst=a[1]) / TCP(sport=3333, dport=40000, flags="SA", seq=9,
                                                                         ack=2),
            Ether(src=a[0], dst=b[0]) / IP(src=a[1], dst=b[1]) / TCP(sport=40000, dport=3333, flags="A", seq=2, ack=10),
            Ether(src=a[0], dst=b[0]) / IP(src=a[1], dst=b[1]) / TCP(sport=40000, dport=3333, flags="PA", seq=2,
                                                                         ack=10) / msg]
    for k, p in enumerate(pkts):
        p.time = 1_700_000_000 + k * 0.01
    wrpcap(str(tmp_path / "s.pcap"), pkts)
    stages = Stages(load_config(None))
    reader = open_capture(str(tmp_path / "s.pcap"), 4096)
    for batch in reader.batches():
        stages.process(batch)
    reader.src.close()
    assert stages.report() == []  # the session is open: nothing handed on yet
    stages.expire(int(1_700_000_000.03e9) + 1_000_000_000)
    assert stages.report() == []  # quiet for one second only
    stages.expire(int(1_700_000_003e9))
    found = [(x.technique, x.src_ip) for x in stages.report()]
    assert found == [("stratum", "10.9.0.5")]
    stages.flush()
    assert [(x.technique, x.src_ip) for x in stages.report()] == found


def test_the_daemon_learns_online_and_keeps_the_model_in_its_state(tmp_path):
    """With a site model that is not frozen, the daemon updates the host baselines from the
    windows it saw (none it found unusual), saves the model in its state database (signed
    format: digest checked on load), and starts from it after a restart; a frozen one is never
    changed."""
    import numpy as np

    from detector.baseline.site_model import SiteModel

    day_a, day_b = tmp_path / "a", tmp_path / "b"
    assert main(["synth", "benign", "-o", str(day_a), "--packets", "3000", "--seed", "31"]) == 0
    assert main(["synth", "benign", "-o", str(day_b), "--packets", "3000", "--seed", "32"]) == 0
    model_path = tmp_path / "site.model"
    # 30 s windows: the synthetic login node's capture is short, and a host needs 8 windows of
    # its own before it has a baseline the daemon may move
    assert main(["train", str(day_a / "benign-login.pcap"), "-o", str(model_path), "-q", "--window", "30"]) == 0
    trained = SiteModel.load(str(model_path))
    folder = tmp_path / "ring"
    folder.mkdir()
    shutil.copyfile(day_b / "benign-login.pcap", folder / "a.pcap")
    os.utime(folder / "a.pcap", (time.time() - 100, time.time() - 100))
    shutil.copyfile(day_b / "hpc-mix.pcap", folder / "z.pcap")  # newest: not complete
    db = tmp_path / "state.db"
    proc = start(tmp_path, "--pcap-dir", str(folder), "--model", str(model_path))
    wait_for(lambda: "a.pcap" in processed(db), proc)
    code, err = stop(proc)
    assert code == 0, err
    with State(str(db)) as st:
        online = st.load_model(None)
    assert online is not None and online.windows_trained == trained.windows_trained
    assert trained.baseline.own_.any() and online.baseline.entities_ == trained.baseline.entities_
    moved = np.abs(online.baseline.median_ - trained.baseline.median_).max(axis=1)[:-1]  # last: site-wide
    assert (moved[trained.baseline.own_] > 0).any()  # hosts with baselines of their own learned from day B
    assert (moved[~trained.baseline.own_] == 0).all()  # the others need a retraining

    frozen_path = tmp_path / "frozen.model"
    assert main(["train", str(day_a / "benign-login.pcap"), "-o", str(frozen_path), "-q", "--window", "30",
                 "--freeze"]) == 0
    db2 = tmp_path / "f" / "state.db"
    proc = start(tmp_path, "--pcap-dir", str(folder), "--model", str(frozen_path), "--state", str(db2))
    wait_for(lambda: "a.pcap" in processed(db2), proc)
    code, err = stop(proc)
    assert code == 0, err
    with State(str(db2)) as st:
        assert st.load_model(None) is None  # nothing learned, nothing saved
    # a restart with the same frozen model still uses it (read from its file again)
    from detector.backend import CPU
    from detector.config import load_config
    from detector.daemon.service import Daemon, apply_overrides

    cfg = apply_overrides(load_config(None), {"pcap_dir": str(folder), "metrics": "", "state": str(db2),
                                              "model": str(frozen_path)})
    again = Daemon(cfg, CPU)
    assert again.model is not None and again.model.frozen
    again.state.close()


def test_zeek_json_dns_log_feeds_the_dns_tunnel_detector_and_survives_rotation(tmp_path):
    """JSON dns.log lines become DNS events: a client asking hundreds of encoded names under one
    domain is a DNS tunnel. A rotated log (new file) is read from its start; a half-written
    last line waits for its end."""
    import base64
    import random

    from detector.config import load_config
    from detector.daemon.zeek import ZeekLog, dns_events
    from detector.l7.events import Events
    from detector.pipeline.stages import Stages

    rnd = random.Random(4)

    def line(k: int) -> str:
        label = base64.b32encode(rnd.randbytes(20)).decode().rstrip("=").lower()
        return json.dumps({"ts": 1_700_000_000 + k * 0.5, "uid": f"D{k}", "id.orig_h": "10.2.0.7",
                           "id.orig_p": 40000 + k, "id.resp_h": "10.2.0.53", "id.resp_p": 53, "proto": "udp",
                           "trans_id": k, "query": f"{label}.t.exfil-example.net", "qtype_name": "TXT",
                           "rcode_name": "NOERROR", "answers": ["abc"], "TTLs": [0.0], "rtt": 0.01})

    log = tmp_path / "dns.log"
    log.write_text("\n".join(line(k) for k in range(100)) + "\n" + line(100)[:40])  # the last line is cut
    with State(str(tmp_path / "s.db")) as st:
        z = ZeekLog(str(log), st)
        records, _ = z.read()
        assert len(records) == 100 and z.offset == log.read_bytes().rfind(b"\n") + 1
        stages = Stages(load_config(None))
        stages.feed_events(Events(dns=dns_events(records)))
        tunnels = [a for a in stages.report() if a.technique == "dns_tunnel"]
        assert tunnels and tunnels[0].src_ip == "10.2.0.7"
        log.unlink()  # rotated: a new file under the same name
        log.write_text("\n".join(line(k) for k in range(200, 210)) + "\n")
        again, _ = z.read()
        assert [r["uid"] for r in again] == [f"D{k}" for k in range(200, 210)]


def test_a_sink_that_is_down_holds_back_no_other_and_gets_what_it_missed(tmp_path):
    """More alerts queued than one delivery takes: the healthy sink gets them all at once, the
    failing one none; when it comes back it gets exactly what it missed, and the outbox
    empties."""
    from detector.config import load_config
    from detector.daemon.service import Daemon, apply_overrides
    from detector.daemon.sinks import Sink, SinkError

    class Collect(Sink):
        def __init__(self, name, up=True):
            self.name, self.up, self.got = name, up, []

        def send(self, alerts, lines):
            if not self.up:
                raise SinkError(self.name, "down")
            self.got += lines

    log = tmp_path / "conn.log"
    log.write_text("")
    cfg = apply_overrides(load_config(None), {"zeek_conn": str(log), "metrics": "",
                                              "state": str(tmp_path / "s.db")})
    from detector.backend import CPU

    daemon = Daemon(cfg, CPU)
    good, bad = Collect("good"), Collect("bad", up=False)
    daemon.sinks, daemon.sent_upto = [good, bad], {"good": 0, "bad": 0}
    lines = [json.dumps({"n": k, "severity": "low", "category": "scan", "technique": "t"}) for k in range(10_050)]
    with daemon.state.transaction() as db:
        daemon.state.queue_alerts(db, lines)
    daemon.deliver()
    assert len(good.got) == 10_050 and bad.got == [] and daemon.state.outbox_size() == 10_050
    bad.up = True
    daemon.deliver()
    assert bad.got == lines and daemon.state.outbox_size() == 0
    daemon.state.close()
