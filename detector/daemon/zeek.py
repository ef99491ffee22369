"""Zeek ``conn.log`` and ``dns.log`` followed as they grow, for sites that already run Zeek.

Both of Zeek's writers are read: TSV (``#fields`` header, ``-`` unset, ``(empty)`` empty) and
JSON (one object per line; ``ts`` as epoch seconds or ISO 8601). Connections become flow
records of the same schema as the flow table's (:data:`detector.flows.records.FLOW_SCHEMA`;
what Zeek does not log, such as per-direction packet statistics, is zero), and DNS lines become
the DNS events the L7 inspector would give, so the same detectors run on them. Only complete
lines are read; the position in each log is kept in the state database, and a log that was
rotated (a new inode, or shorter than the position) is read from its start.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os

import numpy as np
import pyarrow as pa

from detector.daemon.state import State
from detector.flows.records import FLOW_SCHEMA, PROTO_NAMES
from detector.l7.dns import QTYPE_NAMES, Answer, DnsMessage
from detector.l7.events import Ctx, DnsEvent
from kernels.tcp_state import CONN_STATES

log = logging.getLogger("detector.daemon")
MAX_READ = 16 << 20  # bytes of log read per poll
IP_PROTO = {name: num for num, name in PROTO_NAMES.items()}
QTYPE_BY_NAME = {name: num for num, name in QTYPE_NAMES.items()}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}


class ZeekLog:
    """Follows one log file; :meth:`read` returns the records appended since the last call.
    The file is kept open, so when Zeek rotates it (renames it and opens a new one), the lines
    written to the old file since the last read are read before the new file is."""

    def __init__(self, path: str, state: State):
        self.path, self.state = path, state
        saved = state.zeek_offset(path)
        self.inode, self.offset = saved if saved is not None else (0, 0)
        self.fields: list[str] | None = None
        self.bad_lines = 0
        self._fh = None

    def _open(self) -> bool:
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        if st.st_ino != self.inode or st.st_size < self.offset:  # another file, or truncated in place
            self.inode, self.offset, self.fields = st.st_ino, 0, None
        self._fh = fh
        return True

    def _header(self) -> None:
        """The ``#fields`` of a TSV log (read from its top when resuming in the middle)."""
        fh = self._fh
        fh.seek(0)
        for _ in range(64):
            line = fh.readline()
            if not line.startswith(b"#"):
                break
            if line.startswith(b"#fields"):
                self.fields = line.rstrip(b"\n").decode("utf-8", "replace").split("\t")[1:]

    def _more(self) -> list[dict]:
        if self.fields is None:
            self._header()
        self._fh.seek(self.offset)
        data = self._fh.read(MAX_READ)
        end = data.rfind(b"\n") + 1
        records = []
        for raw in data[:end].splitlines():
            if not raw or raw.startswith(b"#"):
                if raw.startswith(b"#fields"):
                    self.fields = raw.decode("utf-8", "replace").split("\t")[1:]
                continue
            rec = self._parse(raw)
            if rec is None:
                self.bad_lines += 1
            else:
                records.append(rec)
        self.offset += end
        return records

    def read(self) -> tuple[list[dict], int]:
        """New records and the position after them (commit it with :meth:`commit`)."""
        if self._fh is None and not self._open():
            return [], self.offset
        records = self._more()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:  # rotated away, the new one not there yet
            return records, self.offset
        if st.st_ino != self.inode or st.st_size < self.offset:
            if st.st_ino != self.inode:
                records += self._more()  # the old file's last lines
            self._fh.close()
            self._fh = None
            if self._open():
                records += self._more()
        return records, self.offset

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def commit(self, db) -> None:
        self.state.set_zeek_offset(db, self.path, self.inode, self.offset)

    def _parse(self, raw: bytes) -> dict | None:
        text = raw.decode("utf-8", "replace")
        if text.startswith("{"):
            try:
                rec = json.loads(text)
            except ValueError:
                return None
            return rec if isinstance(rec, dict) else None
        if self.fields is None:
            return None
        values = text.split("\t")
        if len(values) != len(self.fields):
            return None
        return {k: (None if v == "-" else "" if v == "(empty)" else v) for k, v in zip(self.fields, values)}


def _ts_ns(value) -> int | None:
    if value is None:
        return None
    try:
        return int(round(float(value) * 1e9))
    except (TypeError, ValueError):
        pass
    try:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1e9)


def _num(rec: dict, key: str, cast=int, default=0):
    v = rec.get(key)
    if v is None or v == "":
        return default
    try:
        return cast(float(v)) if cast is int else cast(v)
    except (TypeError, ValueError):
        return default


