"""Compile the CPU kernels ahead of time into one extension module (``detector aot``).

Run as ``python -m kernels.aot_build`` with ``DETECTOR_AOT=0``, so that every kernel is a Numba
dispatcher here. The signatures to compile are those the kernels are called with: a warm-up runs
``detector flows`` (one, two and three threads; pcap, pcapng, gzip; a capture with IP
fragments) and ``detector analyze`` on small synthetic captures, walks two of them on threads
as large captures are walked, and calls the daemon's ring walker on an empty block, and every signature in
Numba's on-disk cache for the current sources is added (any other this machine has compiled).
Each is compiled with Numba's ahead-of-time compiler (``numba.pycc``) for this machine's CPU and the
features it reports (or, ``--portable``, the architecture's baseline), releasing the GIL as the
JIT kernels do, and listed in a manifest with its argument key
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
from contextlib import ExitStack, contextmanager
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
    frags = _fragmented_capture(work / "frags.pcap")
    for threads in ("1", "2", "3"):  # matching fragments, and the two-thread hand-over's fragment path
        run("flows", str(frags), "-o", str(work / f"frags-{threads}.parquet"), "--threads", threads, "-q",
            "--no-progress")
    erf = _erf_capture(work / "two.erf")
    with open(erf, "rb") as src, gzip.open(work / "two.erf.gz", "wb") as dst:  # a streamed (writable) buffer too
        shutil.copyfileobj(src, dst)
    run("flows", str(erf), str(work / "two.erf.gz"), "-o", str(work / "flows-erf.parquet"), "-q", "--no-progress")
    _warm_up_parallel_walk([caps / "hpc-mix.pcap", work / "ng" / "hpc-mix.pcapng"])
    _warm_up_live_capture()


def _warm_up_parallel_walk(paths) -> None:
    """The record walk on threads (guessing where records start), which only captures far larger
    than the warm-up's take: walked here with thresholds that let small files in."""
    from detector.sources import open_capture
    from detector.sources.parallel_walk import WalkPlan

    plan = WalkPlan(threads=2, chunk_bytes=4096, min_chunk_bytes=64, min_file_bytes=0, min_copy_rows=1)
    for path in paths:
        reader = open_capture(str(path), 1024, walk=plan)
        try:
            for _ in reader.batches():
                pass
        finally:
            reader.src.close()


def _erf_capture(path: Path) -> Path:
    """Two ERF records, Ethernet and IPv4 (no synthetic scenario writes ERF)."""
    import struct

    from scapy.all import IP, UDP, Ether

    ip = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=53) / b"q")
    out = b""
    for k, (kind, body) in enumerate(((2, b"\0\0" + bytes(Ether() / ip)), (22, ip))):
        rlen = 16 + len(body) + (-(16 + len(body)) % 8)
        head = struct.pack("<Q", (1_700_000_000 + k) << 32) + struct.pack(">BBHHH", kind, 0, rlen, 0, len(body))
        out += (head + body).ljust(rlen, b"\0")
    path.write_bytes(out)
    return path


def _fragmented_capture(path: Path) -> Path:
    """A datagram in three IP fragments, its first fragment last (the synthetic scenarios have
    none, and a capture with fragments must not need Numba either)."""
    from scapy.all import IP, UDP, Ether, fragment, wrpcap

    parts = fragment(IP(src="10.0.0.1", dst="10.0.0.2", id=7) / UDP(sport=4000, dport=9) / (b"x" * 2500),
                     fragsize=1000)
    wrpcap(str(path), [Ether() / f for f in parts[1:] + parts[:1]])
    return path


def _warm_up_live_capture() -> None:
    """The daemon's ring walker, called as ``detector.daemon.live`` calls it (no capture is
    opened: an empty block)."""
    import numpy as np

    from kernels import tpacket

    rows = 8
    tpacket.walk_block(np.zeros(64, np.uint8), 0, 64, np.empty(rows, np.int64), np.empty(rows, np.uint32),
                       np.empty(rows, np.uint32), np.empty(rows, np.int64), 0, False)


def _import_kernel_modules() -> None:
    """Every kernel module, so that kernels no warm-up calls (the daemon's ring walker) are
    registered too, and their cached signatures found."""
    import importlib
    import pkgutil

    import kernels

    for info in pkgutil.iter_modules(kernels.__path__):
        if not info.name.startswith("aot_") and info.name != "cuda_kernels":
            importlib.import_module(f"kernels.{info.name}")


