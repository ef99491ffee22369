"""With no site configuration, the busiest public hosts are taken as local, and said so."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from detector.config import Config, SiteConfig
from detector.pipeline.analyze_job import run_analyze, summary_text
from tests.capture_files import Rec, pcap_bytes

S = 1_000_000_000
T0 = 1_700_000_000 * S
SERVER = "198.51.100.7"


def _write(path, pairs):
    recs = [Rec(T0 + k * 1_000_000, bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=a, dst=b) / TCP(sport=40000 + k % 2000, dport=22,
                                                                              flags="S")))
            for k, (a, b) in enumerate(pairs)]
    path.write_bytes(pcap_bytes(recs))


def test_public_server_in_most_packets_is_taken_as_local(tmp_path):
    path = tmp_path / "login.pcap"
    clients = [f"203.0.113.{k}" for k in range(1, 60)]
    pairs = [(clients[k % len(clients)], SERVER) for k in range(400)]
    pairs += [(f"192.0.2.{k % 50}", f"192.0.2.{100 + k % 50}") for k in range(100)]  # others, none busy
    _write(path, pairs)
    result = run_analyze([str(path)], Config())
    assert result.summary["inferred_local_hosts"] == [SERVER]
    assert SERVER in summary_text(result.summary, result.alerts)


def test_nothing_inferred_without_a_dominant_host_or_with_a_configuration(tmp_path):
    path = tmp_path / "border.pcap"
    _write(path, [(f"203.0.113.{k % 200}", f"192.0.2.{(k * 7) % 200}") for k in range(1000)])
    assert run_analyze([str(path)], Config()).summary["inferred_local_hosts"] == []
    busy = tmp_path / "login.pcap"
    _write(busy, [(f"203.0.113.{k % 50}", SERVER) for k in range(300)])
    cfg = Config(site=SiteConfig(local_nets=("10.0.0.0/8",)))
    assert run_analyze([str(busy)], cfg).summary["inferred_local_hosts"] == []


def test_far_end_of_one_bulk_transfer_is_not_taken_as_local(tmp_path):
    """It carries most of the packets, but it has one peer: a host's busiest peer is not the host."""
    path = tmp_path / "backup.pcap"
    pairs = [("10.1.0.5", "198.51.100.9")] * 900 + [(f"10.1.0.{k % 40}", f"10.1.1.{k % 37}") for k in range(200)]
    _write(path, pairs)
    assert run_analyze([str(path)], Config()).summary["inferred_local_hosts"] == []
