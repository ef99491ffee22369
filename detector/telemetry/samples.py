"""Telemetry as columns: GPU samples and compute-process samples, one row per reading.

Hosts are small integer ids into :attr:`Telemetry.hosts`; a GPU is (host, index). Readings a
tool could not take (``[N/A]``, ``[Not Supported]``) are NaN, never zero: an idle GPU and an
unreadable one must not look alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

NO_JOB = -1  # the process is in no Slurm job (its cgroup is known and names none)
UNKNOWN_JOB = -2  # its cgroup was not read (nvidia-smi logs do not give it)
MAX_GPU = 4095  # GPU indices are int16 columns
MAX_PID = 2**31 - 1


class GpuSamples(NamedTuple):
    host: np.ndarray  # int32 id into Telemetry.hosts
    gpu: np.ndarray  # int16 index on the host; -1 when only the UUID is known
    uuid: np.ndarray  # object: str or None
    ts_ns: np.ndarray  # int64, UTC
    util: np.ndarray  # float64 SM utilisation, percent
    mem_util: np.ndarray  # memory-controller utilisation, percent
    mem_used_mib: np.ndarray
    power_w: np.ndarray
    sm_mhz: np.ndarray
    mem_mhz: np.ndarray
    pcie_tx_kbs: np.ndarray  # PCIe throughput, KB/s (NVML, DCGM; nvidia-smi's CSV does not give it)
    pcie_rx_kbs: np.ndarray

    @classmethod
    def empty(cls) -> GpuSamples:
        return cls.of(np.empty(0, np.int32), np.empty(0, np.int16), np.empty(0, object), np.empty(0, np.int64), {})

    @classmethod
    def of(cls, host, gpu, uuid, ts_ns, readings: dict) -> GpuSamples:
        """Samples with the ``READINGS`` given (arrays by name); the others are NaN."""
        n = len(ts_ns)
        return cls(np.asarray(host, np.int32), np.asarray(gpu, np.int16), np.asarray(uuid, object),
                   np.asarray(ts_ns, np.int64),
                   *(np.asarray(readings[k], float) if k in readings else np.full(n, np.nan) for k in READINGS))


READINGS = GpuSamples._fields[4:]  # util ... pcie_rx_kbs: what a GPU sample measures


class ProcessSamples(NamedTuple):
    host: np.ndarray  # int32
    gpu: np.ndarray  # int16, -1 when only the UUID is known
    uuid: np.ndarray  # object
    ts_ns: np.ndarray  # int64
    pid: np.ndarray  # int64
    name: np.ndarray  # object: the command
    used_mib: np.ndarray  # float64
    job: np.ndarray  # int64 Slurm job id, or NO_JOB / UNKNOWN_JOB

    @classmethod
    def empty(cls) -> ProcessSamples:
        return cls(np.empty(0, np.int32), np.empty(0, np.int16), np.empty(0, object), np.empty(0, np.int64),
                   np.empty(0, np.int64), np.empty(0, object), np.empty(0), np.empty(0, np.int64))


def epoch_ns(t: dt.datetime) -> int:
    """An aware datetime as integer ns since the epoch (exactly: no float on the way)."""
    return (t - _EPOCH) // dt.timedelta(microseconds=1) * 1000


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def concat(parts: list, empty):
    """The rows of ``parts`` (NamedTuples of arrays of one type) as one."""
    if not parts:
        return empty
    return type(empty)(*(np.concatenate(cols) for cols in zip(*parts)))


def take(samples, rows: np.ndarray):
    return type(samples)(*(col[rows] for col in samples))


@dataclass
class Telemetry:
    """Everything read: samples of every host, and the lines that could not be used."""

    hosts: list[str] = field(default_factory=list)
    gpu_parts: list[GpuSamples] = field(default_factory=list)
    process_parts: list[ProcessSamples] = field(default_factory=list)
    bad_lines: int = 0
    problems: list[str] = field(default_factory=list)  # "FILE: line N: why", the first few per file
    _ids: dict[str, int] = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def host_id(self, name: str) -> int:
        if len(self._ids) != len(self.hosts):  # (hosts given to the constructor)
            self._ids = {h: k for k, h in enumerate(self.hosts)}
        k = self._ids.get(name)
        if k is None:
            k = self._ids[name] = len(self.hosts)
            self.hosts.append(name)
        return k

    def rename(self, names: dict[str, str]) -> None:
        """Call hosts by other names (a log given as ``@10.10.100.12`` is node cn0012, as Slurm
        knows it); two names that become one are one host."""
        if not any(h in names for h in self.hosts):
            return
        old, self.hosts, self._ids = self.hosts, [], {}
        new_id = np.array([self.host_id(names.get(h, h)) for h in old], np.int32)
        self.gpu_parts = [p._replace(host=new_id[p.host]) for p in self.gpu_parts]
        self.process_parts = [p._replace(host=new_id[p.host]) for p in self.process_parts]
        self._cache.clear()

    @property
    def gpus(self) -> GpuSamples:
        """Every GPU sample (concatenated once, until parts are added)."""
        return self._cached("gpus", self.gpu_parts, GpuSamples.empty())

    @property
    def processes(self) -> ProcessSamples:
        return self._cached("processes", self.process_parts, ProcessSamples.empty())

    def _cached(self, key: str, parts: list, empty):
        stamp = (len(self.gpu_parts), len(self.process_parts), tuple(map(id, parts)))
        hit = self._cache.get(key)
        if hit is None or hit[0] != stamp:
            hit = self._cache[key] = (stamp, _indexed(concat(parts, empty), self._uuid_index()))
        return hit[1]

    def _uuid_index(self) -> dict[tuple[int, str], int]:
        """(host, UUID) -> index, from the GPU logs that give both (process logs give UUIDs)."""
        found: dict[tuple[int, str], int] = {}
        for part in self.gpu_parts:
            known = np.flatnonzero((part.gpu >= 0) & (part.uuid != None))
            if not len(known):
                continue
            # one row per (GPU, UUID) pair: a UUID's rows repeat every sample
            key = part.host[known].astype(np.int64) << 16 | part.gpu[known].astype(np.int64)
            _, first = np.unique(key, return_index=True)
            for r in known[first].tolist():
                found[(int(part.host[r]), part.uuid[r])] = int(part.gpu[r])
        return found


def _indexed(samples, index: dict):
    """``samples`` with the GPU index filled in from ``index`` where only the UUID was known."""
    missing = np.flatnonzero(samples.gpu < 0)
    if not len(missing) or not index:
        return samples
    gpu = samples.gpu.copy()
    gpu[missing] = [index.get((h, u), -1) for h, u in zip(samples.host[missing].tolist(),
                                                          samples.uuid[missing].tolist())]
    return samples._replace(gpu=gpu)
