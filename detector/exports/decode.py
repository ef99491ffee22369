"""NetFlow v5, v9 and IPFIX messages to columns, in bulk.

A message is parsed set by set in Python (a few per datagram), never record by record: the
data sets of one template are gathered, laid out as a matrix of fixed-length rows and each
field read as a column (one NumPy step per field). Templates are kept per exporter,
observation domain (v9: source id) and template id (RFC 7011 8.1); a template record with no
fields withdraws its template (IPFIX 8.1), and templates not refreshed within
``template_timeout_s`` expire (UDP: RFC 7011 8.4). Data for a template not (yet) known is held
for ``hold_s`` (exporters send templates periodically, and a collector that starts in the
middle sees data first), then counted as dropped. Malformed and truncated messages are counted
by why, never fatal.

Fields read (IPFIX information elements; v9 field types share their numbers): addresses (8,
12, 27, 28), ports (7, 11), protocol (4), TCP flags (6), octets and packets (1, 2, 85, 86),
times (21/22 with the export header's uptime, 150-153, 160), ICMP type and code (32, 139),
VLAN (58), sampling (34, 305), and the reverse direction of biflows (RFC 5103: enterprise
29305, the same numbers) for the responder's counts.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

REVERSE_PEN = 29305  # RFC 5103
VARIABLE = 65535
MAX_HELD_BYTES = 16 << 20  # data waiting for its template, all exporters together

# IE -> column; a column read from several IEs takes the first present
COLUMNS = {
    8: "src4", 12: "dst4", 27: "src6", 28: "dst6", 7: "sport", 11: "dport", 4: "proto", 6: "tcp_flags",
    1: "octets", 85: "octets", 2: "packets", 86: "packets", 22: "start_uptime", 21: "end_uptime",
    150: "start_s", 151: "end_s", 152: "start_ms", 153: "end_ms", 32: "icmp", 139: "icmp6", 58: "vlan",
    34: "sampling", 305: "sampling", 160: "init_ms", 136: "end_reason",
}
REVERSE_COLUMNS = {1: "rev_octets", 85: "rev_octets", 2: "rev_packets", 86: "rev_packets", 6: "rev_tcp_flags"}


class Field(NamedTuple):
    ie: int
    length: int
    pen: int  # enterprise number, 0 for IANA


class Template(NamedTuple):
    fields: tuple[Field, ...]
    record_len: int  # 0: a field of variable length
    seen_ns: int
    options: bool  # an options template: its records describe the exporter, they are not flows


@dataclass
class Columns:
    """Decoded records: per column name, arrays of one length; ``exporter`` ids into
    ``Decoder.exporters``; times in ns since the epoch."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0


