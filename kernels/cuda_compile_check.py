"""Compile every registered CUDA kernel for a given GPU, on a machine without one.

The CUDA simulator runs kernels as Python, so it cannot tell whether the real compiler accepts
them (once every kernel failed to compile on a GPU after the simulator had passed). This check
compiles each kernel of :mod:`kernels.cuda_registry` to PTX with numba-cuda's NVVM for a
compute capability, with the argument types the engine launches it with, then assembles the
PTX with ``ptxas`` (shipped in the ``nvidia-cuda-nvcc`` wheel) into a cubin and reads its
registers and local-memory spills. No GPU and no driver are needed::

    python -m kernels.cuda_compile_check --cc 90 [--json kernel-resources.json]

Exit status: 0 every kernel compiled, 1 some did not, 3 nothing was checked (no NVVM).

numba-cuda (0.30) compiles the device functions a kernel calls for the *current device*, even
when asked for a given target, so without a GPU it fails in the driver
(``benchmarks/upstream/numba_cuda_compile_ptx_device_call.py``). While this check compiles,
the current device's compute capability is taken from the compilation in progress, i.e. the
requested one. Device functions compiled here keep that target's code, so compile from a
process that launches no kernels (this module's command, the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from kernels.cuda_registry import CudaKernel, registered

log = logging.getLogger("detector.cuda_compile_check")

_TARGET_LOCK = threading.Lock()
_COMPILE_OPTIONS = ("debug", "lineinfo", "fastmath", "opt", "launch_bounds")


def nvvm_missing() -> str | None:
    """Why kernels cannot be compiled here (no numba-cuda, no NVVM, the simulator), or None."""
    try:
        import numba

        if numba.config.ENABLE_CUDASIM:
            return "NUMBA_ENABLE_CUDASIM is set: numba.cuda is the simulator, which compiles nothing"
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as exc:  # ImportError, NvvmSupportError, OSError: each means "not installed"
        return f"numba-cuda's NVVM is not usable ({type(exc).__name__}: {exc}); pip install 'numba-cuda[cu12]'"
    return None


def parse_cc(text: str) -> tuple[int, int]:
    """``90``, ``9.0``, ``sm_90`` -> ``(9, 0)``."""
    digits = text.lower().removeprefix("sm_").replace(".", "")
    if not digits.isdigit() or len(digits) < 2:
        raise ValueError(f"not a compute capability: {text!r} (e.g. 90 or 9.0)")
    return int(digits[:-1]), int(digits[-1])


@contextlib.contextmanager
def _compilation_target(cc: tuple[int, int]):
    """Make numba-cuda compile called device functions for the compilation's own compute
    capability instead of asking the driver (see the module's docstring)."""
    from numba.cuda import dispatcher

    try:
        from numba.cuda.core.targetconfig import ConfigStack
    except ImportError:  # numba-cuda before it vendored Numba's core
        from numba.core.targetconfig import ConfigStack

    class Target:
        @property
        def compute_capability(self):
            flags = ConfigStack.top_or_none()
            return flags.compute_capability if flags is not None else cc

    with _TARGET_LOCK:
        real = getattr(dispatcher, "get_current_device", None)
        if real is None:  # a numba-cuda that no longer asks: nothing to stand in for
            yield
            return
        dispatcher.get_current_device = Target
        try:
            yield
        finally:
            dispatcher.get_current_device = real


def compile_ptx(entry: CudaKernel, cc: tuple[int, int]) -> str:
    """The kernel's PTX for ``cc``, typed from its example arguments."""
    import numba
    from numba import cuda

    kernel = entry.kernel()
    signature = tuple(numba.typeof(value) for value in entry.example())
    options = {k: v for k, v in getattr(kernel, "targetoptions", {}).items() if k in _COMPILE_OPTIONS}
    with _compilation_target(cc):
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc, **options)
    return ptx


def ptxas_path() -> str | None:
    """``ptxas`` from the nvidia-cuda-nvcc wheel, ``$PTXAS``, or the ``PATH``."""
    if os.environ.get("PTXAS"):
        return os.environ["PTXAS"]
    try:
        import nvidia.cuda_nvcc as nvcc  # the wheel numba-cuda[cu12] installs; a namespace package

        for base in nvcc.__path__:
            candidate = Path(base) / "bin" / "ptxas"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    except ImportError:
        pass
    return shutil.which("ptxas")


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")
_LMEM = re.compile(r"(\d+) bytes lmem")


