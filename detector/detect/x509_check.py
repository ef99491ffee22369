"""What a server's certificate chain says about the name asked for, the time and the issuer.

Certificates are parsed with the ``cryptography`` package. Three checks, each a pure function:

- **name** (:func:`covers`): RFC 6125 section 6.4. The client's SNI, a DNS name, against the
  subjectAltName's DNS names, or the subject's CNs when there is no DNS name there. A wildcard is
  the whole left-most label (``*.example.org``), matches exactly one label, and never a public
  suffix-like two-label name (``*.org``, ``*.co.uk``). Names compare case-insensitively
  (IDNA A-labels as sent), without the trailing dot.
- **time** (:func:`validity`): the capture time against notBefore/notAfter.
- **issuer** (:func:`trusted`): the chain the server sent is walked from the leaf, each
  certificate's signature verified against the next issuer found (among the chain, then the
  trust anchors), until an anchor signs one: the system's CA bundle (``certifi``) and the site's
  own CAs (``[site] internal_cas``: PEM files of CA certificates, which become anchors like the
  bundle's; SHA-256 fingerprints of CA certificates the servers send; or issuer names, trusted
  by name alone: the weakest form). Path policies (key usage, name constraints) are not
  checked; this is evidence, not a TLS client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import warnings
from functools import lru_cache
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from detector.detect.base import is_public_suffix


def load(der: bytes) -> x509.Certificate | None:
    """The parsed certificate, or None when ``cryptography`` cannot read it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-positive serials and the like: still readable
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError:
            return None


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names the certificate is for: subjectAltName's, else its subject CNs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except (x509.ExtensionNotFound, ValueError):
        names = []
    if not names:
        try:
            names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        except ValueError:
            names = []
    return [n.lower().rstrip(".") for n in names if n]


def _wildcard_ok(pattern: str) -> bool:
    return not is_public_suffix(pattern[2:])  # never *.org, *.co.uk


def covers(names: list[str], host: str) -> bool:
    """Whether a certificate for ``names`` is valid for the DNS name ``host`` (RFC 6125)."""
    host = host.lower().rstrip(".")
    for pattern in names:
        if pattern == host:
            return True
        if pattern.startswith("*.") and _wildcard_ok(pattern):
            head, _, rest = host.partition(".")
            if head and rest == pattern[2:]:
                return True
    return False


def is_dns_name(name: str) -> bool:
    """SNI holds DNS names (RFC 6066); some clients (RDP, by address) put an address there."""
    try:
        ipaddress.ip_address(name.strip("[]"))
        return False
    except ValueError:
        return "." in name or name == "localhost"


class Validity(NamedTuple):
    state: str  # "valid", "expired" or "not_yet_valid"
    not_before: dt.datetime
    not_after: dt.datetime


def validity(cert: x509.Certificate, ts_ns: int) -> Validity:
    when = dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.timezone.utc)
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    state = "expired" if when > na else "not_yet_valid" if when < nb else "valid"
    return Validity(state, nb, na)


class Anchors:
    """Trust anchors: the CA bundle's certificates, and the site's CA names and fingerprints."""

    def __init__(self, internal: tuple[str, ...] = ()):
        self.by_subject: dict[bytes, list[x509.Certificate]] = {}
        files = [v for v in internal if _is_pem_file(v)]
        for cert in _bundle() + tuple(c for f in files for c in _pem(f)):
            self.by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
        rest = [v for v in internal if v not in files]
        self.names = {v.strip().lower() for v in rest if not _is_fingerprint(v)}
        self.fingerprints = {v.strip().lower().replace(":", "") for v in rest if _is_fingerprint(v)}

    def internal(self, cert: x509.Certificate) -> bool:
        if hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest() in self.fingerprints:
            return True
        return bool(self.names) and cert.issuer.rfc4514_string().lower() in self.names


def _is_pem_file(value: str) -> bool:
    return value.strip().lower().endswith((".pem", ".crt"))


def _pem(path: str) -> tuple[x509.Certificate, ...]:
    """The certificates of a PEM file; a file that cannot be read is a configuration error."""
    from detector.errors import ConfigError

    try:
        with open(path.strip(), "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tuple(x509.load_pem_x509_certificates(fh.read()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable PEM file of CA certificates ({exc})", None,
                          "site.internal_cas") from None


def _is_fingerprint(value: str) -> bool:
    v = value.strip().replace(":", "")
    return len(v) == 64 and all(c in "0123456789abcdefABCDEF" for c in v)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False


def trusted(chain: list[x509.Certificate], anchors: Anchors) -> bool:
    """Whether the chain leads, signature by signature, to an anchor (or names a site CA)."""
    if not chain:
        return False
    cert, seen = chain[0], 0
    while seen <= len(chain):
        if anchors.internal(cert):
            return True
        key = cert.issuer.public_bytes()
        if any(_signed_by(cert, a) for a in anchors.by_subject.get(key, [])):
            return True
        nxt = next((c for c in chain if c is not cert and c.subject.public_bytes() == key and _signed_by(cert, c)), None)
        if nxt is None:
            return False
        cert, seen = nxt, seen + 1
    return False


@lru_cache(maxsize=1)
def _bundle() -> tuple[x509.Certificate, ...]:
    import certifi

    with open(certifi.where(), "rb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(x509.load_pem_x509_certificates(fh.read()))
