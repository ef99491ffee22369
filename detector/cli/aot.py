"""``detector aot [--portable] [--status | --clear]``: compile the kernels ahead of time.

Without a build, every process imports Numba and loads its cached kernels at start (about 0.3 s
of the 0.55 s a short capture takes on the 2-core VM). With one, it loads a single extension
module instead (see :mod:`kernels.aot_load`). The build runs in a child process with the
ahead-of-time kernels off, so that it compiles from Numba's dispatchers.

On a machine with a GPU, the CUDA kernels are then compiled into their on-disk cache
(:mod:`kernels.cuda_warm`), so the first GPU run does not spend half a minute compiling them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from detector.cli.common import fail

KEEP_NUMBA = "the kernels keep using Numba's cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--portable", action="store_true",
                   help="compile for any CPU of this architecture, not this machine's model (container "
                        "images, installs shared by nodes with other CPUs); the build then ignores the CPU model")
    p.add_argument("--status", action="store_true",
                   help="say whether a build fits this installation (exit 0) or not (exit 1), and build nothing")
    p.add_argument("--clear", action="store_true", help="remove the build: kernels come from Numba again")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")


def _missing_toolchain() -> str | None:
    import importlib.util

    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        return "needs a C compiler (cc or gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "needs the Python headers (Python.h; on Debian: python3-dev)"
    if importlib.util.find_spec("setuptools") is None:
        return "needs setuptools (pip install 'detector[aot]')"
    return None


def _child_env(**extra) -> dict:
    env = dict(os.environ, **extra)
    for var in ("NUMBA_DISABLE_JIT", "NUMBA_ENABLE_CUDASIM"):
        env.pop(var, None)
    return env


def _last_json(text: str) -> dict | None:
    try:
        return json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _warm_cuda_kernels(quiet: bool) -> int:
    """Compile the CUDA kernels into their cache when this machine has a GPU (else say why not)."""
    try:
        done = subprocess.run([sys.executable, "-m", "kernels.cuda_warm"], env=_child_env(), capture_output=True,
                              text=True)
    except OSError as exc:
        return fail(f"cannot start compiling the CUDA kernels: {exc}", 1)
    summary = _last_json(done.stdout) or {}
    if done.returncode == 3:
        if not quiet:
            print(f"detector aot: CUDA kernels not compiled ahead: {summary.get('skipped', 'no GPU')}", file=sys.stderr)
        return 0
    if done.returncode != 0:
        why = summary.get("failed") or "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        return fail(f"compiling the CUDA kernels failed (exit {done.returncode}); they compile at first use:\n{why}", 1)
    if not quiet:
        print(f"detector aot: CUDA kernels: {summary['compiled']} compiled, {summary['loaded']} already cached, in "
              f"{summary['seconds']:.0f} s, into {', '.join(summary['folders']) or 'no cache folder'}",
              file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    cpu = _build_cpu_kernels(args)
    if args.status or args.clear:
        return cpu
    return max(cpu, _warm_cuda_kernels(args.quiet))


def _build_cpu_kernels(args: argparse.Namespace) -> int:
    from kernels import aot_load

    folder = aot_load.aot_dir()
    if args.status:
        ok, why = aot_load.status(folder)
        state = "in use" if ok and aot_load.enabled() else "built, but off here" if ok else "not used"
        print(f"detector aot: {state}: {why}", file=sys.stderr)
        return 0 if ok else 1
    if args.clear:
        removed = aot_load.clear(folder)
        if not args.quiet:
            print(f"detector aot: removed {removed} file(s) from {folder}", file=sys.stderr)
        return 0
    missing = _missing_toolchain()
    if missing:
        return fail(f"{missing}; {KEEP_NUMBA}", 1)
    env = _child_env(DETECTOR_AOT="0")
    cmd = [sys.executable, "-m", "kernels.aot_build", *(["--portable"] if args.portable else [])]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    except OSError as exc:
        return fail(f"cannot start the build: {exc}; {KEEP_NUMBA}", 1)
    summary = _last_json(done.stdout) if done.returncode == 0 else None
    if summary is None:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        return fail(f"the build failed (exit {done.returncode}); {KEEP_NUMBA}:\n{tail}", 1)
    if not args.quiet:
        print(f"detector aot: {summary['signatures']} signatures of {summary['kernels']} kernels compiled in "
              f"{summary['seconds']:.0f} s ({'any CPU of this architecture' if args.portable else 'this CPU'}) "
              f"into {folder / summary['library']}", file=sys.stderr)
    return 0
