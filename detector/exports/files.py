"""Saved flow exports, for ``detector analyze --flows FILE``:

- IPFIX files (RFC 5655: IPFIX messages one after another, as collectors write them);
- nfdump's nfcapd files, read through ``nfdump -r FILE -o json`` when nfdump is installed.

Told apart by content. A message cut short or a record that does not parse is counted and
named with the file and offset (or record number), never fatal.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from detector.errors import TelemetryError
from detector.exports.decode import Columns, Decoder
from detector.exports.records import flow_batch

NFCAPD_MAGIC = 0xA50C
BATCH_MESSAGES = 4096  # messages decoded together


class FlowFileError(TelemetryError):
    """A saved export that cannot be read at all."""


def read_flows(path: str, problems: list[str]) -> Iterator[pa.RecordBatch]:
    """The flow records of a saved export; what could not be read goes to ``problems``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise FlowFileError(path, None, f"cannot read: {exc.strerror}") from None
    if len(head) >= 2 and struct.unpack_from(">H", head)[0] == 10:
        yield from _ipfix_file(path, problems)
    elif len(head) >= 2 and struct.unpack_from("<H", head)[0] == NFCAPD_MAGIC:
        yield from _nfcapd(path, problems)
    else:
        raise FlowFileError(path, None, f"not an IPFIX file nor an nfcapd file (starts {head.hex() or 'empty'})")


def _ipfix_file(path: str, problems: list[str]) -> Iterator[pa.RecordBatch]:
    d = Decoder(template_timeout_s=float("inf"), hold_s=float("inf"))  # a file: templates hold to its end
    with open(path, "rb") as fh:
        data = fh.read()
    off, n = 0, 0
    while off + 16 <= len(data):
        version, length = struct.unpack_from(">HH", data, off)
        if version != 10 or length < 16:
            problems.append(f"{path}: offset {off}: not an IPFIX message header (version {version}, length {length}); "
                            "the rest of the file was not read")
            break
        if off + length > len(data):
            problems.append(f"{path}: offset {off}: an IPFIX message of {length} bytes cut short by the end of the file")
            break
        d.feed(data[off:off + length], path, 0)
        off += length
        n += 1
        if n % BATCH_MESSAGES == 0:
            yield from _batches(d)
    else:
        if off != len(data):
            problems.append(f"{path}: offset {off}: {len(data) - off} bytes after the last message")
    yield from _batches(d)
    _report(path, d, problems)


def _batches(d: Decoder) -> Iterator[pa.RecordBatch]:
    cols = d.take(0)
    if cols is not None and len(cols):
        yield flow_batch(cols, d.exporters, d.run)


def _report(path: str, d: Decoder, problems: list[str]) -> None:
    held = d.held()
    if held:
        d.counts["dropped: no template"] += held
    dropped = {k: v for k, v in d.counts.items() if k.startswith("dropped")}
    if dropped:
        problems.append(f"{path}: " + ", ".join(f"{v:,} {k}" for k, v in sorted(dropped.items())))


# nfdump -o json field -> decoded column
NFDUMP = {"src4_addr": "src", "dst4_addr": "dst", "src6_addr": "src", "dst6_addr": "dst", "src_port": "sport",
          "dst_port": "dport", "proto": "proto", "in_packets": "packets", "in_bytes": "octets",
          "out_packets": "rev_packets", "out_bytes": "rev_octets", "sampled": "sampling"}


def _nfcapd(path: str, problems: list[str]) -> Iterator[pa.RecordBatch]:
    nfdump = shutil.which("nfdump")
    if nfdump is None:
        raise FlowFileError(path, None, "an nfcapd file: reading it needs nfdump (Debian package nfdump)")
    # nfdump prints local time: ask for UTC
    done = subprocess.run([nfdump, "-r", path, "-o", "json"], capture_output=True, timeout=3600, check=False,
                          env={**os.environ, "TZ": "UTC"})
    if done.returncode != 0:
        raise FlowFileError(path, None, f"nfdump failed: {done.stderr.decode('utf-8', 'replace').strip()[:200]}")
    try:
        records = json.loads(done.stdout or b"[]")
    except json.JSONDecodeError as exc:
        raise FlowFileError(path, None, f"nfdump's JSON does not parse: {exc}") from None
    rows = [r for r in records if isinstance(r, dict) and r.get("type", "FLOW") == "FLOW"]
    if not rows:
        return
    try:
        yield _nfdump_batch(rows, path, problems)
    except (ValueError, TypeError, OverflowError) as exc:
        raise FlowFileError(path, None, f"nfdump gave a record this version cannot read: {exc}") from None


def _nfdump_batch(rows: list[dict], path: str, problems: list[str]) -> pa.RecordBatch:
    n = len(rows)
    cols: dict[str, np.ndarray] = {"exporter": np.zeros(n, np.int64), "seq": np.arange(n, dtype=np.int64)}
    bad = 0
    for side in ("src", "dst"):
        text = [r.get(f"{side}4_addr") or r.get(f"{side}6_addr") or "0.0.0.0" for r in rows]
        cols[f"{side}6"] = _words(text)
    for field, col in NFDUMP.items():
        if col in ("src", "dst"):
            continue
        cols[col] = np.array([int(r.get(field) or 0) for r in rows], np.int64)
    icmp = [int(r.get("icmp_type") or 0) << 8 | int(r.get("icmp_code") or 0) for r in rows]
    cols["icmp"] = np.array(icmp, np.int64)
    flags = [str(r.get("tcp_flags") or "") for r in rows]
    cols["tcp_flags"] = np.array([_flags(f) for f in flags], np.int64)
    for edge, field in (("start", "first"), ("end", "last")):
        times = np.array([r.get(field) or "" for r in rows], "datetime64[ns]")
        bad += int(np.isnat(times).sum())
        cols[f"{edge}_ns"] = np.where(np.isnat(times), 0, times.astype(np.int64))
    if bad:
        problems.append(f"{path}: {bad} record time(s) nfdump did not give")
    return flow_batch(Columns(cols), [path], f"{zlib.crc32(path.encode()):x}")


def _words(text: list[str]) -> np.ndarray:
    import ipaddress

    out = np.zeros((len(text), 2), np.uint64)
    seen: dict[str, tuple[int, int]] = {}
    for k, t in enumerate(text):
        w = seen.get(t)
        if w is None:
            a = ipaddress.ip_address(t)
            v = int(a) if a.version == 6 else (0xFFFF << 32) | int(a)
            w = seen[t] = (v >> 64, v & (2**64 - 1))
        out[k] = w
    return out


def _flags(text: str) -> int:
    """nfdump's flags text (``...AP.SF``: C E U A P R S F) as a byte."""
    bits = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}
    if text.startswith("0x"):
        return int(text, 16)
    return sum(bits.get(ch, 0) for ch in set(text))
