"""Compile every registered CUDA kernel on this machine's GPU, filling the kernel cache.

``detector aot`` runs it (``python -m kernels.cuda_warm``) after the CPU build, so that the
first GPU run loads the kernels (:mod:`kernels.cuda_cache`) instead of spending about 35 s
compiling them. It prints one JSON line: kernels loaded from the cache and compiled, seconds,
and the cache folders. Exit status: 0 done, 1 a kernel failed, 3 no usable GPU here (nothing done).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

from kernels.cuda_registry import registered

log = logging.getLogger("detector.cuda_warm")


def gpu_missing() -> str | None:
    """Why there is nothing to warm here, or None."""
    try:
        import numba
        from numba import cuda

        if numba.config.ENABLE_CUDASIM:
            return "NUMBA_ENABLE_CUDASIM is set (the simulator compiles nothing)"
        if not cuda.is_available():
            return "no CUDA GPU or driver"
    except ImportError as exc:
        return f"numba-cuda is not installed ({exc})"
    return None


def warm() -> dict:
    """Compile (or load) each registered kernel for its registered argument types."""
    import numba

    started = time.perf_counter()
    loaded = compiled = 0
    folders = set()
    for entry in registered():
        kernel = entry.kernel()
        signature = tuple(numba.typeof(value) for value in entry.example())
        kernel.compile(signature)
        stats = kernel.stats
        hit = stats.cache_hits.get(signature, 0) > 0
        loaded, compiled = loaded + hit, compiled + (not hit)
        if stats.cache_path:
            folders.add(stats.cache_path)
    return {"loaded": loaded, "compiled": compiled, "seconds": round(time.perf_counter() - started, 1),
            "folders": sorted(folders)}


def prune(folders: list[str]) -> int:
    """Remove the cache folders of earlier kernel sources beside the ones in use (those of other
    GPU models stay: an install may serve nodes with different GPUs); the number removed."""
    current = {Path(f).name.rsplit("-sm", 1)[0] for f in folders}
    removed = 0
    for parent in {Path(f).parent for f in folders}:
        for old in parent.glob("*-sm*"):
            if old.is_dir() and old.name.rsplit("-sm", 1)[0] not in current:
                shutil.rmtree(old, ignore_errors=True)
                removed += 1
    return removed


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    missing = gpu_missing()
    if missing:
        print(json.dumps({"skipped": missing}))
        return 3
    try:
        summary = warm()
    except Exception as exc:  # the compiler's error, for detector aot to show
        print(json.dumps({"failed": f"{type(exc).__name__}: {exc}"}))
        return 1
    summary["pruned"] = prune(summary["folders"])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
