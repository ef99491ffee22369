"""The next hop of a host's off-link traffic: learned from its frames, and reported when it moves
to a MAC that claimed an address by ARP (and relays), or moves at all."""

from __future__ import annotations

from detector.config import load_config
from detector.pipeline.analyze_job import run_analyze

GW, ATTACKER, VICTIM, OTHER = "02:00:00:00:00:01", "02:00:00:00:00:66", "02:00:00:00:00:05", "02:00:00:00:00:07"


def capture(tmp_path, arp_claim=True, relay=True, new_mac=ATTACKER, settle_s=60.0, name="c.pcap", claim_ip="10.0.0.1",
            filler=0, cfg=None):
    """ws (10.0.0.5) visits 6 Internet servers through the gateway, then (``settle_s`` later) 6
    more through ``new_mac``; optionally one forged ARP request before (sender: the gateway's
    10.0.0.1 with ``new_mac``) and the new MAC relaying each frame to the gateway. No frame of
    the gateway's own ARP is in the capture: three hosts asking for 10.0.0.1 say it is the
    gateway."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import ARP, Ether
    from scapy.utils import wrpcap

    pkts, t = [], 1_700_000_000.0
    for k in range(3):
        mac = f"02:00:00:00:01:{k:02x}"
        pkts.append((t - 10 + k, Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=mac, psrc=f"10.0.0.{20 + k}", hwdst="00:00:00:00:00:00", pdst="10.0.0.1")))
    for k in range(12):
        hop = GW if k < 6 else new_mac
        if k == 6:
            t += settle_s
            if arp_claim:
                pkts.append((t - 1, Ether(src=new_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
                    op=1, hwsrc=new_mac, psrc=claim_ip, hwdst="00:00:00:00:00:00", pdst="10.0.0.5")))
        syn = IP(src="10.0.0.5", dst=f"198.51.100.{k + 1}") / TCP(sport=40000 + k, dport=443, flags="S")
        pkts.append((t, Ether(src=VICTIM, dst=hop) / syn))
        if k >= 6 and relay:
            pkts.append((t + 0.0002, Ether(src=new_mac, dst=GW) / syn))
        for j in range(filler):  # other hosts' chatter on the link, between the visits
            pkts.append((t + 0.001 * (j + 1), Ether(src=OTHER, dst="02:00:00:00:00:08") / IP(
                src="10.0.0.7", dst="10.0.0.8") / UDP(sport=5000, dport=5001)))
        t += 1
    out = []
    for ts, p in pkts:
        p.time = ts
        out.append(p)
    path = tmp_path / name
    wrpcap(str(path), out)
    return [a for a in run_analyze([str(path)], cfg or load_config(None), None, progress=False).alerts
            if a.technique == "gateway_mac_change"]


def test_a_single_forged_arp_request_and_a_relay_are_a_critical_mitm(tmp_path):
    (a,) = capture(tmp_path)
    assert a.severity == "critical" and a.evidence["relays"] and a.evidence["arp_claim"]["address"] == "10.0.0.1"
    assert a.evidence["old_mac"] == GW and a.evidence["new_mac"] == ATTACKER and a.evidence["hosts"] == ["10.0.0.5"]


def test_a_claim_without_relay_is_high_and_a_bare_change_is_medium(tmp_path):
    (claim,) = capture(tmp_path, relay=False, name="a.pcap")
    assert claim.severity == "high" and not claim.evidence["relays"]
    (bare,) = capture(tmp_path, arp_claim=False, relay=False, name="b.pcap")
    assert bare.severity == "medium" and "router failover" in bare.evidence["readings"]


def test_two_routers_in_use_from_the_start_are_not_a_change(tmp_path):
    assert capture(tmp_path, arp_claim=False, relay=False, new_mac=OTHER, settle_s=0.0) == []


def test_a_claim_of_an_address_that_is_no_gateway_is_no_claim(tmp_path):
    """A new router announcing its own address (nobody asked for it as a gateway): a bare change."""
    (a,) = capture(tmp_path, relay=False, claim_ip="10.0.0.254", name="own.pcap")
    assert a.severity == "medium" and a.evidence["arp_claim"] is None


def test_destinations_spread_over_batches_still_make_a_router(tmp_path):
    """Batches of 256 records and 300 frames of other chatter after each visit: every visit is
    in a batch of its own; the bottom-k samples of destinations merge across them."""
    import dataclasses

    from detector.config import Config, FlowConfig

    cfg = Config(flows=dataclasses.replace(FlowConfig(), batch_size=256))
    (a,) = capture(tmp_path, name="spread.pcap", filler=300, cfg=cfg)
    assert a.severity == "critical"
