"""Which job held which GPU when: the scheduler's allocations.

From Slurm's JSON (:mod:`detector.telemetry.slurm`) or, at sites without Slurm, from a map
file (``[site] gpu_allocations``), one allocation per line, fields separated by white space::

    # host         gpus    start                  end                    job
    cn0012         0-1,3   2026-11-02T08:00:00Z   2026-11-02T10:00:00Z   81234
    cn[0013-0016]  *       2026-11-02T08:00:00    -                      81235
    cn0020         n=2     1793606400             1793613600             81236

- host: a name or a Slurm host list;
- gpus: indices (``0-1,3``), ``*`` for every GPU of the host, or ``n=K`` for K GPUs whose
  indices are not known (what ``sacct`` gives);
- start and end: ISO 8601 (without a zone: the site's ``timezone``) or Unix seconds; ``-`` for
  an end not reached (the job still runs);
- job: the job id, a number, as cgroups name it (``SLURM_JOB_ID``: an array task's own id).
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import NamedTuple
from zoneinfo import ZoneInfo

from detector.errors import TelemetryError
from detector.telemetry.hostlist import expand
from detector.telemetry.samples import epoch_ns

OPEN_END = 2**62  # an allocation still running


class Allocation(NamedTuple):
    host: str
    gpus: tuple[int, ...] | None  # None: indices unknown (see count) or every GPU (count -1)
    count: int  # GPUs held when indices are unknown; -1 for every GPU of the host
    start_ns: int
    end_ns: int
    job: int
    label: str = ""  # how the scheduler names it: "81234", "81230_4" (array task), "81240+1" (het part)

    @property
    def every_gpu(self) -> bool:
        return self.gpus is None and self.count < 0


def parse_indices(text: str) -> tuple[int, ...]:
    """``0-1,3`` to (0, 1, 3); ValueError when it is not that."""
    out: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"not GPU indices: {text!r}")
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a or b > 4095:
            raise ValueError(f"not GPU indices: {text!r}")
        out.extend(range(a, b + 1))
    return tuple(sorted(set(out)))


def parse_time(text: str, zone: str) -> int:
    """ISO 8601 or Unix seconds to ns; a time without a zone is in ``zone``."""
    if text.replace(".", "", 1).isdigit():
        return int(decimal.Decimal(text) * 10**9)
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(zone))
    return epoch_ns(t)


def read_map(path: str, zone: str = "UTC") -> list[Allocation]:
    """The allocations of a map file (see the module's description); a line that does not
    parse is an error naming it: a map is written by hand, and a wrong one must not pass."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise TelemetryError(path, None, f"cannot read the GPU allocation map: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TelemetryError(path, None, f"not UTF-8 text: byte {exc.start}") from None
    out: list[Allocation] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 5:
            raise TelemetryError(path, number, f"expected 5 fields (host gpus start end job), found {len(fields)}")
        hosts, gpus, start, end, job = fields
        try:
            names = expand(hosts)
            if gpus == "*":
                indices, count = None, -1
            elif gpus.startswith("n=") and gpus[2:].isdigit():
                indices, count = None, int(gpus[2:])
            else:
                indices = parse_indices(gpus)
                count = len(indices)
            t0 = parse_time(start, zone)
            t1 = OPEN_END if end == "-" else parse_time(end, zone)
            if not job.isdigit():
                raise ValueError(f"job {job!r}: the job id as cgroups name it (SLURM_JOB_ID: an array task's own "
                                 "id, not 81230_4)")
            job_id = int(job)
        except (ValueError, KeyError) as exc:
            raise TelemetryError(path, number, str(exc)) from None
        if t1 < t0:
            raise TelemetryError(path, number, "the allocation ends before it starts")
        out.extend(Allocation(h, indices, count, t0, t1, job_id, job) for h in names)
    return out
