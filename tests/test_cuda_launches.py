"""Under the CUDA simulator: the engine launches each kernel with exactly the argument types it is
registered with (what the compile check compiles and ``detector aot`` caches), and nothing is cached.

Run with ``NUMBA_ENABLE_CUDASIM=1 NUMBA_DISABLE_JIT=1 pytest -m cudasim`` (``make test`` does).
"""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import numba
import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from detector.backend import select_backend
from detector.config import FlowConfig
from detector.pipeline.flows_job import run_flows
from tests import flow_cases as fc
from tests.capture_files import Rec, pcap_bytes
from tests.test_cudasim import T0, mixed_frames

pytestmark = pytest.mark.cudasim


@pytest.fixture(autouse=True)
def _simulator_only():
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"):
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before Numba is imported (make test runs these)")


class Recorder:
    """A kernel that notes the Numba types of the arguments of each launch."""

    def __init__(self, kernel, seen: set):
        self.kernel, self.seen = kernel, seen

    def __getitem__(self, config):
        launch = self.kernel[config]

        def call(*args):
            self.seen.add(tuple(numba.typeof(a) for a in args))
            return launch(*args)

        return call


def every_launch_path(tmp_path):
    """Fragments, expiry, eviction and the final flush."""
    recs = [Rec(T0 + k * 1000, f) for k, f in enumerate(mixed_frames())]
    recs += [Rec(T0 + 10**6 + k * 10**8, bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") /
                                                UDP(sport=10000 + k % 60, dport=53) / b"q")) for k in range(240)]
    path = tmp_path / "launches.pcap"
    path.write_bytes(pcap_bytes(recs))
    return path


def walked_path(tmp_path):
    """A segment the scans leave to the walk (sequence numbers going back 1.5 GB twice)."""
    t = fc.T0 + np.arange(4, dtype=np.int64) * 1000
    seq = np.array([3_500_000_000, 2_000_000_000, 500_000_000, 600_000_000], dtype=np.uint64)
    path = tmp_path / "walked.pcap"
    path.write_bytes(fc.capture(fc.spec(t, fc.A, fc.B, 40000, 80, flags=fc.ACK | fc.PSH, seq=seq, payload=100)))
    return path


def test_engine_launches_kernels_with_their_registered_types(tmp_path, monkeypatch):
    from kernels import cuda_kernels
    from kernels.cuda_registry import registered

    built = cuda_kernels.kernels()
    seen: dict[str, set] = {name: set() for name in vars(built)}
    recording = SimpleNamespace(**{name: Recorder(k, seen[name]) for name, k in vars(built).items()})
    monkeypatch.setattr(cuda_kernels, "kernels", lambda: recording)
    from detector.flows import gpu_engine

    monkeypatch.setattr(gpu_engine, "SIMULATOR_SCAN_KERNELS", True)  # the scans' kernels launched too

    cfg = dataclasses.replace(FlowConfig(), max_flows=16, batch_size=256, udp_idle_timeout=5.0)
    result = run_flows([str(every_launch_path(tmp_path)), str(walked_path(tmp_path))], str(tmp_path / "f.parquet"), "parquet", cfg,
                       progress=False, backend=select_backend("gpu"))
    assert result.summary["evicted_flows"] > 0
    # analyze also picks the packets the L7 tap needs on the device (classify)
    from detector.config import Config
    from detector.pipeline.analyze_job import run_analyze

    run_analyze([str(every_launch_path(tmp_path))], dataclasses.replace(Config(), flows=cfg), None, progress=False,
                backend=select_backend("gpu"))

    expected = {e.name.rsplit(".", 1)[1]: {tuple(numba.typeof(v) for v in e.example())}
                for e in registered() if e.name.startswith("kernels.cuda_kernels.")}
    assert set(expected) == set(seen), "every kernel of kernels() is registered"
    for name, types in seen.items():
        assert types == expected[name], f"{name}: launched with {types}, registered {expected[name]}"


def test_simulator_compiles_nothing_and_caches_nothing(monkeypatch):
    from kernels import cuda_cache, cuda_kernels

    def no_cache(*args):
        raise AssertionError("the simulator asked for a kernel cache folder")

    monkeypatch.setattr(cuda_cache, "cache_folder", no_cache)
    built = cuda_kernels._build()
    assert cuda_cache._device_cc() is None
    assert all(type(k).__module__.startswith("numba.cuda.simulator") for k in vars(built).values())
