"""Certificate checks with the ``cryptography`` package: RFC 6125 names, validity at capture
time, chains to the trust anchors; and the alerts on a capture whose server answers with a
certificate for another name."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from detector.detect import x509_check as xc

NOW = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]


def cert(cn, issuer_cn=None, key=0, signer=None, sans=(), days=(-30, 300), ca=False):
    """A certificate for ``cn`` signed by ``signer`` (a key index; itself when None)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn or cn)])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(KEYS[key].public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW + dt.timedelta(days=days[0]))
         .not_valid_after(NOW + dt.timedelta(days=days[1])))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(KEYS[key if signer is None else signer], hashes.SHA256())


def der(c):
    return c.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("names,host,ok", [
    (["www.example.org"], "WWW.Example.org.", True),
    (["*.example.org"], "www.example.org", True),
    (["*.example.org"], "a.b.example.org", False),  # one label only
    (["*.example.org"], "example.org", False),
    (["*.org"], "example.org", False),  # never a public suffix
    (["*.co.uk"], "example.co.uk", False),
    (["*.example.co.uk"], "www.example.co.uk", True),
    (["example.org"], "www.example.org", False),
    ([], "localhost", False),
])
def test_names_follow_rfc_6125(names, host, ok):
    assert xc.covers(names, host) is ok


def test_subject_alt_names_win_over_the_common_name():
    assert xc.dns_names(cert("cn.example.org", sans=["a.example.org", "B.example.org."])) == [
        "a.example.org", "b.example.org"]
    assert xc.dns_names(cert("cn.example.org")) == ["cn.example.org"]


def test_addresses_in_sni_are_not_names():
    assert not xc.is_dns_name("192.168.1.150") and not xc.is_dns_name("2001:db8::1")
    assert xc.is_dns_name("portal.example.org") and xc.is_dns_name("localhost")


def test_validity_is_judged_at_the_capture_time():
    c = cert("x.example.org", days=(-30, 10))
    at = lambda d: int((NOW + dt.timedelta(days=d)).timestamp() * 1e9)  # noqa: E731
    assert xc.validity(c, at(0)).state == "valid"
    assert xc.validity(c, at(11)).state == "expired"
    assert xc.validity(c, at(-31)).state == "not_yet_valid"


def test_a_chain_is_trusted_only_through_verified_signatures():
    root = cert("Site Root CA", key=1, ca=True)
    leaf = cert("x.example.org", "Site Root CA", key=0, signer=1)
    fingerprint = __import__("hashlib").sha256(der(root)).hexdigest()
    # the site names its CA by fingerprint: the root the server sends is an anchor
    assert xc.trusted([leaf, root], xc.Anchors((fingerprint,)))
    # by issuer name: the leaf's issuer is the site's CA
    assert xc.trusted([leaf], xc.Anchors(("CN=Site Root CA",)))
    # unknown to the bundle and the site
    assert not xc.trusted([leaf, root], xc.Anchors())
    # a forged "Site Root CA" (another key) does not sign the leaf: the chain breaks there
    forged = cert("Site Root CA", key=2, ca=True)
    assert not xc.trusted([leaf, forged], xc.Anchors((__import__("hashlib").sha256(der(forged)).hexdigest(),)))


def test_a_site_ca_given_as_a_pem_file_is_an_anchor(tmp_path):
    """The server sends only its leaf; the site's root, from a PEM file, verifies it."""
    root = cert("Site Root CA", key=1, ca=True)
    leaf = cert("x.example.org", "Site Root CA", key=0, signer=1)
    pem = tmp_path / "site-ca.pem"
    pem.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    assert xc.trusted([leaf], xc.Anchors((str(pem),)))
    assert not xc.trusted([cert("x.example.org", "Site Root CA", key=0, signer=2)], xc.Anchors((str(pem),)))


def test_a_missing_pem_file_is_a_configuration_error(tmp_path):
    from detector.errors import ConfigError
    from detector.site import SiteConfig

    with pytest.raises(ConfigError, match="internal_cas"):
        SiteConfig(internal_cas=(str(tmp_path / "nope.pem"),)).validate("site.toml")


def test_a_chain_to_a_bundle_root_is_trusted():
    """The bundle's roots are anchors: a certificate the root itself signed is trusted (the
    root's own self-signature stands in for a leaf here, as no test holds a public CA's key)."""
    root = xc._bundle()[0]
    assert xc.trusted([root], xc.Anchors())


# -- end to end ------------------------------------------------------------------------------------

def _tls_capture(tmp_path, sni, chain):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups
    from scapy.utils import wrpcap

    from detector.synth import messages as msg

    rng = np.random.default_rng(3)
    c, s, cs, ss = "10.0.0.5", "198.51.100.80", 1000, 9000
    hello, flight = msg.client_hello(rng, sni), msg.server_flight(rng, [der(x) for x in chain])
    pkts = [E / IP(src=c, dst=s) / TCP(sport=41000, dport=443, flags="S", seq=cs - 1),
            E / IP(src=s, dst=c) / TCP(sport=443, dport=41000, flags="SA", seq=ss - 1, ack=cs),
            E / IP(src=c, dst=s) / TCP(sport=41000, dport=443, flags="A", seq=cs, ack=ss),
            E / IP(src=c, dst=s) / TCP(sport=41000, dport=443, flags="PA", seq=cs, ack=ss) / hello]
    cs += len(hello)
    for k in range(0, len(flight), 1400):
        part = flight[k:k + 1400]
        pkts.append(E / IP(src=s, dst=c) / TCP(sport=443, dport=41000, flags="PA", seq=ss, ack=cs) / part)
        ss += len(part)
    for j, p in enumerate(pkts):
        p.time = NOW.timestamp() + j * 0.01
    path = tmp_path / "tls.pcap"
    wrpcap(str(path), pkts)
    from detector.config import load_config
    from detector.pipeline.analyze_job import run_analyze

    return run_analyze([str(path)], load_config(None), None, progress=False).alerts


def test_a_certificate_for_another_name_is_a_medium_mismatch(tmp_path):
    root = cert("Some CA", key=1, ca=True)
    leaf = cert("cdn.other-owner.net", "Some CA", sans=["cdn.other-owner.net"], signer=1)
    alerts = _tls_capture(tmp_path, "portal.partner-hpc.org", [leaf, root])
    (a,) = [a for a in alerts if a.severity_rank >= 1]
    assert a.technique == "tls_name_mismatch" and a.severity == "high"  # and an unknown CA: corroborated
    assert [c["technique"] for c in a.evidence["corroborated_by"]] == ["tls_untrusted_issuer"]
    assert a.evidence["certificate_names"] == ["cdn.other-owner.net"]


def test_a_self_signed_certificate_for_the_name_asked_is_low(tmp_path):
    alerts = _tls_capture(tmp_path, "nas.lab.example.org", [cert("nas.lab.example.org", sans=["nas.lab.example.org"])])
    assert [a.technique for a in alerts] == ["tls_self_signed"] and alerts[0].severity == "low"


def test_a_sibling_name_of_the_same_domain_is_a_misconfiguration(tmp_path):
    alerts = _tls_capture(tmp_path, "www.example.org", [cert("example.org", sans=["example.org"])])
    assert {a.technique for a in alerts} == {"tls_name_misconfigured", "tls_self_signed"}
    assert all(a.severity == "low" for a in alerts)
