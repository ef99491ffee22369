"""Compile the CPU kernels ahead of time into one extension module (``detector aot``).

Run as ``python -m kernels.aot_build`` with ``DETECTOR_AOT=0``, so that every kernel is a Numba
dispatcher here. The signatures to compile are those the kernels are called with: a warm-up runs
``detector flows`` (one, two and three threads; pcap, pcapng, gzip) and ``detector analyze`` on
small synthetic captures, and every signature in Numba's on-disk cache for the current sources
is added (the daemon's live-capture kernel, and any other this machine has compiled). Each is
compiled with Numba's ahead-of-time compiler (``numba.pycc``) for this machine's CPU, releasing
the GIL as the JIT kernels do, and listed in a manifest with its argument key
(:mod:`kernels.aot_keys`) and a fingerprint of the sources and versions it was built from
(:mod:`kernels.aot_load`). It needs a C compiler and the Python headers, as any extension does.
"""

from __future__ import annotations

import gzip
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kernels import aot_load

ROOT = Path(__file__).resolve().parents[1]


def _warm_up(work: Path) -> None:
    """Run the jobs whose kernels a process calls, on small captures, so each kernel has the
    signatures real runs use."""
    from detector.cli import main

    caps = work / "caps"

    def run(*argv: str) -> None:
        rc = main([*argv])
        if rc not in (0, 1):  # 1: a warm-up capture's partial-input warning is still a run
            raise RuntimeError(f"warm-up step failed (exit {rc}): detector {' '.join(argv)}")

    run("synth", "all", "--packets", "3000", "-o", str(caps))
    run("synth", "hpc-mix", "--packets", "3000", "--format", "pcapng", "--nanosecond", "-o", str(work / "ng"))
    with open(caps / "hpc-mix.pcap", "rb") as src, gzip.open(work / "hpc-mix.pcap.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    for threads in ("1", "2", "3"):
        run("flows", str(caps), "-o", str(work / f"flows-{threads}.parquet"), "--threads", threads, "-q",
            "--no-progress")
    run("flows", str(work / "ng"), str(work / "hpc-mix.pcap.gz"), "-o", str(work / "flows-ng.csv"),
        "--format", "csv", "-q", "--no-progress")
    run("analyze", str(caps), "--config", str(caps / "site.toml"), "-o", str(work / "alerts.jsonl"), "-q",
        "--no-progress")


def _exports():
    """(qualified name, function, options, argument types, return type, key) of every CPU driver kernel's
    signature, and the source files of the modules that define kernels."""
    from kernels import _jit, _numba_dispatch
    from kernels.aot_keys import numba_type_key

    exports, skipped, sources = [], [], set()
    for fn, options, dispatcher in _jit.registered():
        path = Path(inspect.getsourcefile(fn)).resolve()
        if path.is_relative_to(ROOT):
            sources.add(path.relative_to(ROOT).as_posix())
        if not options.get("nogil"):  # helpers are compiled into the drivers that call them
            continue
        name = f"{fn.__module__}.{fn.__qualname__}"
        for sig in dict.fromkeys([*dispatcher.overloads, *_numba_dispatch.cached_signatures(dispatcher)]):
            key = tuple(numba_type_key(t) for t in sig)
            if None in key:
                skipped.append(f"{name}{sig}")
                continue
            dispatcher.compile(sig)
            exports.append((name, fn, options, sig, dispatcher.overloads[sig].signature.return_type, key))
    sources.update(p.relative_to(ROOT).as_posix() for p in (ROOT / "kernels").glob("*.py"))
    return exports, skipped, sorted(sources)


def _compile(exports, module: str, out_dir: Path, verbose: bool) -> str:
    from numba.core import typing
    from numba.pycc import CC
    from numba.pycc import compiler as pycc_compiler

    real_compile = pycc_compiler.compile_extra

    def compile_extra(typingctx, targetctx, func, args, return_type, flags, locals, library=None, **kw):
        # pycc passes one Flags to every export, and a compilation changes it (SSA turned
        # off), which makes the next export fail to type; each gets a copy, with its kernel's
        # own options: drivers release the GIL (threads share a batch) and run without
        # reference counting (with it, decoding is ten times slower; see kernels._jit).
        options = options_of.get(func, {})
        flags = flags.copy()
        flags.release_gil = bool(options.get("nogil"))
        flags.nrt = bool(options.get("_nrt", True))
        return real_compile(typingctx, targetctx, func, args, return_type, flags, locals=locals, library=library,
                            **kw)

    options_of = {fn: options for _name, fn, options, _sig, _ret, _key in exports}
    cc = CC(module)
    cc.output_dir = str(out_dir)
    cc.target_cpu = "host"
    cc.verbose = verbose
    for n, (_name, fn, _options, sig, ret, _key) in enumerate(exports):
        cc.export(f"k{n}", typing.signature(ret, *sig))(fn)
    pycc_compiler.compile_extra = compile_extra
    try:
        cc.compile()
    finally:
        pycc_compiler.compile_extra = real_compile
    return cc.output_file


def build(folder: Path, verbose: bool = False) -> dict:
    from kernels import _jit

    if _jit.aot_in_use():
        raise RuntimeError("run with DETECTOR_AOT=0: the build compiles Numba's kernels")
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="detector-aot-") as tmp:
        _warm_up(Path(tmp))
        exports, skipped, sources = _exports()
        fingerprint = aot_load.fingerprint(sources)
        module = f"detector_kernels_{fingerprint[:12]}"
        library = _compile(exports, module, Path(tmp), verbose)
        shutil.move(os.path.join(tmp, library), folder / library)
    variants: dict[str, list] = {}
    for n, (name, _fn, _options, _sig, _ret, key) in enumerate(exports):
        variants.setdefault(name, []).append([f"k{n}", key])
    manifest = {"format": aot_load.FORMAT, "fingerprint": fingerprint, "sources": sources, "module": module,
                "library": library, "variants": variants, "skipped": skipped,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.monotonic() - started, 1)}
    tmp_manifest = folder / f".{aot_load.MANIFEST}.{os.getpid()}"
    tmp_manifest.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp_manifest, folder / aot_load.MANIFEST)
    for old in folder.glob("detector_kernels_*"):  # earlier builds (a process using one keeps its mapping)
        if old.name != library:
            old.unlink(missing_ok=True)
    return manifest


def main() -> int:
    verbose = "-v" in sys.argv[1:]
    manifest = build(aot_load.aot_dir(), verbose)
    print(json.dumps({k: manifest[k] for k in ("module", "library", "seconds")}
                     | {"kernels": len(manifest["variants"]),
                        "signatures": sum(len(v) for v in manifest["variants"].values()),
                        "skipped": len(manifest["skipped"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