def assemble(ptx: str, cc: tuple[int, int], ptxas: str) -> dict:
    """Assemble PTX into a cubin with ``ptxas -v``; the entry's registers, spill stores and
    loads and local memory (bytes per thread). Raises RuntimeError when ptxas rejects it."""
    with tempfile.TemporaryDirectory(prefix="detector-ptx-") as tmp:
        source, cubin = Path(tmp) / "kernel.ptx", Path(tmp) / "kernel.cubin"
        source.write_text(ptx)
        done = subprocess.run([ptxas, "-v", "--gpu-name", f"sm_{cc[0]}{cc[1]}", str(source), "-o", str(cubin)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not cubin.is_file():
            raise RuntimeError(f"ptxas failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        report = done.stderr + done.stdout
        entry = _ENTRY.search(report)
        tail = report[entry.end():] if entry else report
        frame, regs, lmem = _FRAME.search(tail), _REGS.search(tail), _LMEM.search(tail)
        return {"registers": int(regs.group(1)) if regs else None,
                "spill_stores": int(frame.group(2)) if frame else None,
                "spill_loads": int(frame.group(3)) if frame else None,
                "local_bytes": (int(frame.group(1)) if frame else 0) + (int(lmem.group(1)) if lmem else 0),
                "cubin_bytes": cubin.stat().st_size}


def check(cc: tuple[int, int], names: list[str] | None = None) -> list[dict]:
    """Compile every registered kernel (or those named) for ``cc``: one row per kernel with
    ``kernel``, ``ok``, ``error``, ``registers``, ``spill_stores``, ``spill_loads``,
    ``local_bytes`` (per thread), ``ptx_bytes``, ``cubin_bytes`` and ``seconds``. Resources are
    None when there is no ``ptxas`` (then only NVVM's PTX is checked)."""
    ptxas = ptxas_path()
    if ptxas is None:
        log.warning("no ptxas (nvidia-cuda-nvcc wheel, $PTXAS or PATH): PTX only, no registers or spills")
    rows = []
    for entry in registered():
        if names and entry.name not in names:
            continue
        row = {"kernel": entry.name, "ok": False, "error": None, "registers": None, "spill_stores": None,
               "spill_loads": None, "local_bytes": None, "ptx_bytes": None, "cubin_bytes": None}
        started = time.perf_counter()
        try:
            ptx = compile_ptx(entry, cc)
            row["ptx_bytes"] = len(ptx)
            if ptxas is not None:
                row.update(assemble(ptx, cc, ptxas))
            row["ok"] = True
        except Exception as exc:  # a kernel the compiler rejects: reported, the others still checked
            row["error"] = f"{type(exc).__name__}: {exc}"
            log.error("%s does not compile for sm_%d%d: %s", entry.name, *cc, row["error"])
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
    return rows


def ptxas_version(ptxas: str | None) -> str | None:
    if ptxas is None:
        return None
    try:
        out = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    lines = out.splitlines()
    return next((line for line in lines if "release" in line), lines[-1] if lines else None)


def table(rows: list[dict]) -> str:
    """The rows as a plain-text table."""
    def num(v):
        return "-" if v is None else str(v)

    lines = [f"{'kernel':<38} {'ok':<3} {'regs':>5} {'spill st/ld':>12} {'local B':>8} {'PTX KiB':>8} {'s':>6}"]
    for r in rows:
        spills = f"{num(r['spill_stores'])}/{num(r['spill_loads'])}"
        ptx = "-" if r["ptx_bytes"] is None else f"{r['ptx_bytes'] / 1024:.0f}"
        lines.append(f"{r['kernel']:<38} {'yes' if r['ok'] else 'NO':<3} {num(r['registers']):>5} {spills:>12} "
                     f"{num(r['local_bytes']):>8} {ptx:>8} {r['seconds']:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernels.cuda_compile_check", description=__doc__.split("\n")[0])
    p.add_argument("--cc", default="90", help="target compute capability, e.g. 90 (H100/H200) or 8.0 (default 90)")
    p.add_argument("--json", metavar="FILE", help="also write the table, with versions, as JSON")
    p.add_argument("--kernel", action="append", metavar="NAME", help="only this registered kernel (repeatable)")
    p.add_argument("--module", action="append", default=[], metavar="MODULE",
                   help="import this module first (kernels registered outside kernels/ and models/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cc = parse_cc(args.cc)
    except ValueError as exc:
        p.error(str(exc))
    missing = nvvm_missing()
    if missing:
        print(f"cuda_compile_check: nothing checked: {missing}", file=sys.stderr)
        return 3
    for module in args.module:
        importlib.import_module(module)
    rows = check(cc, args.kernel)
    print(table(rows))
    if args.json:
        import numba_cuda

        ptxas = ptxas_path()
        Path(args.json).write_text(json.dumps({"target": f"sm_{cc[0]}{cc[1]}", "numba_cuda": numba_cuda.__version__,
                                               "ptxas": ptxas_version(ptxas), "kernels": rows}, indent=1))
    if not rows:
        print("cuda_compile_check: no kernel registered", file=sys.stderr)
        return 1
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
