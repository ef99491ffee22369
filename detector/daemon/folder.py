"""A folder of rotating captures, as ``tcpdump -G``/``-C`` or a dumpcap ring buffer writes
them: each file is processed once it is complete, oldest first, and what was processed is
remembered in the state database, so a restart neither counts a file twice nor skips one.

A file is complete when a newer one exists in the folder (the writer moved on), or, with
``settle_s``, when it has not changed for that long (the writer stopped). Files are ordered by
modification time, then name (``tcpdump -C`` names ``f``, ``f1``, ..., ``f10`` do not sort as
text). A file is known by its name, inode, size and modification time: a ring buffer that
reuses a name writes a new file.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass

from detector.daemon.state import State


@dataclass(frozen=True)
class CaptureFile:
    path: str
    inode: int
    size: int
    mtime_ns: int


class RotatingFolder:
    def __init__(self, folder: str, pattern: str, state: State, settle_s: float = 0.0):
        self.folder, self.pattern, self.state, self.settle_s = folder, pattern, state, settle_s

    def listing(self) -> list[CaptureFile]:
        out = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []
        for e in entries:
            if not fnmatch.fnmatch(e.name, self.pattern) or e.name.startswith("."):
                continue
            try:
                st = e.stat()
            except OSError:
                continue  # deleted meanwhile (a ring buffer turning over)
            if e.is_file():
                out.append(CaptureFile(e.path, st.st_ino, st.st_size, st.st_mtime_ns))
        out.sort(key=lambda f: (f.mtime_ns, _natural(os.path.basename(f.path))))
        return out

    def ready(self, now_s: float | None = None, listing: list[CaptureFile] | None = None) -> list[CaptureFile]:
        """The complete files not processed yet, oldest first."""
        files = self.listing() if listing is None else listing
        if not files:
            return []
        now_s = time.time() if now_s is None else now_s
        newest = files[-1]
        complete = files[:-1]
        if self.settle_s > 0 and now_s - newest.mtime_ns / 1e9 >= self.settle_s:
            complete.append(newest)
        return [f for f in complete if not self.state.file_done(f.path, f.inode, f.size, f.mtime_ns)]


def _natural(name: str) -> tuple:
    """``f2`` before ``f10``."""
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
