"""NetFlow v5, v9 and IPFIX messages to columns, in bulk.

A message is parsed set by set in Python (a few per datagram), never record by record: the
data sets of one template are gathered, laid out as a matrix of fixed-length rows and each
field read as a column (one NumPy step per field). Data waits for decoding with the template
it arrived under, so a template redefined or withdrawn later does not change how it is read.

Templates are kept per transport session (exporter address and port, or TCP connection),
observation domain (v9: source id) and template id (RFC 7011 8.1). A template record with no
fields withdraws its template, and template id 2 (3) with no fields withdraws every template
(options template) of the domain (IPFIX 8.1). Over UDP, templates not refreshed within
``template_timeout_s`` expire (RFC 7011 8.4); over TCP they last as long as the connection.
Data for a template not (yet) known is held for ``hold_s`` (exporters send templates
periodically, and a collector that starts in the middle sees data first), then counted as
dropped. Malformed and truncated messages are counted by why, never fatal; so are fields of a
length their element cannot have. Sessions and templates are capped (``MAX_SOURCES``,
``MAX_TEMPLATES``): what a flood of fake exporters would add beyond is dropped and counted.

Fields read (IPFIX information elements; v9 field types share their numbers): addresses (8,
12, 27, 28), ports (7, 11), protocol (4), TCP flags (6), octets and packets (1, 2; 85, 86 only
without them), times (150-157, and 21/22 with the boot time: IE 160 in options records, or
the v9/v5 header's uptime), ICMP type and code (32, 139), VLAN (58), end reason (136),
sampling (34, or 305 and 306 in options records), and the reverse direction of biflows (RFC
5103: enterprise 29305, the same numbers) for the responder's counts.
"""

from __future__ import annotations

import struct
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

REVERSE_PEN = 29305  # RFC 5103
VARIABLE = 65535
MAX_HELD_BYTES = 16 << 20  # data waiting for its template, all exporters together
MAX_SOURCES = 65536  # (session, domain) pairs
MAX_TEMPLATES = 65536
NTP_EPOCH_S = 2_208_988_800  # 1900-01-01 to 1970-01-01
LATE_MS = 60_000  # a time this far after the export is an uptime that wrapped

# IE -> column; lengths each column may have
COLUMNS = {
    8: "src4", 12: "dst4", 27: "src6", 28: "dst6", 7: "sport", 11: "dport", 4: "proto", 6: "tcp_flags",
    1: "octets", 2: "packets", 85: "total_octets", 86: "total_packets", 22: "start_uptime", 21: "end_uptime",
    150: "start_s", 151: "end_s", 152: "start_ms", 153: "end_ms", 154: "start_us", 155: "end_us", 156: "start_ns_ntp",
    157: "end_ns_ntp", 32: "icmp", 139: "icmp6", 58: "vlan", 34: "sampling", 305: "sample_take", 306: "sample_skip",
    160: "init_ms", 136: "end_reason",
}
REVERSE_COLUMNS = {1: "rev_octets", 2: "rev_packets", 85: "rev_total_octets", 86: "rev_total_packets",
                   6: "rev_tcp_flags"}
LENGTHS = {"src4": (4,), "dst4": (4,), "src6": (16,), "dst6": (16,), "start_us": (8,), "end_us": (8,),
           "start_ns_ntp": (8,), "end_ns_ntp": (8,)}  # others: 1 to 8 bytes (reduced-size encoding)


class Field(NamedTuple):
    ie: int
    length: int
    pen: int  # enterprise number, 0 for IANA


