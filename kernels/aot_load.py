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
    """``DETECTOR_AOT_DIR``; else ``kernels/_aot`` beside the sources, where an install (or
    ``make``) writes it; else, for a read-only install built by a user who cannot write there,
    that user's cache folder. The build and every process pick the same one."""
    chosen = os.environ.get("DETECTOR_AOT_DIR")
    if chosen:
        return Path(chosen)
    beside = _KERNELS_DIR / "_aot"
    if beside.is_dir() or os.access(_KERNELS_DIR, os.W_OK):
        return beside
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if not os.path.isabs(base):
        import tempfile

        base = tempfile.gettempdir()
    return Path(base) / f"detector-aot-{os.getuid()}"


# Numba settings that the build does not follow (bounds checks for debugging, another target CPU):
# with any of them set, the kernels come from Numba
_NUMBA_OVERRIDES = ("NUMBA_DISABLE_JIT", "NUMBA_ENABLE_CUDASIM", "NUMBA_BOUNDSCHECK", "NUMBA_CPU_NAME",
                    "NUMBA_CPU_FEATURES")


def enabled() -> bool:
    """Off with ``DETECTOR_AOT=0``, and whenever Numba is told to compile otherwise than the
    build did (its CUDA simulator, ``NUMBA_DISABLE_JIT`` or bounds checks for debugging, another
    target CPU): those must get what they ask for."""
    if os.environ.get("DETECTOR_AOT", "1").strip().lower() in ("0", "no", "off", "false"):
        return False
    return not any(os.environ.get(v, "0") not in ("", "0") for v in _NUMBA_OVERRIDES)


def _numba_version_text() -> str:
    spec = importlib.util.find_spec("numba")  # finds the package without importing it
    if spec is None or not spec.origin:
        return "no numba"
    try:
        return (Path(spec.origin).parent / "_version.py").read_text(errors="replace")
    except OSError:
        return spec.origin


_CPU_KEYS = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU implementer",
             "CPU architecture", "CPU variant", "CPU part", "isa")


def _cpu_identity() -> str:
    """Code is compiled for the build machine's CPU model: a machine with another model or other
    instructions must not load it (an install shared over NFS by older nodes). The first
    processor's model and feature lines of ``/proc/cpuinfo`` (x86 and Arm names), not the clock
    lines, which change from one reading to the next."""
    import platform

    lines = [platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key = line.split(":", 1)[0].strip()
                if key in _CPU_KEYS:
                    lines.append(line.strip())
    except OSError:
        lines.append(platform.processor())
    return "\n".join(lines)


def fingerprint(sources: list[str], portable: bool = False) -> str:
    """What a build must match: its kernel sources, the interpreter, NumPy, Numba, and the CPU
    model (only the architecture for a portable build)."""
    import platform

    import numpy

    h = hashlib.sha256()
    cpu = platform.machine() if portable else _cpu_identity()
    for part in (f"format {FORMAT}", sys.version, sys.platform, numpy.__version__, _numba_version_text(), cpu):
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


def check(folder: Path | None = None) -> tuple[dict | None, str]:
    """(manifest, why): the manifest of a build that fits this installation, else None."""
    folder = folder or aot_dir()
    manifest = read_manifest(folder)
    if manifest is None:
        return None, f"no build in {folder} (run: detector aot)"
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("sources"), list):
        return None, f"{folder / MANIFEST}: written by another version of detector (run: detector aot)"
    if fingerprint(manifest["sources"], bool(manifest.get("portable"))) != manifest.get("fingerprint"):
        return None, (f"{folder / MANIFEST}: the kernel sources, Python, NumPy, Numba or the CPU changed since "
                      "the build (run: detector aot)")
    if not (folder / str(manifest.get("library", ""))).is_file():
        return None, f"{folder}: the compiled module is missing (run: detector aot)"
    cpu = "any CPU of this architecture" if manifest.get("portable") else "this CPU"
    return manifest, (f"{len(manifest.get('variants', {}))} kernels for {cpu}, built {manifest.get('built', '?')} "
                      f"in {folder}")


def status(folder: Path | None = None) -> tuple[bool, str]:
    """(usable, why): whether a build is present and fits this installation."""
    manifest, why = check(folder)
    return manifest is not None, why


def clear(folder: Path | None = None) -> int:
    """Remove a build (its manifest first, so no process starts loading it); the number of files."""
    folder = folder or aot_dir()
    removed = 0
    for path in [folder / MANIFEST, *folder.glob("detector_kernels_*"), *folder.glob(".tmp-*")]:
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass
    return removed


def variants() -> dict[str, dict] | None:
    """``{"module.function": {key: compiled function}}`` from a fitting build; None when there is
    none (or it is disabled), and the kernels are Numba's."""
    if not enabled():
        return None
    folder = aot_dir()
    manifest, _ = check(folder)
    if manifest is None:
        return None
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
