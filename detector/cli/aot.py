"""``detector aot [--status | --clear]``: compile the CPU kernels ahead of time.

Without a build, every process imports Numba and loads its cached kernels at start (about 0.3 s
of the 0.55 s a short capture takes on the 2-core VM). With one, it loads a single extension
module instead (see :mod:`kernels.aot_load`). The build runs in a child process with the
ahead-of-time kernels off, so that it compiles from Numba's dispatchers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from detector.cli.common import fail


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status", action="store_true",
                   help="say whether a build fits this installation (exit 0) or not (exit 1), and build nothing")
    p.add_argument("--clear", action="store_true", help="remove the build: kernels come from Numba again")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")


def run(args: argparse.Namespace) -> int:
    from kernels import aot_load

    folder = aot_load.aot_dir()
    if args.status:
        ok, why = aot_load.status(folder)
        print(f"detector aot: {'in use' if ok and aot_load.enabled() else 'built, but off' if ok else 'not used'}: "
              f"{why}", file=sys.stderr)
        return 0 if ok else 1
    if args.clear:
        shutil.rmtree(folder, ignore_errors=True)
        if not args.quiet:
            print(f"detector aot: removed {folder}", file=sys.stderr)
        return 0
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        return fail("needs a C compiler (cc or gcc) and the Python headers; the kernels keep using Numba's cache", 1)
    import importlib.util

    if importlib.util.find_spec("setuptools") is None:
        return fail("needs setuptools (pip install 'detector[aot]'); the kernels keep using Numba's cache", 1)
    env = dict(os.environ, DETECTOR_AOT="0")
    for var in ("NUMBA_DISABLE_JIT", "NUMBA_ENABLE_CUDASIM"):
        env.pop(var, None)
    try:
        done = subprocess.run([sys.executable, "-m", "kernels.aot_build"], env=env, capture_output=True, text=True)
    except OSError as exc:
        return fail(f"cannot start the build: {exc}", 1)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        return fail(f"the build failed (exit {done.returncode}); the kernels keep using Numba's cache:\n{tail}", 1)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if not args.quiet:
        print(f"detector aot: {summary['signatures']} signatures of {summary['kernels']} kernels compiled in "
              f"{summary['seconds']:.0f} s into {folder / summary['library']}", file=sys.stderr)
    return 0
