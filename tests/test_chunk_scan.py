"""Segmented scans in a fixed number of launches (kernels.chunk_scan) equal the array version
(kernels.seg_scan.scan): its steps compiled for the CPU on random segmentations, its CUDA
kernels under Numba's simulator, and the GPU engine using them gives the CPU's flows."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import chunk_scan as cs
from kernels import seg_scan as ss

cases = st.tuples(st.integers(0, 2500), st.sampled_from([0.0, 0.002, 0.05, 0.5]), st.integers(0, 2**32),
                  st.booleans())


def random_case(n, p, seed, first_head):
    rng = np.random.default_rng(seed)
    heads = rng.random(n) < p
    if n:
        heads[0] = first_head
    return rng.integers(-2**50, 2**50, n), heads


@settings(max_examples=60, deadline=None)
@given(cases)
def test_chunk_steps_equal_the_array_scan(case):
    values, heads = random_case(*case)
    for op, code in cs.OP_CODES.items():
        want = ss.scan(np, values, heads, op)
        assert np.array_equal(cs.scan_levels(np, cs.HostScan(), values, heads, code), want), op


def test_launches_do_not_depend_on_the_number_of_elements():
    class Counting(cs.HostScan):
        launches = 0

        def chunks(self, *a):
            Counting.launches += 1
            super().chunks(*a)

        def carry(self, *a):
            Counting.launches += 1
            super().carry(*a)

    seen = set()
    for n in (1, 40, 5000):
        Counting.launches = 0
        values, heads = random_case(n, 0.01, n, True)
        cs.scan_levels(np, Counting(), values, heads, 0)
        seen.add(Counting.launches)
    assert seen == {2 * cs.LEVELS + 1}


def _simulated():
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"):
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before Numba is imported (make test runs these)")
    from detector.backend import select_backend

    return select_backend("gpu")


@pytest.mark.cudasim
def test_cuda_kernels_equal_the_array_scan():
    from detector.config import FlowConfig
    from detector.flows.gpu_engine import DeviceScan, GpuFlowEngine

    engine = GpuFlowEngine(FlowConfig(max_flows=64), _simulated(), scan_kernels=True)
    scan = DeviceScan(engine.decoder)
    for n, p, seed in ((0, 0.0, 1), (1, 0.0, 2), (33, 0.1, 3), (1100, 0.01, 4), (1100, 0.0, 5)):
        values, heads = random_case(n, p, seed, seed % 2 == 0)
        for op in cs.OP_CODES:
            assert np.array_equal(scan(values, heads, op), ss.scan(np, values, heads, op)), (n, op)


@pytest.mark.cudasim
def test_gpu_engine_with_scan_kernels_gives_the_cpus_flows(tmp_path):
    from detector.flows.gpu_engine import GpuFlowEngine
    from tests import flow_cases as fc
    from tests.flow_compare import assert_same
    from tests.test_scan_engine import both, write

    backend = _simulated()

    def engine(cfg):
        return GpuFlowEngine(cfg, backend, scan_kernels=True)

    cpu, gpu, used = both([write(tmp_path, "splits", fc.splits())], engine_cls=engine, batch_size=256)
    assert_same(cpu, gpu)
    assert used.clock.launches > 0 and hasattr(used.table.xp, "segmented_scan")