def _addr(value) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def conn_batch(records: list[dict], local) -> tuple[pa.RecordBatch | None, int]:
    """Flow records from conn.log records (``local`` tells local addresses, for the
    ``local_orig``/``local_resp`` Zeek leaves unset without ``Site::local_nets``), and the
    number of records that were unusable."""
    rows = []
    for r in records:
        ts, orig, resp = _ts_ns(r.get("ts")), _addr(r.get("id.orig_h")), _addr(r.get("id.resp_h"))
        if ts is None or orig is None or resp is None:
            continue
        rows.append((ts, r, orig, resp))
    bad = len(records) - len(rows)
    if not rows:
        return None, bad
    n = len(rows)
    states = list(CONN_STATES)
    proto = [str(r.get("proto") or "unknown_transport") for _, r, _, _ in rows]
    state_code = np.array([states.index(s) if (s := r.get("conn_state")) in states else states.index("OTH")
                           for _, r, _, _ in rows], np.int8)
    data = {
        "ts": pa.array([t for t, _, _, _ in rows], pa.timestamp("ns", tz="UTC")),
        "uid": pa.array([str(r.get("uid") or "") for _, r, _, _ in rows], pa.string()),
        "community_id": pa.array([r.get("community_id") for _, r, _, _ in rows], pa.string()),
        "orig_h": pa.array([o for _, _, o, _ in rows], pa.string()),
        "orig_p": pa.array([_num(r, "id.orig_p") & 0xFFFF for _, r, _, _ in rows], pa.uint16()),
        "resp_h": pa.array([x for _, _, _, x in rows], pa.string()),
        "resp_p": pa.array([_num(r, "id.resp_p") & 0xFFFF for _, r, _, _ in rows], pa.uint16()),
        "proto": pa.DictionaryArray.from_arrays(
            pa.array([["tcp", "udp", "icmp", "sctp"].index(p) if p in ("tcp", "udp", "icmp", "sctp") else 4
                      for p in proto], pa.int8()), pa.array(["tcp", "udp", "icmp", "sctp", "unknown_transport"])),
        "ip_proto": pa.array([IP_PROTO.get(p, 0) for p in proto], pa.uint8()),
        "service": pa.array([r.get("service") or None for _, r, _, _ in rows], pa.string()),
        "duration": pa.array([_num(r, "duration", float, 0.0) for _, r, _, _ in rows], pa.float64()),
        "conn_state": pa.DictionaryArray.from_arrays(pa.array(state_code, pa.int8()), pa.array(states)),
        "local_orig": pa.array([local(o) for _, _, o, _ in rows], pa.bool_()),
        "local_resp": pa.array([local(x) for _, _, _, x in rows], pa.bool_()),
        "history": pa.array([r.get("history") or "" for _, r, _, _ in rows], pa.string()),
        "vlan": pa.array([_num(r, "vlan") & 0xFFFF for _, r, _, _ in rows], pa.uint16()),
        "end_reason": pa.DictionaryArray.from_arrays(pa.array(np.full(n, 2, np.int8)),
                                                     pa.array(["fin", "rst", "idle", "active", "evicted", "eof"])),
    }
    for key in ("orig_bytes", "resp_bytes", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"):
        data[key] = pa.array([_num(r, key) for _, r, _, _ in rows], pa.int64())
    for side in ("orig", "resp"):  # Zeek logs totals only: the mean packet size is what they give
        ip_bytes, pkts = data[f"{side}_ip_bytes"].to_numpy(), data[f"{side}_pkts"].to_numpy()
        data[f"{side}_size_mean"] = pa.array(ip_bytes / np.maximum(pkts, 1), pa.float64())
    arrays = []
    for f in FLOW_SCHEMA:
        a = data.get(f.name)
        if a is None:
            a = pa.array(np.zeros(n, f.type.to_pandas_dtype()), f.type)
        elif a.type != f.type:
            a = a.cast(f.type)
        arrays.append(a)
    return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA), bad


def dns_events(records: list[dict]) -> list[DnsEvent]:
    """The query and, when answered, the response of each dns.log line, as DNS events."""
    out = []
    for r in records:
        ts, client, server = _ts_ns(r.get("ts")), _addr(r.get("id.orig_h")), _addr(r.get("id.resp_h"))
        if ts is None or client is None or server is None:
            continue
        qname = str(r.get("query") or "")
        qtype = QTYPE_BY_NAME.get(str(r.get("qtype_name") or ""), _num(r, "qtype"))
        sport, dport = _num(r, "id.orig_p"), _num(r, "id.resp_p")
        proto = IP_PROTO.get(str(r.get("proto") or "udp"), 17)
        txid = _num(r, "trans_id")
        uid = str(r.get("uid") or "")
        out.append(DnsEvent(Ctx(ts, uid, True, client, server, sport, dport, proto),
                            DnsMessage(txid, False, 0, 0, qname, qtype)))
        answers = r.get("answers")
        rcode = r.get("rcode_name")
        if answers is None and rcode is None:
            continue
        if isinstance(answers, str):
            answers = answers.split(",") if answers else []
        ttls = r.get("TTLs")
        if isinstance(ttls, str):
            ttls = ttls.split(",") if ttls else []
        ttls = list(ttls or [])
        ans = []
        for i, a in enumerate(answers or []):
            a = str(a)
            addr = _addr(a)
            rtype = (1 if ":" not in a else 28) if addr else 5
            ttl = int(float(ttls[i])) if i < len(ttls) and ttls[i] not in (None, "-") else 0
            ans.append(Answer(rtype, ttl, a, 4 if rtype == 1 else 16 if rtype == 28 else len(a)))
        rtt = _num(r, "rtt", float, 0.0)
        out.append(DnsEvent(Ctx(ts + int(rtt * 1e9), uid, False, server, client, dport, sport, proto),
                            DnsMessage(txid, True, 0, RCODES.get(str(rcode), _num(r, "rcode")), qname, qtype, ans)))
    return out
