"""nvidia-smi CSV logs, read as columns.

Two kinds, told apart by the header nvidia-smi writes:

- ``nvidia-smi --query-gpu=timestamp,index,uuid,utilization.gpu,... --format=csv -l 1``: one
  row per GPU per interval;
- ``nvidia-smi --query-compute-apps=timestamp,gpu_uuid,pid,process_name,used_gpu_memory
  --format=csv -l 1``: one row per compute process per interval.

Any subset and order of the fields is read, with units (``45 %``, ``1234 MiB``, ``250.12 W``)
or without (``--format=csv,nounits``), with or without the header line's units. Values
nvidia-smi could not read (``[N/A]``, ``[Not Supported]``, ``N/A``, an empty field) become NaN. A line that does not
parse is counted and named (file and line number), never fatal; a repeated header (the log of
a restarted nvidia-smi appended to the last) is skipped. A process name holding a comma (older
drivers; newer ones write ``?``) makes its line one of the bad ones.

nvidia-smi writes ``timestamp`` as local time without a zone (``2026/11/02 09:00:01.123``):
the zone is the site's (``[site] timezone``, default UTC).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from detector.errors import TelemetryError
from detector.telemetry.samples import MAX_GPU, MAX_PID, UNKNOWN_JOB, GpuSamples, ProcessSamples, Telemetry, take

# field (as given to --query-gpu, and its aliases) -> column; unit accepted -> factor to the column's unit
GPU_FIELDS = {
    "utilization.gpu": "util", "utilization.memory": "mem_util", "memory.used": "mem_used_mib",
    "power.draw": "power_w", "power.draw.instant": "power_w", "power.draw.average": "power_w",
    "clocks.sm": "sm_mhz", "clocks.current.sm": "sm_mhz", "clocks.mem": "mem_mhz", "clocks.current.memory": "mem_mhz",
}
APP_FIELDS = {"used_gpu_memory": "used_mib", "used_memory": "used_mib"}
UNITS = {"util": {"%": 1.0}, "mem_util": {"%": 1.0}, "power_w": {"W": 1.0, "mW": 1e-3},
         "sm_mhz": {"MHz": 1.0, "GHz": 1e3}, "mem_mhz": {"MHz": 1.0, "GHz": 1e3},
         "mem_used_mib": {"MiB": 1.0, "GiB": 1024.0, "KiB": 1 / 1024}, "used_mib": {"MiB": 1.0, "GiB": 1024.0,
                                                                                  "KiB": 1 / 1024}}
MAX_NAMED = 5  # bad lines named per file; the rest are counted
_HEADER = re.compile(r"^\s*([^\[\]]+?)\s*(?:\[([^\]]*)\])?\s*$")
_NUMBER = r"^(?P<value>[-+]?\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z%]*)$"
_TIME = r"^(?P<date>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?$"


@dataclass(frozen=True)
class LogSpec:
    """One ``--gpu-log PATH[@HOST]`` argument."""

    path: str
    host: str

    @classmethod
    def parse(cls, text: str) -> LogSpec:
        import os

        path, at, host = text.rpartition("@")
        if not at or not host or os.path.exists(text):
            path, host = text, ""
        return cls(path, host or os.path.splitext(os.path.basename(path))[0])


def read_log(spec: LogSpec, telemetry: Telemetry, zone: str = "UTC") -> str:
    """Read one log into ``telemetry``; returns its kind, ``"gpu"`` or ``"processes"``."""
    header, header_line = _header(spec.path)
    names = [_split_header(spec.path, header_line, h)[0] for h in header]
    kind = "processes" if "pid" in names else "gpu" if set(names) & set(GPU_FIELDS) else None
    if kind is None:
        raise TelemetryError(spec.path, header_line, "not an nvidia-smi --query-gpu or --query-compute-apps CSV "
                                                      f"(header: {', '.join(header)[:200]})")
    if "timestamp" not in names:
        raise TelemetryError(spec.path, header_line, "the log has no timestamp field: add timestamp to the query")
    table, lines, bad = _rows(spec.path, header, header_line)
    rows = _Rows(spec.path, table, lines, bad)
    ts = rows.times(names.index("timestamp"), zone)
    host = np.full(len(lines), telemetry.host_id(spec.host), np.int32)
    if kind == "gpu":
        cols = {col: rows.number(names.index(f), col) for f, col in GPU_FIELDS.items() if f in names}
        gpu = rows.integer(names.index("index"), MAX_GPU) if "index" in names else np.full(len(lines), -1)
        uuid = rows.text(names.index("uuid")) if "uuid" in names else np.full(len(lines), None, object)
        telemetry.gpu_parts.append(rows.keep(GpuSamples.of(host, gpu, uuid, ts, cols)))
    else:
        pid = rows.integer(names.index("pid"), MAX_PID)
        used = next((rows.number(names.index(f), col) for f, col in APP_FIELDS.items() if f in names),
                    np.full(len(lines), np.nan))
        name_field = next((f for f in ("process_name", "name") if f in names), None)
        cmd = rows.text(names.index(name_field)) if name_field else np.full(len(lines), None, object)
        uuid = rows.text(names.index("gpu_uuid")) if "gpu_uuid" in names else np.full(len(lines), None, object)
        telemetry.process_parts.append(rows.keep(ProcessSamples(host, np.full(len(lines), -1, np.int16), uuid, ts, pid,
                                                                cmd, used, np.full(len(lines), UNKNOWN_JOB, np.int64))))
    telemetry.bad_lines += rows.bad_count()
    telemetry.problems.extend(rows.named_problems())
    return kind


def _header(path: str) -> tuple[list[str], int]:
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                text = raw.decode("utf-8", "replace").lstrip("\ufeff").strip()
                if text:
                    return [h.strip() for h in text.split(",")], number
    except OSError as exc:
        raise TelemetryError(path, None, f"cannot read: {exc.strerror}") from None
    raise TelemetryError(path, None, "empty: no nvidia-smi header line")


def _split_header(path: str, line: int, text: str) -> tuple[str, str]:
    m = _HEADER.match(text)
    if not m:
        raise TelemetryError(path, line, f"not an nvidia-smi header field: {text!r}")
    return m.group(1).strip().lower(), (m.group(2) or "").strip()


def _rows(path: str, header: list[str], header_line: int) -> tuple[pa.Table, np.ndarray, dict[int, str]]:
    """The data rows as text columns, the line number of each, and the lines skipped (line ->
    why; blank lines are not among them)."""
    table, skipped = _read(path, header, header_line, threads=True)
    if None in skipped:  # a parallel read may not know where a bad line was: read again to say
        table, skipped = _read(path, header, header_line, threads=False)
    table = table.combine_chunks()
    total = table.num_rows + len(skipped)
    lines = np.arange(header_line + 1, header_line + 1 + total)
    if skipped:
        lines = lines[~np.isin(lines, np.fromiter(skipped, np.int64, len(skipped)))]
    # a restarted nvidia-smi appended to the same file writes its header again: not data, not
    # bad; and Arrow reads an empty line as a row of empty fields
    first = pc.utf8_trim_whitespace(table.column(0).combine_chunks())
    maybe = np.flatnonzero(pc.is_in(first, pa.array([header[0], ""])).to_numpy(zero_copy_only=False))
    if len(maybe):
        rows = table.take(pa.array(maybe))
        again = np.ones(len(maybe), bool)
        blank = np.ones(len(maybe), bool)
        for k, h in enumerate(header):
            text = pc.utf8_trim_whitespace(rows.column(k).combine_chunks())
            again &= pc.equal(text, h).to_numpy(zero_copy_only=False)
            blank &= pc.equal(text, "").to_numpy(zero_copy_only=False)
        drop = maybe[again | blank]
        if len(drop):
            keep = np.ones(table.num_rows, bool)
            keep[drop] = False
            table = table.filter(pa.array(keep))
            lines = lines[keep]
    return table, lines, {n: why for n, why in skipped.items() if why}


def _read(path: str, header: list[str], header_line: int, threads: bool) -> tuple[pa.Table, dict]:
    skipped: dict = {}

    def invalid(row) -> str:
        why = f"{row.actual_columns} fields where the header has {row.expected_columns}" if row.text.strip() else ""
        skipped[row.number] = why
        return "skip"

    names = [f"c{k}" for k in range(len(header))]
    try:
        table = pv.read_csv(path, read_options=pv.ReadOptions(use_threads=threads, column_names=names,
                                                              skip_rows=header_line, encoding="utf8"),
                            parse_options=pv.ParseOptions(invalid_row_handler=invalid, ignore_empty_lines=False,
                                                          quote_char=False),
                            convert_options=pv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                              strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        if "utf8" not in str(exc).lower():
            raise TelemetryError(path, None, f"not readable as CSV: {exc}") from None
        # a process name in another encoding: read the text with the odd bytes replaced
        skipped.clear()
        with open(path, "rb") as fh:
            text = io.BytesIO(fh.read().decode("utf-8", "replace").encode("utf-8"))
        table = pv.read_csv(text, read_options=pv.ReadOptions(use_threads=threads, column_names=names,
                                                              skip_rows=header_line),
                            parse_options=pv.ParseOptions(invalid_row_handler=invalid, ignore_empty_lines=False,
                                                          quote_char=False),
                            convert_options=pv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                              strings_can_be_null=False, quoted_strings_can_be_null=False))
    except OSError as exc:
        raise TelemetryError(path, None, f"cannot read: {exc}") from None
    return table, skipped


class _Rows:
    """Text columns parsed into values, remembering the rows that failed and why."""

    def __init__(self, path: str, table: pa.Table, lines: np.ndarray, skipped: dict[int, str]):
        self.path, self.table, self.lines = path, table, lines
        self.failed = np.zeros(len(lines), bool)
        self.why: dict[int, str] = dict(skipped)  # line -> reason
        self.skipped = len(skipped)

    def _text(self, k: int) -> pa.Array:
        return pc.utf8_trim_whitespace(self.table.column(k).combine_chunks())  # (an Array: no pandas)

    def _fail(self, bad: np.ndarray, reason: str) -> None:
        for line in self.lines[bad][:MAX_NAMED].tolist():
            self.why.setdefault(line, reason)
        self.failed |= bad

    def _unavailable(self, text: pa.Array) -> np.ndarray:
        return pc.match_substring_regex(text, r"^(\[.*\]|N/A|)$").to_numpy(zero_copy_only=False)

    def number(self, k: int, col: str) -> np.ndarray:
        text = self._text(k)
        m = pc.extract_regex(text, _NUMBER)
        matched = pc.is_valid(m).to_numpy(zero_copy_only=False)
        value = pc.cast(pc.struct_field(m, "value"), pa.float64()).to_numpy(zero_copy_only=False)
        unit = pc.struct_field(m, "unit").to_numpy(zero_copy_only=False)
        factor = np.full(len(text), np.nan)
        for u, f in {**UNITS[col], "": 1.0}.items():
            factor[unit == u] = f
        known_unit = ~np.isnan(factor)
        self._fail(~self._unavailable(text) & ~(matched & known_unit),
                   f"field {k + 1}: not a number in {'/'.join(UNITS[col])}")
        return np.where(matched & known_unit, value * factor, np.nan)

    def integer(self, k: int, most: int) -> np.ndarray:
        text = self._text(k)
        ok = pc.match_substring_regex(text, r"^\d{1,10}$").to_numpy(zero_copy_only=False)
        out = np.full(len(text), -1, np.int64)
        out[ok] = pc.cast(text.filter(pa.array(ok)), pa.int64()).to_numpy()
        ok &= out <= most
        out[~ok] = -1
        self._fail(~ok, f"field {k + 1}: not an integer up to {most}")
        return out

    def text(self, k: int) -> np.ndarray:
        text = self._text(k)
        out = np.asarray(text.to_pylist(), dtype=object)
        out[self._unavailable(text)] = None
        return out

    def times(self, k: int, zone: str) -> np.ndarray:
        text = self._text(k)
        m = pc.extract_regex(text, _TIME)
        ok = pc.is_valid(m).to_numpy(zero_copy_only=False)
        self._fail(~ok, f"field {k + 1}: not a timestamp like 2026/11/02 09:00:01.123")
        out = np.zeros(len(text), np.int64)
        if ok.any():
            m = m.filter(pa.array(ok))
            seconds = pc.strptime(pc.struct_field(m, "date"), format="%Y/%m/%d %H:%M:%S", unit="s",
                                  error_is_null=True)
            frac = pc.utf8_rpad(pc.if_else(pc.equal(pc.struct_field(m, "frac"), ""), "0",
                                           pc.struct_field(m, "frac")), 9, "0")
            # strptime takes 2026/02/30 for March 2: a date must read back as it was written
            again = pc.strftime(pc.fill_null(seconds, 0), format="%Y/%m/%d %H:%M:%S")
            valid = pc.and_(pc.is_valid(seconds), pc.equal(again, pc.struct_field(m, "date")))
            valid = pc.fill_null(valid, False).to_numpy(zero_copy_only=False)
            naive = (pc.cast(pc.fill_null(seconds, 0), pa.int64()).to_numpy() * 10**9
                     + pc.cast(frac, pa.int64()).to_numpy())
            idx = np.flatnonzero(ok)
            self._fail(np.isin(np.arange(len(text)), idx[~valid]), f"field {k + 1}: not a valid date")
            out[idx] = to_utc(naive, zone)
        return out

    def keep(self, samples):
        """``samples`` (columns of these rows) without the rows that failed."""
        return samples if not self.failed.any() else take(samples, np.flatnonzero(~self.failed))

    def bad_count(self) -> int:
        return int(self.failed.sum()) + self.skipped

    def named_problems(self) -> list[str]:
        return [f"{self.path}: line {line}: {why}" for line, why in sorted(self.why.items())[:MAX_NAMED]]


def to_utc(naive_ns: np.ndarray, zone: str) -> np.ndarray:
    """Local wall-clock times (ns as if UTC) in ``zone`` to UTC; ambiguous times (the hour a
    clock goes back) take the first of the two, as ``fold=0`` does."""
    if zone in ("UTC", "Etc/UTC", "Z"):
        return naive_ns
    tz = ZoneInfo(zone)
    hour = 3600 * 10**9
    hours, inverse = np.unique(naive_ns // hour, return_inverse=True)
    offsets = np.array([int(dt.datetime.fromtimestamp(int(h) * 3600, dt.UTC).replace(tzinfo=tz)
                            .utcoffset().total_seconds()) for h in hours.tolist()], np.int64)
    return naive_ns - offsets[inverse.ravel()] * 10**9
