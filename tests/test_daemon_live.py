"""End to end on a live interface: a network namespace joined to this one by a veth pair; the
daemon captures on this end; from the other end come an ARP spoof, a port scan and a TCP
session carrying Stratum ``mining.subscribe``. Only the two test hosts' addresses are used.
Needs root (CI runs as root); where network namespaces are not permitted it is skipped, saying
why. The namespace and the veth pair are removed even when the test fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.test_daemon import wait_line

HOST_IP, PEER_IP = "10.250.0.1", "10.250.0.2"
WAIT_S = 90

PEER_SCRIPT = r"""
import socket, sys, time
from scapy.all import ARP, Ether, sendp, get_if_hwaddr
iface, host_ip, peer_ip, host_mac = sys.argv[1:5]
mine = get_if_hwaddr(iface)
# 1. a miner's session: Stratum over TCP to the host
s = socket.create_connection((host_ip, 3333), timeout=10)
s.sendall(b'{"id":1,"method":"mining.subscribe","params":["XMRig/6.21.0"]}\n')
s.recv(4096)
s.sendall(b'{"id":2,"method":"mining.authorize","params":["wallet.worker","x"]}\n')
# 2. a port scan of the host (closed ports answer with RST)
for port in range(20, 320):
    c = socket.socket()
    c.settimeout(0.5)
    c.connect_ex((host_ip, port))
    c.close()
# 3. ARP spoof: claims the host's address for this end's MAC, unasked, again and again
for _ in range(20):
    sendp(Ether(src=mine, dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc=mine, psrc=host_ip, hwdst="ff:ff:ff:ff:ff:ff",
                                                         pdst=peer_ip), iface=iface, verbose=False)
    time.sleep(0.05)
print("sent", flush=True)
time.sleep(600)  # keeps the Stratum session open: the daemon must flush it at exit
"""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def veth():
    if os.geteuid() != 0:
        pytest.skip("the live test needs root (network namespaces, raw capture); CI runs it as root")
    if shutil.which("ip") is None:
        pytest.skip("the live test needs iproute2's ip command")
    tag = os.getpid() % 100000
    ns, here, there = f"dettest{tag}", f"vdh{tag}", f"vdp{tag}"
    made = _ip("netns", "add", ns, check=False)
    if made.returncode != 0:
        pytest.skip(f"ip netns add is not permitted here: {made.stderr.strip()}")
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", f"{HOST_IP}/24", "dev", here)
        _ip("link", "set", here, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{PEER_IP}/24", "dev", there)
        _ip("netns", "exec", ns, "ip", "link", "set", there, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, here, there
    finally:
        _ip("link", "del", here, check=False)
        _ip("netns", "del", ns, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stratum_server(stop: threading.Event) -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST_IP, 3333))
    srv.listen(1)
    srv.settimeout(1)

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.recv(4096)
            conn.sendall(b'{"id":1,"result":[[["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f"]],"08000002",4],'
                         b'"error":null}\n')
            stop.wait()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_live_capture_alerts_within_seconds_and_flushes_on_sigterm(veth, tmp_path):
    ns, here, there = veth
    port = _free_port()
    alerts = tmp_path / "alerts.jsonl"
    cfg = tmp_path / "live.toml"
    cfg.write_text("[daemon]\nbatch_s = 0.5\nreport_s = 1.0\n")
    stop = threading.Event()
    srv = _stratum_server(stop)
    daemon = subprocess.Popen([sys.executable, "-m", "detector", "run", "--config", str(cfg), "--iface", here,
                               "--alerts", str(alerts), "--metrics", f"127.0.0.1:{port}", "--state",
                               str(tmp_path / "state.db"), "--backend", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peer = None
    try:
        if not wait_line(daemon.stderr, "detector run: started", WAIT_S):
            pytest.fail("the daemon did not start")
        with open(f"/sys/class/net/{here}/address") as fh:
            host_mac = fh.read().strip()
        peer = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PEER_SCRIPT, there, HOST_IP,
                                 PEER_IP, host_mac], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_line(peer.stdout, "sent", WAIT_S), "the traffic from the namespace was not sent"
        sent_at = time.monotonic()
        wanted = {"compute_theft", "scan", "mitm"}
        found: dict[str, dict] = {}
        while time.monotonic() - sent_at < WAIT_S and not wanted <= set(found):
            if alerts.exists():
                for line in alerts.read_text().splitlines():
                    a = json.loads(line)
                    found.setdefault(a["category"], a)
            if daemon.poll() is not None:
                pytest.fail(f"the daemon exited: {daemon.stderr.read()}")
            time.sleep(0.25)
        assert wanted <= set(found), f"alerts after {WAIT_S} s: {sorted(found)}"
        assert found["compute_theft"]["technique"] == "stratum" and found["compute_theft"]["src_ip"] == PEER_IP
        assert found["scan"]["src_ip"] == PEER_IP and found["scan"]["dst_ip"] == HOST_IP
        assert found["mitm"]["technique"] == "arp_spoof"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        packets = [float(x.split()[1]) for x in metrics.splitlines() if x.startswith("detector_packets_total ")]
        assert packets and packets[0] > 300
        for name in ('detector_backend_info{backend="cpu"', 'detector_drops_total{where="kernel"}',
                     "detector_flows_active", "detector_alerts_total{", "detector_batch_latency_seconds_count"):
            assert name in metrics, name
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err
        flushed = int(err.split("open flows flushed")[0].rsplit("(", 1)[1].replace(",", ""))
        assert flushed >= 1, err  # the Stratum session was still open
    finally:
        stop.set()
        srv.close()
        for p in (peer, daemon):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=30)


def test_capture_needs_only_cap_net_raw(veth):
    """What deploy/detector.service grants is enough: an unprivileged user with CAP_NET_RAW
    alone opens the ring, attaches a filter and sets promiscuous mode; without it, the error
    says which capability is missing."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux's setpriv to drop privileges")
    _, here, _ = veth
    probe = ("import sys; from detector.daemon.live import LiveCapture, CaptureSetupError\n"
             "try:\n"
             f"    c = LiveCapture({here!r}, bpf='tcp or arp', promisc=True); c.close(); print('captured')\n"
             "except CaptureSetupError as e:\n"
             "    print(e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def as_nobody(caps: str) -> str:
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps=-all{caps}",
                              f"--ambient-caps=-all{caps}", f"--bounding-set=-all{caps}", sys.executable, "-c", probe],
                             capture_output=True, text=True, timeout=120, env=env, cwd="/")
        return out.stdout.strip() or out.stderr.strip()

    reach = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            "import detector.daemon.live"], capture_output=True, text=True, timeout=120, env=env,
                           cwd="/")
    if reach.returncode != 0:
        pytest.skip(f"this checkout or its Python cannot be read by an unprivileged user: "
                    f"{reach.stderr.strip().splitlines()[-1:]}")
    assert as_nobody(",+net_raw") == "captured"
    assert "needs CAP_NET_RAW" in as_nobody("")