def project_sources(paths: set[Path]) -> set[str]:
    """The files given and the project modules they import, transitively: a constant a kernel
    takes from another module is compiled into it, so that module's source counts too."""
    import ast

    seen: set[Path] = set()
    todo = list(paths)
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_text())
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                if name.split(".")[0] not in ("detector", "kernels", "models"):
                    continue
                base = ROOT.joinpath(*name.split("."))
                todo += [base.with_suffix(".py"), base / "__init__.py"]
    return {p.relative_to(ROOT).as_posix() for p in seen}


def _exports():
    """(qualified name, function, options, argument types, return type, key) of every CPU driver
    kernel's signature; the skipped signatures; the project sources the kernels depend on."""
    from kernels import _jit, _numba_dispatch
    from kernels.aot_keys import numba_type_key

    _import_kernel_modules()
    exports, skipped, files = [], [], set()
    for fn, options, dispatcher in _jit.registered():
        path = Path(inspect.getsourcefile(fn)).resolve()
        if path.is_relative_to(ROOT):
            files.add(path)
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
    files.update((ROOT / "kernels").glob("*.py"))
    builder = Path(__file__).resolve()  # counted, but its imports (the warm-up's commands) are not
    return exports, skipped, sorted(project_sources(files - {builder}) | {builder.relative_to(ROOT).as_posix()})


def _compile(exports, module: str, out_dir: Path, portable: bool, verbose: bool) -> str:
    from numba.core import codegen, typing
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

    def host_features(self):
        # For "host", pycc lets LLVM turn on every feature the CPU model implies; a VM may hide
        # some of them (AVX-512 on a model that has it), and the code would then stop on an
        # illegal instruction. The JIT asks the host which features it has; so does this build.
        return self._get_host_cpu_features() if self._cpu_name == "host" else ""

    cc = CC(module)
    cc.output_dir = str(out_dir)
    cc.target_cpu = "" if portable else "host"  # "": the architecture's baseline (x86-64, armv8)
    cc.verbose = verbose
    for n, (_name, fn, _options, sig, ret, _key) in enumerate(exports):
        cc.export(f"k{n}", typing.signature(ret, *sig))(fn)
    with ExitStack() as stack:
        stack.enter_context(_replaced(pycc_compiler, "compile_extra", compile_extra))
        stack.enter_context(_replaced(codegen.AOTCPUCodegen, "_customize_tm_features", host_features))
        # pycc's own build folder goes inside ours, and is removed with it even when pycc fails
        stack.enter_context(_replaced(tempfile, "tempdir", str(out_dir)))
        cc.compile()
    return cc.output_file


@contextmanager
def _replaced(owner, name: str, value):
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def build(folder: Path, portable: bool = False, verbose: bool = False) -> dict:
    from kernels import _jit

    if _jit.aot_in_use():
        raise RuntimeError("run with DETECTOR_AOT=0: the build compiles Numba's kernels")
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="detector-aot-") as tmp:
        _warm_up(Path(tmp))
        exports, skipped, sources = _exports()
        fingerprint = aot_load.fingerprint(sources, portable)
        module = f"detector_kernels_{fingerprint[:12]}"
        library = _compile(exports, module, Path(tmp), portable, verbose)
        # copied beside its final name, then renamed over it: a process that has the old file
        # mapped keeps it, and no process sees a half-written one
        staged = folder / f".tmp-{os.getpid()}-{library}"
        shutil.copyfile(os.path.join(tmp, library), staged)
        os.chmod(staged, 0o755)
        os.replace(staged, folder / library)
    variants: dict[str, list] = {}
    for n, (name, _fn, _options, _sig, _ret, key) in enumerate(exports):
        variants.setdefault(name, []).append([f"k{n}", key])
    manifest = {"format": aot_load.FORMAT, "fingerprint": fingerprint, "portable": portable, "sources": sources,
                "module": module,
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
    manifest = build(aot_load.aot_dir(), portable="--portable" in sys.argv[1:], verbose="-v" in sys.argv[1:])
    print(json.dumps({k: manifest[k] for k in ("module", "library", "seconds")}
                     | {"kernels": len(manifest["variants"]),
                        "signatures": sum(len(v) for v in manifest["variants"].values()),
                        "skipped": len(manifest["skipped"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
