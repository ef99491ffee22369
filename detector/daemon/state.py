"""The daemon's state: one SQLite database in WAL mode, written in transactions.

It holds the progress through rotating capture files, the detectors' pins (ARP bindings, SSH
host keys, TLS certificates, peer hop counts), the alert gate (which incidents went out), the
site model as it learns online (in :mod:`models.store`'s format, digest and signature
included), and alerts not yet delivered to every sink (an outbox). WAL with ``synchronous=FULL``
makes each commit durable; a crash or ``kill -9`` loses at most what was not committed (the
last batch's updates) and never leaves a corrupt database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time

from detector.errors import DetectorError

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT NOT NULL, inode INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    packets INTEGER NOT NULL, error TEXT, done_at REAL NOT NULL, PRIMARY KEY (path, inode));
CREATE TABLE IF NOT EXISTS pins (detector TEXT PRIMARY KEY, pins TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (key TEXT PRIMARY KEY, rank INTEGER NOT NULL, ts_end_ns INTEGER NOT NULL,
    sent_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS model (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL, saved_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS zeek (path TEXT PRIMARY KEY, inode INTEGER NOT NULL, offset INTEGER NOT NULL);
"""


class StateError(DetectorError):
    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


class State:
    def __init__(self, path: str):
        self.path = path
        try:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            ok = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StateError(path, f"the state database is damaged ({ok}); move it aside to start afresh")
            self.db.executescript(SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StateError(path, f"state schema {row[0]} is not this version's ({SCHEMA_VERSION})")
        except sqlite3.DatabaseError as exc:
            raise StateError(path, f"cannot use the state database: {exc}") from None
        except OSError as exc:
            raise StateError(path, f"cannot create the state database: {exc.strerror}") from None

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def transaction(self):
        """``with state.transaction() as db:`` commits everything in the block at once."""
        return _Tx(self.db)

    # -- rotating files ------------------------------------------------------------------------
    def file_done(self, path: str, inode: int, size: int, mtime_ns: int) -> bool:
        """Whether this file (the same name, inode, size and time: a ring buffer reuses names and
        the file system reuses inodes) was processed."""
        return self.db.execute("SELECT 1 FROM files WHERE path=? AND inode=? AND size=? AND mtime_ns=?",
                               (path, inode, size, mtime_ns)).fetchone() is not None

    def mark_file(self, db, path: str, inode: int, size: int, mtime_ns: int, packets: int, error: str | None) -> None:
        db.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?)",
                   (path, inode, size, mtime_ns, packets, error, time.time()))

    def files(self) -> list[tuple]:
        return self.db.execute("SELECT path, inode, size, packets, error FROM files ORDER BY done_at").fetchall()

    def forget_files_except(self, db, keep: set[tuple[str, int]]) -> int:
        """Files gone from the folder (a ring buffer deleted them) need no record."""
        gone = [row for row in db.execute("SELECT path, inode FROM files").fetchall() if tuple(row) not in keep]
        db.executemany("DELETE FROM files WHERE path=? AND inode=?", gone)
        return len(gone)

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, db, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- Zeek log positions ----------------------------------------------------------------------
    def zeek_offset(self, path: str) -> tuple[int, int] | None:
        row = self.db.execute("SELECT inode, offset FROM zeek WHERE path=?", (path,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def set_zeek_offset(self, db, path: str, inode: int, offset: int) -> None:
        db.execute("INSERT OR REPLACE INTO zeek VALUES (?,?,?)", (path, inode, offset))

    # -- pins, incidents ---------------------------------------------------------------------------
    def pins(self) -> dict[str, dict]:
        return {name: json.loads(text) for name, text in self.db.execute("SELECT detector, pins FROM pins")}

    def save_pins(self, db, pins: dict[str, dict]) -> None:
        for name, value in pins.items():
            db.execute("INSERT OR REPLACE INTO pins VALUES (?,?)", (name, json.dumps(value, sort_keys=True)))

    def incidents(self) -> list[tuple]:
        return self.db.execute("SELECT key, rank, ts_end_ns, sent_ns FROM incidents").fetchall()

    def save_incidents(self, db, rows, forgotten=()) -> None:
        db.executemany("INSERT OR REPLACE INTO incidents VALUES (?,?,?,?)", rows)
        db.executemany("DELETE FROM incidents WHERE key = ?", [(k,) for k in forgotten])

    # -- outbox ------------------------------------------------------------------------------------
    def queue_alerts(self, db, lines: list[str]) -> None:
        db.executemany("INSERT INTO outbox (alert) VALUES (?)", [(x,) for x in lines])

    def pending_alerts(self, after_id: int = 0, limit: int = 10_000) -> list[tuple[int, str]]:
        """Queued alerts after ``after_id`` (a sink's progress), oldest first."""
        return self.db.execute("SELECT id, alert FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                               (after_id, limit)).fetchall()

    def outbox_size(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def sink_progress(self, name: str) -> int:
        """The last outbox id delivered to the sink ``name``."""
        return int(self.meta(f"sink:{name}") or 0)

    def set_sink_progress(self, db, name: str, upto: int) -> None:
        self.set_meta(db, f"sink:{name}", str(upto))

    # -- the site model ----------------------------------------------------------------------------
    def save_model(self, db, model, key: bytes | None) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".model-", dir=os.path.dirname(os.path.abspath(self.path)))
        os.close(fd)
        try:
            model.save(tmp, key)
            with open(tmp, "rb") as fh:
                data = fh.read()
        finally:
            os.unlink(tmp)
        db.execute("INSERT OR REPLACE INTO model VALUES (1, ?, ?)", (data, time.time()))

    def load_model(self, key: bytes | None):
        """The model as last saved, verified like any model file (digest, signature), or None."""
        row = self.db.execute("SELECT data FROM model WHERE id=1").fetchone()
        if row is None:
            return None
        from detector.baseline.site_model import SiteModel

        fd, tmp = tempfile.mkstemp(prefix=".model-", dir=os.path.dirname(os.path.abspath(self.path)))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(row[0])
            return SiteModel.load(tmp, key)
        finally:
            os.unlink(tmp)

    def integrity(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError:
            pass
        self.db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