class Template(NamedTuple):
    fields: tuple[Field, ...]
    record_len: int  # 0: a field of variable length
    seen_ns: int
    options: bool  # an options template: its records describe the exporter, they are not flows

    @property
    def layout(self) -> tuple:
        return self.fields, self.record_len, self.options


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
    templates: dict = field(default_factory=dict)  # (session, domain, id) -> Template
    exporters: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # messages, records, and what was dropped, by why
    init_ms: list = field(default_factory=list)  # per source: when the exporter booted (-1: not told)
    sampling: list = field(default_factory=list)  # per source: 1 in N packets sampled
    taken: int = 0  # records handed out so far (with ``run``, their uids)
    run: str = field(default_factory=lambda: f"{time.time_ns() // 1_000_000 % 36**6:x}")
    _pending: dict = field(default_factory=dict)  # template layout -> list of (data, info)
    _held: dict = field(default_factory=dict)  # template key -> deque of (arrival ns, data, info)
    _held_order: deque = field(default_factory=deque)  # (arrival ns, key, size), oldest first
    _held_bytes: int = 0
    _ids: dict = field(default_factory=dict)
    _sources: dict = field(default_factory=dict)
    _out: list = field(default_factory=list)

    def source_id(self, exporter: str, domain: int) -> int | None:
        """An id for (session, observation domain): what options records describe; None past
        ``MAX_SOURCES``."""
        key = (exporter, domain)
        k = self._sources.get(key)
        if k is None:
            if len(self._sources) >= MAX_SOURCES:
                return None
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
    def feed(self, data: bytes, exporter: str, now_ns: int, stream: bool = False) -> None:
        """One datagram (or, ``stream``, one message of a TCP connection) from ``exporter``
        (its transport session: address and port, or connection)."""
        self.counts["messages"] += 1
        if len(data) < 4:
            self.counts["dropped: truncated header"] += 1
            return
        version = struct.unpack_from(">H", data)[0]
        try:
            if version == 10:
                self._ipfix(data, exporter, now_ns, stream)
            elif version == 9:
                self._v9(data, exporter, now_ns)
            elif version == 5:
                self._v5(data, exporter)
            else:
                self.counts[f"dropped: version {version}"] += 1
        except struct.error:
            self.counts["dropped: truncated message"] += 1

    def _ipfix(self, data: bytes, exporter: str, now_ns: int, stream: bool) -> None:
        length, export_s, _seq, domain = struct.unpack_from(">HIII", data, 2)
        if length > len(data) or length < 16:
            self.counts["dropped: truncated message"] += 1
            return
        source = self.source_id(exporter, domain)
        if source is None:
            self.counts["dropped: too many exporters"] += 1
            return
        info = (self.exporter_id(exporter), export_s * 1000, -1, source)  # -1: IPFIX headers give no uptime
        self._sets(data[16:length], (exporter, domain), info, now_ns, (2, 3), ipfix=True, stream=stream)

    def _v9(self, data: bytes, exporter: str, now_ns: int) -> None:
        _count, uptime, export_s, _seq, domain = struct.unpack_from(">HIIII", data, 2)
        source = self.source_id(exporter, domain)
        if source is None:
            self.counts["dropped: too many exporters"] += 1
            return
        info = (self.exporter_id(exporter), export_s * 1000, uptime, source)
        self._sets(data[20:], (exporter, domain), info, now_ns, (0, 1), ipfix=False, stream=False)

    def _sets(self, body: bytes, scope: tuple, info, now_ns: int, template_sets, ipfix: bool, stream: bool) -> None:
        off = 0
        while off + 4 <= len(body):
            set_id, set_len = struct.unpack_from(">HH", body, off)
            if set_len < 4 or off + set_len > len(body):
                self.counts["dropped: truncated set"] += 1
                return
            content = body[off + 4:off + set_len]
            off += set_len
            if set_id in template_sets:
                self._templates(content, scope, now_ns, ipfix, options=set_id == template_sets[1])
            elif set_id >= 256:
                key = (*scope, set_id)
                t = self.templates.get(key)
                if t is not None and not stream and now_ns - t.seen_ns > self.template_timeout_s * 1e9:
                    del self.templates[key]
                    self.counts["templates expired"] += 1
                    t = None
                if t is None:
                    self._hold(now_ns, key, content, info)
                else:
                    self._pending.setdefault(t.layout, []).append((content, info))
            else:
                self.counts[f"dropped: set id {set_id}"] += 1

    def _templates(self, content: bytes, scope: tuple, now_ns: int, ipfix: bool, options: bool) -> None:
        off = 0
        while off + 4 <= len(content):
            tid, count = struct.unpack_from(">HH", content, off)
            off += 4
            if tid == 0 and count == 0:
                break  # padding
            if count == 0 and ipfix:  # withdrawal (IPFIX 8.1): one template, or all of a kind (id 2, 3)
                self._withdraw(scope, tid, options)
                continue
            scope_len = 0
            if options and ipfix:  # then the scope field count, the scope fields first
                off += 2
            elif options:  # v9: the scope and option lengths in bytes
                if off + 2 > len(content):
                    break  # padding
                scope_len, opt_len = count, struct.unpack_from(">H", content, off)[0]
                off += 2
                count = (scope_len + opt_len) // 4
            if tid < 256:
                self.counts["dropped: bad template id"] += 1
                return
            fields = []
            for _ in range(count):
                ie, length = struct.unpack_from(">HH", content, off)
                off += 4
                pen = 0
                if ipfix and ie & 0x8000:
                    pen, off = struct.unpack_from(">I", content, off)[0], off + 4
                    ie &= 0x7FFF
                fields.append(Field(ie, length, pen))
            # v9 options: scope fields come first and their types are not IPFIX elements
            fields[:scope_len // 4] = [Field(0, f.length, 0) for f in fields[:scope_len // 4]]
            variable = any(f.length == VARIABLE for f in fields)
            record_len = 0 if variable else sum(f.length for f in fields)
            if not variable and record_len == 0:
                self.counts["dropped: empty template"] += 1
                continue
            key = (*scope, tid)
            if key not in self.templates and len(self.templates) >= MAX_TEMPLATES:
                self.counts["dropped: too many templates"] += 1
                continue
            self.templates[key] = Template(tuple(fields), record_len, now_ns, options)
            self.counts["templates"] += 1
            self._release(key)

    def _withdraw(self, scope: tuple, tid: int, options: bool) -> None:
        if tid in (2, 3):
            gone = [k for k, t in self.templates.items() if k[:2] == scope and t.options == (tid == 3)]
        else:
            gone = [(*scope, tid)] if (*scope, tid) in self.templates else []
        for k in gone:
            del self.templates[k]
        self.counts["templates withdrawn"] += len(gone)

    def _hold(self, now_ns: int, key, content: bytes, info) -> None:
        self._expire_held(now_ns)
        if self._held_bytes + len(content) > MAX_HELD_BYTES:
            self.counts["dropped: no template (hold full)"] += 1
            return
        self._held.setdefault(key, deque()).append((now_ns, content, info))
        self._held_order.append((now_ns, key, len(content)))
        self._held_bytes += len(content)

    def _release(self, key) -> None:
        """Data held for a template that has now arrived goes to be decoded with it."""
        waiting = self._held.pop(key, None)
        if waiting:
            t = self.templates[key]
            for _, content, info in waiting:
                self._pending.setdefault(t.layout, []).append((content, info))
                self._held_bytes -= len(content)

    def _expire_held(self, now_ns: int) -> None:
        horizon = now_ns - self.hold_s * 1e9
        while self._held_order and self._held_order[0][0] < horizon:
            _, key, _ = self._held_order.popleft()
            waiting = self._held.get(key)
            if waiting and waiting[0][0] < horizon:  # (released data left its marks here)
                _, content, _ = waiting.popleft()
                self._held_bytes -= len(content)
                self.counts["dropped: no template"] += 1
                if not waiting:
                    del self._held[key]

    def held(self) -> int:
        return sum(len(q) for q in self._held.values())

    def _v5(self, data: bytes, exporter: str) -> None:
        count, uptime, secs, nsecs = struct.unpack_from(">HIII", data, 2)
        engine, sampling = struct.unpack_from(">HH", data, 20)
        if len(data) < 24 + 48 * count:
            self.counts["dropped: truncated message"] += 1
            return
        source = self.source_id(exporter, engine)
        if source is None:
            self.counts["dropped: too many exporters"] += 1
            return
        self.sampling[source] = max(sampling & 0x3FFF, 1)
        info = (self.exporter_id(exporter), secs * 1000 + nsecs // 1_000_000, uptime, source)
        self._pending.setdefault(V5.layout, []).append((data[24:24 + 48 * count], info))

    # -- decoding ------------------------------------------------------------------------------
    def take(self, now_ns: int) -> Columns | None:
        """Everything fed since the last call, decoded (a template's data sets in one pass;
        options records first: they say when exporters booted and how they sample)."""
        self._expire_held(now_ns)
        pending, self._pending = self._pending, {}
        for layout, chunks in sorted(pending.items(), key=lambda kv: not kv[0][2]):
            fields, record_len, options = layout
            t = Template(fields, record_len, 0, options)
            cols, info = (self._fixed if record_len else self._variable)(t, chunks)
            if cols is None:
                continue
            if options:
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

    def _read(self, t: Template, m: np.ndarray, offsets: list[int]) -> dict:
        """Each field's column from byte matrix ``m`` (rows: records); fields whose length their
        element cannot have are skipped, counted."""
        cols = {}
        for f, off in zip(t.fields, offsets):
            name = _column(f)
            if name is None or f.length == VARIABLE:
                continue
            if f.length not in LENGTHS.get(name, range(1, 9)):
                self.counts["ignored: field of a length its element cannot have"] += 1
                continue
            if name not in cols:
                cols[name] = _field(m, off, f.length)
        return cols

    def _fixed(self, t: Template, chunks) -> tuple[dict | None, np.ndarray | None]:
        rows, infos = [], []
        for content, info in chunks:
            n = len(content) // t.record_len  # what is left is padding (RFC 7011 3.3.1)
            if n:
                rows.append(np.frombuffer(content, np.uint8, n * t.record_len).reshape(n, t.record_len))
                infos.append(np.array([info], np.int64).repeat(n, axis=0))
        if not rows:
            return None, None
        offsets = np.cumsum([0] + [f.length for f in t.fields[:-1]]).tolist()
        return self._read(t, np.concatenate(rows), offsets), np.concatenate(infos)

    def _variable(self, t: Template, chunks) -> tuple[dict | None, np.ndarray | None]:
        """Records with a field of variable length: their offsets are found record by record
        (rare in flow exports: application names, URLs); the fixed-length fields are then read
        as for fixed records."""
        fixed = [j for j, f in enumerate(t.fields) if f.length != VARIABLE]
        width = sum(t.fields[j].length for j in fixed)
        packed, infos = bytearray(), []
        for content, info in chunks:
            off, n = 0, 0
            while off < len(content):
                at, record, ok = off, [], True
                for f in t.fields:
                    k = f.length
                    if k == VARIABLE:
                        if off >= len(content):
                            ok = False
                            break
                        k, off = content[off], off + 1
                        if k == 255:
                            if off + 2 > len(content):
                                ok = False
                                break
                            k, off = struct.unpack_from(">H", content, off)[0], off + 2
                    else:
                        record.append(content[off:off + k])
                    off += k
                if not ok or off > len(content):
                    if any(content[at:]):  # not padding: a record cut short
                        self.counts["dropped: truncated record"] += 1
                    break
                packed += b"".join(record)
                n += 1
            if n:
                infos.append(np.array([info], np.int64).repeat(n, axis=0))
        if not infos or not width:
            return None, None
        m = np.frombuffer(bytes(packed), np.uint8).reshape(-1, width)
        sub = Template(tuple(t.fields[j] for j in fixed), width, 0, t.options)
        offsets = np.cumsum([0] + [f.length for f in sub.fields[:-1]]).tolist()
        return self._read(sub, m, offsets), np.concatenate(infos)

    def _describe(self, cols: dict, info: np.ndarray) -> None:
        """Options records: each source's boot time and sampling rate (the last told)."""
        source = info[:, 3].tolist()
        if "init_ms" in cols:
            for s, v in zip(source, cols["init_ms"].tolist()):
                if 0 < v < 2**62:
                    self.init_ms[s] = int(v)
        rate = None
        if "sampling" in cols:
            rate = cols["sampling"].tolist()
        elif "sample_take" in cols:  # take N packets, skip M: 1 in (N + M) / N
            take, skip = cols["sample_take"], cols.get("sample_skip", np.zeros(len(source), np.uint64))
            rate = [(int(a) + int(b)) // max(int(a), 1) for a, b in zip(take.tolist(), skip.tolist())]
        for s, v in zip(source, rate or ()):
            if 0 < v < 2**31:
                self.sampling[s] = int(v)

    def _finish(self, cols: dict, info: np.ndarray) -> dict:
        """Records' columns with the exporter, the times made absolute (ns) and the sampling."""
        cols["exporter"] = info[:, 0]
        export_ms, uptime, source = info[:, 1], info[:, 2], info[:, 3]
        init = np.array(self.init_ms, np.int64)[source]
        for a, b in (("packets", "total_packets"), ("octets", "total_octets"), ("rev_packets", "rev_total_packets"),
                     ("rev_octets", "rev_total_octets")):
            if a not in cols and b in cols:  # totals only when the exporter sends no deltas
                cols[a] = cols[b]
            cols.pop(b, None)
        ms = {edge: self._times(cols, edge, export_ms, uptime, init) for edge in ("start", "end")}
        # a record of uptimes with no boot time known (IPFIX without IE 160): ended at the export
        unknown = ms["start"] is None
        for edge in ("start", "end"):
            cols[f"{edge}_ns"] = (export_ms if ms[edge] is None else ms[edge]) * 1_000_000
        if unknown and "start_uptime" in cols and "end_uptime" in cols:
            span = (cols["end_uptime"].astype(np.int64) - cols["start_uptime"].astype(np.int64)) * 1_000_000
            cols["start_ns"] = cols["end_ns"] - np.clip(span, 0, None)
        for name in ("start_uptime", "end_uptime", "start_s", "end_s", "start_ms", "end_ms", "start_us", "end_us",
                     "start_ns_ntp", "end_ns_ntp", "init_ms", "sample_take", "sample_skip"):
            cols.pop(name, None)
        if "sampling" in cols:
            cols["sampling"] = np.clip(cols["sampling"].astype(np.int64), 1, 2**31)
        else:
            cols["sampling"] = np.array(self.sampling, np.int64)[source]
        return cols

    @staticmethod
    def _times(cols: dict, edge: str, export_ms, uptime, init) -> np.ndarray | None:
        """One edge of each record's time span, in ms since the epoch; None when not told."""
        if f"{edge}_ms" in cols:
            return cols[f"{edge}_ms"].astype(np.int64)
        if f"{edge}_s" in cols:
            return cols[f"{edge}_s"].astype(np.int64) * 1000
        for name, scale in ((f"{edge}_us", 1000), (f"{edge}_ns_ntp", 1000)):  # NTP: seconds since 1900, fraction
            if name in cols:
                v = cols[name]
                seconds = (v >> np.uint64(32)).astype(np.int64) - NTP_EPOCH_S
                fraction = (v & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2**32
                return seconds * 1000 + (fraction * 1000).astype(np.int64)
        if f"{edge}_uptime" in cols:  # ms since the exporter booted
            boot = np.where(init >= 0, init, export_ms - uptime)  # IPFIX: options; v9/v5: the header
            known = (init >= 0) | (uptime >= 0)
            if not known.any():
                return None
            ms = boot + cols[f"{edge}_uptime"].astype(np.int64)
            # the uptime is 32 bits of ms: it wraps every 49.7 days
            ms = np.where(ms > export_ms + LATE_MS, ms - (1 << 32), ms)
            return np.where(ms < export_ms - (1 << 32) + LATE_MS, ms + (1 << 32), ms)
        return None


# NetFlow v5's fixed record, as the IPFIX elements it holds (0: padding)
V5 = Template(tuple(Field(ie, n, 0) for ie, n in (
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2), (0, 1), (6, 1),
    (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (0, 2))), 48, 0, False)


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
    return _be(m, off, k)
