"""Flow record writers: Parquet (default), CSV, and Zeek's conn.log TSV.

Writers buffer record batches and write them in row groups of ``ROW_GROUP`` rows; ``close``
writes what is buffered, so an input error later in a run never loses finished records.
Write failures (a full disk, a missing folder) become :class:`OutputError` naming the file.
"""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa

from detector.errors import OutputError
from detector.flows.records import FLOW_SCHEMA

ROW_GROUP = 65536
FORMATS = ("parquet", "csv", "zeek")

ZEEK_FIELDS = (
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"),
    ("id.resp_h", "addr"), ("id.resp_p", "port"), ("proto", "enum"), ("service", "string"),
    ("duration", "interval"), ("orig_bytes", "count"), ("resp_bytes", "count"),
    ("conn_state", "string"), ("local_orig", "bool"), ("local_resp", "bool"),
    ("missed_bytes", "count"), ("history", "string"), ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"), ("resp_pkts", "count"), ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"), ("community_id", "string"),
)


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded to strings, for text formats."""
    cols = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.table(cols, names=table.column_names)


class _Writer:
    def __init__(self, path: str):
        self.path = path
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self.rows_written = 0
        self._closed = False
        try:
            self._open()
        except OSError as exc:
            raise OutputError(path, f"cannot create: {exc.strerror or exc}") from None

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=FLOW_SCHEMA)
        self._pending, self._rows = [], 0
        try:
            self._write_table(table)
        except OSError as exc:
            raise OutputError(self.path, f"write failed: {exc.strerror or exc}") from None
        self.rows_written += table.num_rows

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
        finally:
            try:
                self._close()
            except OSError as exc:
                raise OutputError(self.path, f"write failed: {exc.strerror or exc}") from None

    def _open(self) -> None:
        raise NotImplementedError

    def _write_table(self, table: pa.Table) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class ParquetFlowWriter(_Writer):
    def _open(self) -> None:
        import pyarrow.parquet as pq

        # dictionary-encode only the low-cardinality text columns: uids and addresses gain
        # nothing from it and it doubles the write time
        self._w = pq.ParquetWriter(self.path, FLOW_SCHEMA, compression="snappy",
                                   use_dictionary=["proto", "conn_state", "end_reason", "service", "history"])

    def _write_table(self, table: pa.Table) -> None:
        self._w.write_table(table, row_group_size=ROW_GROUP)

    def _close(self) -> None:
        self._w.close()


class CsvFlowWriter(_Writer):
    def _open(self) -> None:
        import pyarrow.csv as pcsv

        self._pcsv = pcsv
        self._fh = open(self.path, "wb")
        self._w = None

    def _write_table(self, table: pa.Table) -> None:
        table = _plain(table)
        if self._w is None:
            self._w = self._pcsv.CSVWriter(self._fh, table.schema)
        self._w.write_table(table)

    def _close(self) -> None:
        if self._w is None:  # no flows: still write the header
            self._w = self._pcsv.CSVWriter(self._fh, _plain(FLOW_SCHEMA.empty_table()).schema)
        self._w.close()
        self._fh.close()


def _epoch_text(ns: pa.Array) -> pa.Array:
    """Seconds since the epoch with six decimals, as Zeek writes ``time`` values."""
    import pyarrow.compute as pc  # here, not at the top: it costs 0.08 s of every start-up

    us = pc.divide(ns, 1000)
    sec = pc.divide(us, 1_000_000)
    frac = pc.subtract(us, pc.multiply(sec, 1_000_000))
    return pc.binary_join_element_wise(sec.cast(pa.string()),
                                       pc.utf8_lpad(frac.cast(pa.string()), 6, "0"), ".")


class ZeekConnWriter(_Writer):
    """Zeek conn.log TSV with its header lines, readable by zeek-cut and RITA."""

    def _open(self) -> None:
        self._fh = open(self.path, "w", encoding="utf-8", newline="\n")
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d-%H-%M-%S")
        self._fh.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
                       f"#path\tconn\n#open\t{now}\n")
        self._fh.write("#fields\t" + "\t".join(f for f, _ in ZEEK_FIELDS) + "\n")
        self._fh.write("#types\t" + "\t".join(t for _, t in ZEEK_FIELDS) + "\n")

    def _write_table(self, t: pa.Table) -> None:
        import pyarrow.compute as pc

        t = _plain(t)
        n = t.num_rows
        unset = pa.scalar("-")
        dur = t["duration"]
        has_dur = pc.greater(dur, 0.0)
        dur_ns = pc.cast(pc.round(pc.multiply(dur, 1e9)), pa.int64())

        def text(col):
            return pc.fill_null(pc.cast(col, pa.string()), unset)

        def when(cond, col):
            return pc.if_else(cond, text(col), unset)

        def boolean(col):
            return pc.fill_null(pc.if_else(col, "T", "F"), unset)

        ts_ns = pc.cast(t["ts"], pa.int64())
        history = pc.if_else(pc.equal(pc.utf8_length(t["history"]), 0), unset, t["history"])
        cols = [
            _epoch_text(ts_ns), t["uid"], t["orig_h"], text(t["orig_p"]), t["resp_h"], text(t["resp_p"]),
            t["proto"], text(t["service"]), pc.if_else(has_dur, _epoch_text(dur_ns), unset),
            when(has_dur, t["orig_bytes"]), when(has_dur, t["resp_bytes"]), t["conn_state"],
            boolean(t["local_orig"]), boolean(t["local_resp"]), pa.repeat("-", n),
            history, text(t["orig_pkts"]), text(t["orig_ip_bytes"]), text(t["resp_pkts"]),
            text(t["resp_ip_bytes"]), pa.repeat("-", n), t["community_id"],
        ]
        lines = pc.binary_join_element_wise(*cols, "\t")
        self._fh.write("\n".join(lines.to_pylist()))
        self._fh.write("\n")

    def _close(self) -> None:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d-%H-%M-%S")
        self._fh.write(f"#close\t{now}\n")
        self._fh.close()


class PartitionedParquetWriter(_Writer):
    """A Parquet dataset in a folder, partitioned by the flows' UTC start date and hour
    (``date=2026-11-02/hour=08/part-....parquet``, Hive-style: DuckDB's ``read_parquet(...,
    hive_partitioning = true)``, ``pyarrow.dataset``/pandas and Spark read it as is). A part file
    is written under a temporary name and renamed when complete, so a reader (or a crash) never
    sees half a file; partitions two hours behind the newest flow are closed as the run goes."""

    KEEP_OPEN_NS = 2 * 3600 * 10**9

    def _open(self) -> None:
        os.makedirs(self.path, exist_ok=True)
        self._run = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self._open_parts: dict[tuple[str, str], tuple] = {}  # (date, hour) -> (writer, tmp, final, hour start)
        self._count = 0
        self.files: list[str] = []

    def _writer_for(self, date: str, hour: str, start_ns: int):
        import pyarrow.parquet as pq

        key = (date, hour)
        if key not in self._open_parts:
            folder = os.path.join(self.path, f"date={date}", f"hour={hour}")
            os.makedirs(folder, exist_ok=True)
            self._count += 1
            final = os.path.join(folder, f"part-{self._run}-{self._count:05d}.parquet")
            tmp = os.path.join(folder, f".{os.path.basename(final)}.tmp")
            w = pq.ParquetWriter(tmp, FLOW_SCHEMA, compression="snappy",
                                 use_dictionary=["proto", "conn_state", "end_reason", "service", "history"])
            self._open_parts[key] = (w, tmp, final, start_ns)
        return self._open_parts[key][0]

    def _write_table(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        ts = pc.cast(table["ts"], pa.int64())
        hours = pc.divide(ts, 3600 * 10**9)
        for h in pc.unique(hours).to_pylist():
            part = table.filter(pc.equal(hours, h))
            start = dt.datetime.fromtimestamp(h * 3600, dt.timezone.utc)
            self._writer_for(start.strftime("%Y-%m-%d"), start.strftime("%H"), h * 3600 * 10**9).write_table(
                part, row_group_size=ROW_GROUP)
        newest = pc.max(ts).as_py()
        for key, (_, _, _, start) in list(self._open_parts.items()):
            if newest is not None and start + 3600 * 10**9 + self.KEEP_OPEN_NS < newest:
                self._finish(key)

    def _finish(self, key) -> None:
        w, tmp, final, _ = self._open_parts.pop(key)
        w.close()
        os.replace(tmp, final)
        self.files.append(final)

    def _close(self) -> None:
        error = None
        for key in list(self._open_parts):
            try:
                self._finish(key)
            except OSError as exc:  # finish the others; report the first failure
                error = error or exc
        if error is not None:
            raise error


def is_dataset_path(path: str) -> bool:
    """A flows output that names a folder (existing, or ending with a slash) is a dataset."""
    return path.endswith(("/", os.sep)) or os.path.isdir(path)


def open_flow_writer(path: str, fmt: str) -> _Writer:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if is_dataset_path(path):
        if fmt != "parquet":
            raise OutputError(path, "a folder takes a partitioned Parquet dataset; name a file for CSV or Zeek")
        parent = os.path.dirname(os.path.abspath(path.rstrip("/" + os.sep)))
        if not os.path.isdir(parent):
            raise OutputError(path, f"folder {parent} does not exist")
        return PartitionedParquetWriter(path.rstrip("/" + os.sep) or path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(path, f"folder {parent} does not exist")
    return {"parquet": ParquetFlowWriter, "csv": CsvFlowWriter, "zeek": ZeekConnWriter}[fmt](path)
