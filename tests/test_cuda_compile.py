"""Every registered CUDA kernel compiles for a real GPU (sm_90: H100, H200) on a machine without
one: numba-cuda's NVVM makes the PTX and ``ptxas`` (nvidia-cuda-nvcc wheel) the cubin, as the GPU
driver would. The simulator tests cannot show this (they run the kernels as Python). Skipped only
where numba-cuda's NVVM is not installed (the ``test`` extra installs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SKIPPED = 3  # the check's exit status when it cannot compile here


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBA_DISABLE_JIT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def compile_check(tmp_path, *argv) -> tuple[subprocess.CompletedProcess, dict | None]:
    """The check's command in a child process: it stands in for the GPU while it compiles, and
    the test process keeps its own numba.cuda state."""
    out = tmp_path / "resources.json"
    done = subprocess.run([sys.executable, "-m", "kernels.cuda_compile_check", "--json", str(out), *argv],
                          env=_env(), capture_output=True, text=True, timeout=1200, cwd=REPO)
    if done.returncode == SKIPPED:
        pytest.skip(done.stderr.strip())
    return done, json.loads(out.read_text()) if out.is_file() else None


def registered_names() -> set[str]:
    from kernels.cuda_registry import registered

    return {entry.name for entry in registered()}


@pytest.mark.slow
def test_every_registered_kernel_compiles_for_sm90(tmp_path):
    done, report = compile_check(tmp_path, "--cc", "90")
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    rows = {row["kernel"]: row for row in report["kernels"]}
    assert set(rows) == registered_names() >= {f"kernels.cuda_kernels.{k}" for k in (
        "decode", "walk", "finalize_rows", "classify")}
    assert report["target"] == "sm_90"
    for name, row in rows.items():
        assert row["ok"] and row["error"] is None and row["ptx_bytes"] > 0, name
        if report["ptxas"] is not None:  # assembled into a cubin: its resources are known
            assert row["cubin_bytes"] > 0 and row["registers"] > 0, name
            assert row["spill_stores"] >= 0 and row["spill_loads"] >= 0 and row["local_bytes"] >= 0, name


def test_a_kernel_the_compiler_rejects_fails_the_check(tmp_path):
    done, report = compile_check(tmp_path, "--module", "tests.cuda_broken_kernel", "--kernel",
                                 "tests.cuda_broken_kernel.sorts")
    assert done.returncode == 1
    (row,) = report["kernels"]
    assert row["kernel"] == "tests.cuda_broken_kernel.sorts" and not row["ok"]
    assert "TypingError" in row["error"] and "sort" in row["error"]
    assert "tests.cuda_broken_kernel.sorts does not compile for sm_90" in done.stderr


def test_finding_the_kernels_imports_no_gpu_package():
    code = ("import sys; import kernels.cuda_compile_check, kernels.cuda_cache, kernels.cuda_warm; "
            "from kernels.cuda_registry import registered; names = [e.name for e in registered()]; "
            "bad = [m for m in ('cupy', 'numba.cuda') if m in sys.modules]; print(len(names), bad)")
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    count, bad = done.stdout.strip().split(" ", 1)
    assert int(count) >= 7 and bad == "[]"


def test_compute_capabilities_are_read_as_written():
    from kernels.cuda_compile_check import parse_cc

    assert parse_cc("90") == parse_cc("9.0") == parse_cc("sm_90") == (9, 0)
    assert parse_cc("100") == (10, 0) and parse_cc("8.6") == (8, 6)
    with pytest.raises(ValueError):
        parse_cc("nine")