@dataclass
class Decoder:
    template_timeout_s: float = 1800.0
    hold_s: float = 10.0
    templates: dict = field(default_factory=dict)  # (exporter, domain, id) -> Template
    exporters: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # messages, records, and what was dropped, by why
    _pending: dict = field(default_factory=dict)  # template key -> list of (data bytes, export info)
    _held: list = field(default_factory=list)  # (arrival ns, key, data, info): data without its template
    _held_bytes: int = 0
    _ids: dict = field(default_factory=dict)
    _sources: dict = field(default_factory=dict)
    init_ms: list = field(default_factory=list)  # per source: when the exporter booted (-1: not told)
    sampling: list = field(default_factory=list)  # per source: 1 in N packets sampled
    _out: list = field(default_factory=list)
    taken: int = 0  # records handed out so far (their numbers make uids)

    def source_id(self, exporter: str, domain: int) -> int:
        """An id for (exporter, observation domain): what options records describe."""
        key = (exporter, domain)
        k = self._sources.get(key)
        if k is None:
            k = self._sources[key] = len(self._sources)
            self.init_ms.append(-1)
            self.sampling.append(1)
        return k

    def exporter_id(self, name: str) -> int:
        k = self._ids.get(name)
        if k is None:
            k = self._ids[name] = len(self.exporters)
            self.exporters.append(name)
        return k

    # -- messages ------------------------------------------------------------------------------
    def feed(self, data: bytes, exporter: str, now_ns: int) -> None:
        """One datagram (or one message of a stream) from ``exporter``."""
        self.counts["messages"] += 1
        if len(data) < 4:
            self.counts["dropped: truncated header"] += 1
            return
        version = struct.unpack_from(">H", data)[0]
        try:
            if version == 10:
                self._ipfix(data, exporter, now_ns)
            elif version == 9:
                self._v9(data, exporter, now_ns)
            elif version == 5:
                self._v5(data, exporter)
            else:
                self.counts[f"dropped: version {version}"] += 1
        except struct.error:
            self.counts["dropped: truncated message"] += 1

    def _ipfix(self, data: bytes, exporter: str, now_ns: int) -> None:
        length, export_s, _seq, domain = struct.unpack_from(">HIII", data, 2)
        if length > len(data) or length < 16:
            self.counts["dropped: truncated message"] += 1
            return
        info = (self.exporter_id(exporter), export_s * 1000, 0, self.source_id(exporter, domain))
        self._sets(data[16:length], exporter, domain, info, now_ns, template_sets=(2, 3), ipfix=True)

    def _v9(self, data: bytes, exporter: str, now_ns: int) -> None:
        _count, uptime, export_s, _seq, source = struct.unpack_from(">HIIII", data, 2)
        info = (self.exporter_id(exporter), export_s * 1000, uptime, self.source_id(exporter, source))
        self._sets(data[20:], exporter, source, info, now_ns, template_sets=(0, 1), ipfix=False)

    def _sets(self, body: bytes, exporter: str, domain: int, info, now_ns: int, template_sets, ipfix: bool) -> None:
        off = 0
        while off + 4 <= len(body):
            set_id, set_len = struct.unpack_from(">HH", body, off)
            if set_len < 4 or off + set_len > len(body):
                self.counts["dropped: truncated set"] += 1
                return
            content = body[off + 4:off + set_len]
            off += set_len
            if set_id == template_sets[0]:
                self._templates(content, exporter, domain, now_ns, ipfix, options=False)
            elif set_id == template_sets[1]:
                self._templates(content, exporter, domain, now_ns, ipfix, options=True)
            elif set_id >= 256:
                key = (exporter, domain, set_id)
                t = self.templates.get(key)
                if t is None or now_ns - t.seen_ns > self.template_timeout_s * 1e9:
                    if t is not None:
                        del self.templates[key]
                        self.counts["templates expired"] += 1
                    self._hold(now_ns, key, content, info)
                else:
                    self._pending.setdefault(key, []).append((content, info))
            else:
                self.counts[f"dropped: set id {set_id}"] += 1

    def _templates(self, content: bytes, exporter: str, domain: int, now_ns: int, ipfix: bool, options: bool) -> None:
        off = 0
        while off + 4 <= len(content):
            tid, count = struct.unpack_from(">HH", content, off)
            off += 4
            if options and ipfix:  # IPFIX: then the scope field count, the scope fields first
                off += 2
            elif options:  # v9: the scope and option lengths in bytes
                scope_len, opt_len = struct.unpack_from(">HH", content, off - 2)
                off += 2
                count = (scope_len + opt_len) // 4
            if tid < 256:
                if tid == 0 and count == 0:
                    break  # padding
                self.counts["dropped: bad template id"] += 1
                return
            key = (exporter, domain, tid)
            if count == 0:  # withdrawal (IPFIX 8.1)
                self.templates.pop(key, None)
                self.counts["templates withdrawn"] += 1
                continue
            fields = []
            for _ in range(count):
                ie, length = struct.unpack_from(">HH", content, off)
                off += 4
                pen = 0
                if ipfix and ie & 0x8000:
                    pen, off = struct.unpack_from(">I", content, off)[0], off + 4
                    ie &= 0x7FFF
                fields.append(Field(ie, length, pen))
            variable = any(f.length == VARIABLE for f in fields)
            record_len = 0 if variable else sum(f.length for f in fields)
            if not variable and record_len == 0:
                self.counts["dropped: empty template"] += 1
                continue
            # v9 options: scope fields come first and their types are not IPFIX elements
            if options and not ipfix:
                fields = [Field(0, f.length, 0) for f in fields[:scope_len // 4]] + fields[scope_len // 4:]
            self.templates[key] = Template(tuple(fields), record_len, now_ns, options)
            self.counts["templates"] += 1
            self._release(key)

    def _hold(self, now_ns: int, key, content: bytes, info) -> None:
        self._expire_held(now_ns)
        if self._held_bytes + len(content) > MAX_HELD_BYTES:
            self.counts["dropped: no template (hold full)"] += 1
            return
        self._held.append((now_ns, key, content, info))
        self._held_bytes += len(content)

    def _release(self, key) -> None:
        """Data held for a template that has now arrived goes to be decoded."""
        keep = []
        for item in self._held:
            if item[1] == key:
                self._pending.setdefault(key, []).append((item[2], item[3]))
                self._held_bytes -= len(item[2])
            else:
                keep.append(item)
        self._held = keep

    def _expire_held(self, now_ns: int) -> None:
        horizon = now_ns - self.hold_s * 1e9
        while self._held and self._held[0][0] < horizon:
            _, _, content, _ = self._held.pop(0)
            self._held_bytes -= len(content)
            self.counts["dropped: no template"] += 1

    def _v5(self, data: bytes, exporter: str) -> None:
        count, uptime, secs, nsecs = struct.unpack_from(">HIII", data, 2)
        engine, sampling = struct.unpack_from(">HH", data, 20)
        if len(data) < 24 + 48 * count:
            self.counts["dropped: truncated message"] += 1
            return
        source = self.source_id(exporter, engine)
        self.sampling[source] = max(sampling & 0x3FFF, 1)
        info = (self.exporter_id(exporter), secs * 1000 + nsecs // 1_000_000, uptime, source)
        self._pending.setdefault(V5_KEY, []).append((data[24:24 + 48 * count], info))

    # -- decoding ------------------------------------------------------------------------------
    def take(self, now_ns: int) -> Columns | None:
        """Everything fed since the last call, decoded (a template's data sets in one pass;
        options records first: they say when exporters booted and how they sample)."""
        self._expire_held(now_ns)
        pending = [(V5 if key == V5_KEY else self.templates.get(key), chunks) for key, chunks in self._pending.items()]
        self._pending = {}
        for t, chunks in sorted((x for x in pending if x[0] is not None), key=lambda x: not x[0].options):
            cols, info = (self._fixed if t.record_len else self._variable)(t, chunks)
            if cols is None:
                continue
            if t.options:
                self._describe(cols, info)
            else:
                self.counts["records"] += len(info)
                self._out.append(self._finish(cols, info))
        out, self._out = self._out, []
        if not out:
            return None
        n = [len(c["exporter"]) for c in out]
        first, self.taken = self.taken, self.taken + sum(n)
        cols = {"seq": np.arange(first, first + sum(n), dtype=np.int64)}  # the records' numbers, for uids
        for name in set().union(*(c.keys() for c in out)) - {"seq"}:
            like = next(c[name] for c in out if name in c)  # (IPv6 addresses are two words a row)
            cols[name] = np.concatenate([c[name] if name in c else np.zeros((k,) + like.shape[1:], like.dtype)
                                         for c, k in zip(out, n)])
        return Columns(cols)

    def _fixed(self, t: Template, chunks) -> tuple[dict | None, np.ndarray]:
        rows, infos = [], []
        for content, info in chunks:
            n = len(content) // t.record_len  # what is left is padding (RFC 7011 3.3.1)
            if n:
                rows.append(np.frombuffer(content, np.uint8, n * t.record_len).reshape(n, t.record_len))
                infos.append(np.array([info], np.int64).repeat(n, axis=0))
        if not rows:
            return None, None
        m = np.concatenate(rows)
        cols, off = {}, 0
        for f in t.fields:
            name = _column(f)
            if name and name not in cols:
                cols[name] = _field(m, off, f.length)
            off += f.length
        return cols, np.concatenate(infos)

    def _variable(self, t: Template, chunks) -> tuple[dict | None, np.ndarray]:
        """Records with a field of variable length: their offsets are found record by record
        (rare in flow exports: application names, URLs), then read as for fixed ones."""
        cells: list[list[bytes]] = [[] for _ in t.fields]
        infos = []
        for content, info in chunks:
            off, n = 0, 0
            while off < len(content):
                at, record = off, []
                for f in t.fields:
                    k = f.length
                    if k == VARIABLE:
                        if off >= len(content):
                            break
                        k, off = content[off], off + 1
                        if k == 255:
                            if off + 2 > len(content):
                                break
                            k, off = struct.unpack_from(">H", content, off)[0], off + 2
                    record.append(content[off:off + k])
                    off += k
                if len(record) < len(t.fields) or off > len(content):
                    if any(content[at:]):  # not padding: a record cut short
                        self.counts["dropped: truncated record"] += 1
                    break
                for j, cell in enumerate(record):
                    cells[j].append(cell)
                n += 1
            if n:
                infos.append(np.array([info], np.int64).repeat(n, axis=0))
        if not infos:
            return None, None
        cols = {}
        for j, f in enumerate(t.fields):
            name = _column(f)
            if name and name not in cols and f.length != VARIABLE:
                m = np.frombuffer(b"".join(cells[j]), np.uint8).reshape(-1, f.length)
                cols[name] = _field(m, 0, f.length)
        return cols, np.concatenate(infos)

    def _describe(self, cols: dict, info: np.ndarray) -> None:
        """Options records: each source's boot time and sampling rate (the last told)."""
        source = info[:, 3]
        for name, table in (("init_ms", self.init_ms), ("sampling", self.sampling)):
            if name in cols:
                for s, v in zip(source.tolist(), cols[name].tolist()):
                    table[s] = int(v) if name == "init_ms" else max(int(v), 1)

    def _finish(self, cols: dict, info: np.ndarray) -> dict:
        """Records' columns with the exporter, the times made absolute (ns) and the sampling."""
        cols["exporter"] = info[:, 0]
        export_ms, uptime, source = info[:, 1], info[:, 2], info[:, 3]
        init = np.array(self.init_ms, np.int64)[source]
        for edge in ("start", "end"):
            if f"{edge}_ms" in cols:
                ms = cols[f"{edge}_ms"].astype(np.int64)
            elif f"{edge}_s" in cols:
                ms = cols[f"{edge}_s"].astype(np.int64) * 1000
            elif f"{edge}_uptime" in cols:  # ms since the exporter booted
                boot = np.where(init >= 0, init, export_ms - uptime)  # IPFIX: told in options; v9/v5: header
                ms = boot + cols[f"{edge}_uptime"].astype(np.int64)
                # uptime is 32 bits of ms: a time after the export wrapped (it is 49.7 days earlier)
                ms = np.where(ms > export_ms + 60_000, ms - (1 << 32), ms)
            else:
                ms = export_ms
            cols[f"{edge}_ns"] = ms * 1_000_000
        if "sampling" not in cols:
            cols["sampling"] = np.array(self.sampling, np.int64)[source]
        return cols


# NetFlow v5's fixed record, as the IPFIX elements it holds (0: padding)
V5 = Template(tuple(Field(ie, n, 0) for ie, n in (
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2), (0, 1), (6, 1),
    (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (0, 2))), 48, 0, False)
V5_KEY = ("NetFlow v5",)


def _column(f: Field) -> str | None:
    return (REVERSE_COLUMNS if f.pen == REVERSE_PEN else COLUMNS if f.pen == 0 else {}).get(f.ie)


def _be(m: np.ndarray, off: int, k: int) -> np.ndarray:
    """Big-endian unsigned integers of ``k`` <= 8 bytes at column ``off`` of byte matrix ``m``."""
    out = np.zeros(len(m), np.uint64)
    for j in range(k):
        out = out << np.uint64(8) | m[:, off + j].astype(np.uint64)
    return out


def _field(m: np.ndarray, off: int, k: int) -> np.ndarray:
    if k == 16:  # an IPv6 address: two words
        return np.stack([_be(m, off, 8), _be(m, off + 8, 8)], axis=1)
    return _be(m, off, min(k, 8))
