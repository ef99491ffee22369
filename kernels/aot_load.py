"""Kernels compiled ahead of time (``detector aot``): where they are kept and whether they fit.

Importing Numba and loading its cached kernels is most of a process's start-up (0.25 to 0.3 s of
about 0.55 s on the 2-core VM). ``detector aot`` compiles the CPU kernels into one extension
module with Numba's ahead-of-time compiler; a process that finds a build fitting its sources,
its Python, NumPy and Numba, and its CPU loads that module and runs without importing Numba at
all, until a call needs a signature the build lacks (then Numba compiles it as usual).

This module imports nothing heavy: it runs at every start.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

from kernels.aot_keys import from_json

MANIFEST = "manifest.json"
FORMAT = 1
_KERNELS_DIR = Path(__file__).resolve().parent


def aot_dir() -> Path:
    """``DETECTOR_AOT_DIR``, else ``kernels/_aot`` beside the sources (like Numba's cache);
    for read-only installs the folder Numba's cache was moved to."""
    chosen = os.environ.get("DETECTOR_AOT_DIR")
    if chosen:
        return Path(chosen)
    if os.access(_KERNELS_DIR, os.W_OK) or (_KERNELS_DIR / "_aot").is_dir():
        return _KERNELS_DIR / "_aot"
    cache = os.environ.get("NUMBA_CACHE_DIR")
    return Path(cache) / "detector-aot" if cache else _KERNELS_DIR / "_aot"


def enabled() -> bool:
    """Off with ``DETECTOR_AOT=0``, and whenever Numba is told not to compile for the CPU (its
    CUDA simulator, or ``NUMBA_DISABLE_JIT`` for debugging): those must see Python functions."""
    if os.environ.get("DETECTOR_AOT", "1").strip().lower() in ("0", "no", "off", "false"):
        return False
    return not any(os.environ.get(v, "0") not in ("", "0") for v in ("NUMBA_DISABLE_JIT", "NUMBA_ENABLE_CUDASIM"))


def _numba_version_text() -> str:
    spec = importlib.util.find_spec("numba")  # finds the package without importing it
    if spec is None or not spec.origin:
        return "no numba"
    try:
        return (Path(spec.origin).parent / "_version.py").read_text(errors="replace")
    except OSError:
        return spec.origin


def _cpu_identity() -> str:
    """Code is compiled for the build machine's CPU: a machine with other instructions must not
    load it (an install shared over NFS by older nodes)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            lines = [line for line in f.read(65536).splitlines() if line.startswith(("flags", "model name"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        import platform

        return platform.machine() + platform.processor()


def fingerprint(sources: list[str]) -> str:
    """What a build must match: its kernel sources, the interpreter, NumPy, Numba and the CPU."""
    import numpy

    h = hashlib.sha256()
    for part in (f"format {FORMAT}", sys.version, sys.platform, numpy.__version__, _numba_version_text(),
                 _cpu_identity()):
        h.update(part.encode() + b"\0")
    root = _KERNELS_DIR.parent
    for rel in sources:
        h.update(rel.encode() + b"\0")
        try:
            h.update((root / rel).read_bytes())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()


def read_manifest(folder: Path | None = None) -> dict | None:
    try:
        return json.loads(((folder or aot_dir()) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def status(folder: Path | None = None) -> tuple[bool, str]:
    """(usable, why): whether a build is present and fits this installation."""
    folder = folder or aot_dir()
    manifest = read_manifest(folder)
    if manifest is None:
        return False, f"no build in {folder} (run: detector aot)"
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("sources"), list):
        return False, f"{folder / MANIFEST}: written by another version of detector (run: detector aot)"
    if fingerprint(manifest["sources"]) != manifest.get("fingerprint"):
        return False, (f"{folder / MANIFEST}: the kernel sources, Python, NumPy, Numba or the CPU changed since "
                       "the build (run: detector aot)")
    if not (folder / manifest.get("library", "")).is_file():
        return False, f"{folder}: the compiled module is missing (run: detector aot)"
    return True, f"{len(manifest.get('variants', {}))} kernels, built {manifest.get('built', '?')} in {folder}"


def variants() -> dict[str, dict] | None:
    """``{"module.function": {key: compiled function}}`` from a fitting build; None when there is
    none (or it is disabled), and the kernels are Numba's."""
    if not enabled():
        return None
    folder = aot_dir()
    ok, _ = status(folder)
    if not ok:
        return None
    manifest = read_manifest(folder)
    path = folder / manifest["library"]
    try:
        loader = importlib.machinery.ExtensionFileLoader(manifest["module"], str(path))
        spec = importlib.util.spec_from_file_location(manifest["module"], str(path), loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except (ImportError, OSError):
        return None
    table: dict[str, dict] = {}
    for name, entries in manifest["variants"].items():
        fns = {from_json(key): getattr(module, symbol, None) for symbol, key in entries}
        table[name] = {k: f for k, f in fns.items() if f is not None}
    return table
