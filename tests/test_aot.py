"""Kernels compiled ahead of time (``detector aot``): chosen by the same types Numba would
choose, the same flow records as Numba's kernels, no Numba import at start, and Numba again for
a call the build has no signature for.

The integration checks use the build ``make`` writes (``kernels/_aot``) when it fits the sources,
else build one into a temporary folder (about two minutes). Each check runs a fresh interpreter,
as a real start does.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kernels import aot_load
from kernels.aot_keys import from_json, numba_type_key, value_key

REPO = Path(__file__).resolve().parents[1]

Pair = collections.namedtuple("Pair", "a b")


def _values():
    base = np.arange(24, dtype=np.int64).reshape(4, 6)
    readonly = np.zeros(5, dtype=np.uint8)
    readonly.setflags(write=False)
    return [
        np.zeros(3, dtype=np.uint8), np.zeros(3, dtype=np.float32), np.zeros(3, dtype=np.uint64),
        np.zeros(0, dtype=np.int16), base, np.asfortranarray(base), base[:, ::2], base[::2, :], readonly,
        np.frombuffer(b"\x00" * 8, dtype=np.uint8),  # read-only, as a memory-mapped capture is
        3, -(2**63), 2**63 - 1, 1.5, True, False, np.int32(7), np.uint8(1), np.float64(2.0), np.bool_(True),
        (np.zeros(2, np.uint8), np.zeros(2, np.int64)), (np.zeros(2, np.uint8), np.zeros(2, np.uint8)),
        (1, 2.0, (True, np.zeros(1, np.int8))), Pair(np.zeros(2, np.uint32), np.zeros(2, np.uint32)), (),
    ]


@pytest.mark.parametrize("value", _values(), ids=lambda v: type(v).__name__)
def test_a_values_key_is_the_key_of_the_type_numba_gives_it(value):
    import numba

    key = value_key(value)
    assert key is not None
    assert key == numba_type_key(numba.typeof(value))


def test_keys_tell_apart_what_the_compiled_code_would_misread():
    writable = np.zeros(4, np.uint8)
    readonly = writable.copy()
    readonly.setflags(write=False)
    keys = {value_key(v) for v in (writable, readonly, writable.view(np.int8), writable[::2],
                                   writable.reshape(2, 2), np.asfortranarray(np.zeros((2, 3), np.uint8)))}
    assert len(keys) == 6
    assert value_key(1) != value_key(1.0) != value_key(True)
    assert value_key(np.int32(1)) != value_key(1)
    for unsupported in (None, "x", 2**64, [1, 2], object(), np.zeros(2, dtype=[("a", "<u4"), ("b", "<u4")]),
                        np.ma.masked_array([1, 2])):
        assert value_key(unsupported) is None
    assert value_key(Pair(1, 2)) != value_key((1, 2))  # a named tuple's fields are read by position
    assert from_json(json.loads(json.dumps(value_key((writable, 3))))) == value_key((writable, 3))


def test_a_build_is_refused_when_its_fingerprint_does_not_fit(tmp_path):
    sources = ["kernels/aot_keys.py"]
    (tmp_path / "detector_kernels_x.so").write_bytes(b"")
    manifest = {"format": aot_load.FORMAT, "sources": sources, "fingerprint": aot_load.fingerprint(sources),
                "module": "detector_kernels_x", "library": "detector_kernels_x.so", "variants": {}}
    (tmp_path / aot_load.MANIFEST).write_text(json.dumps(manifest))
    assert aot_load.status(tmp_path)[0]
    (tmp_path / aot_load.MANIFEST).write_text(json.dumps(manifest | {"fingerprint": "0" * 64}))
    ok, why = aot_load.status(tmp_path)
    assert not ok and "changed since the build" in why
    (tmp_path / aot_load.MANIFEST).write_text(json.dumps(manifest | {"library": "gone.so"}))
    assert not aot_load.status(tmp_path)[0]
    (tmp_path / aot_load.MANIFEST).write_text("{not json")
    assert "no build" in aot_load.status(tmp_path)[1]


def test_a_portable_build_ignores_the_cpu_model_and_clear_removes_only_the_build(tmp_path, monkeypatch):
    sources = ["kernels/aot_keys.py"]
    monkeypatch.setattr(aot_load, "_cpu_identity", lambda: "another model")
    assert aot_load.fingerprint(sources) != aot_load.fingerprint(sources, portable=True)
    portable = aot_load.fingerprint(sources, portable=True)
    monkeypatch.setattr(aot_load, "_cpu_identity", lambda: "a third model")
    assert aot_load.fingerprint(sources, portable=True) == portable
    (tmp_path / "detector_kernels_x.so").write_bytes(b"")
    (tmp_path / "mine.txt").write_text("not the build's")
    (tmp_path / aot_load.MANIFEST).write_text("{}")
    assert aot_load.clear(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def _env(folder: Path | None, **extra) -> dict:
    env = dict(os.environ, **extra)
    for var in ("NUMBA_DISABLE_JIT", "NUMBA_ENABLE_CUDASIM"):
        env.pop(var, None)
    if folder is not None:
        env["DETECTOR_AOT_DIR"] = str(folder)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_aot_status_and_clear_on_the_command_line(tmp_path):
    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "detector", "aot", *argv], env=_env(tmp_path / "aot"),
                              capture_output=True, text=True, timeout=120)

    status = cli("--status")
    assert status.returncode == 1 and "no build in" in status.stderr
    (tmp_path / "aot").mkdir()
    (tmp_path / "aot" / aot_load.MANIFEST).write_text(json.dumps({"format": 0}))
    status = cli("--status")
    assert status.returncode == 1 and "another version of detector" in status.stderr
    assert cli("--clear").returncode == 0
    assert not (tmp_path / "aot").exists()
    env = _env(tmp_path / "aot", PATH="", CC="no-such-compiler")  # no compiler: says so, builds nothing
    done = subprocess.run([sys.executable, "-m", "detector", "aot"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "needs a C compiler" in done.stderr and "Traceback" not in done.stderr
    assert "detector aot: CUDA kernels" in done.stderr  # compiled into their cache on a GPU, else why not


@pytest.fixture(scope="session")
def aot_folder(tmp_path_factory) -> Path:
    folder = aot_load.aot_dir()
    if os.environ.get("DETECTOR_AOT_DIR") is None and aot_load.status(folder)[0]:
        return folder
    folder = tmp_path_factory.mktemp("aot")
    done = subprocess.run([sys.executable, "-m", "detector", "aot"], env=_env(folder), capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    return folder


FLOWS = """
import json, sys
from detector.cli import main
rc = main(["flows", *sys.argv[1:], "-q", "--no-progress"])
from kernels import _jit
print(json.dumps({"rc": rc, "numba": "numba" in sys.modules, "aot": _jit.aot_in_use()}))
"""


def _flows(folder, aot: str, *argv) -> dict:
    done = subprocess.run([sys.executable, "-c", FLOWS, *map(str, argv)], env=_env(folder, DETECTOR_AOT=aot),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_compiled_ahead_give_numbas_flows_and_numba_is_not_imported(aot_folder, tmp_path, threads):
    caps = tmp_path / "caps"
    from detector.cli import main

    assert main(["synth", "hpc-mix", "exfil-dns-tunnel", "mitm-arp-spoof", "--packets", "4000", "-o", str(caps)]) == 0
    assert main(["synth", "scan-ports", "--packets", "3000", "--format", "pcapng", "--nanosecond",
                 "-o", str(caps / "ng")]) == 0
    ahead = _flows(aot_folder, "1", caps, "-o", tmp_path / "ahead.parquet", "--threads", threads)
    assert ahead == {"rc": 0, "numba": False, "aot": True}
    numba = _flows(aot_folder, "0", caps, "-o", tmp_path / "numba.parquet", "--threads", threads)
    assert numba == {"rc": 0, "numba": True, "aot": False}
    a, b = pq.read_table(tmp_path / "ahead.parquet"), pq.read_table(tmp_path / "numba.parquet")
    assert a.num_rows > 100
    assert a.equals(b)


LIVE = """
import json, sys
import numpy as np
from kernels import tpacket
off, lens, ts = np.empty(8, np.int64), np.empty(8, np.uint32), np.empty(8, np.int64)
got = tpacket.walk_block(np.zeros(64, np.uint8), 0, 64, off, lens, lens.copy(), ts, 0, False)  # as the daemon does
print(json.dumps({"got": int(got), "numba": "numba" in sys.modules}))
"""


def test_the_daemons_ring_walker_is_compiled_ahead(aot_folder):
    done = subprocess.run([sys.executable, "-c", LIVE], env=_env(aot_folder, DETECTOR_AOT="1"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"got": 0, "numba": False}


WALK = """
import json, sys
from detector.sources import open_capture
from detector.sources.parallel_walk import WalkPlan
plan = WalkPlan(threads=2, chunk_bytes=4096, min_chunk_bytes=64, min_file_bytes=0, min_copy_rows=1)
out = {}
for path in sys.argv[1:]:
    reader = open_capture(path, 1000, walk=plan)
    out[path] = [sum(b.n for b in reader.batches()), reader.walk_stats.kept > 0]
    reader.src.close()
print(json.dumps({"walked": out, "numba": "numba" in sys.modules}))
"""


def test_the_record_walk_on_threads_is_compiled_ahead(aot_folder, tmp_path):
    """Only captures far larger than the warm-up's are walked on threads: its kernels (guessing
    where records start) are in the build all the same."""
    from detector.cli import main

    assert main(["synth", "hpc-mix", "--packets", "5000", "-o", str(tmp_path / "a")]) == 0
    assert main(["synth", "hpc-mix", "--packets", "5000", "--format", "pcapng", "--nanosecond",
                 "-o", str(tmp_path / "b")]) == 0
    paths = [str(tmp_path / "a" / "hpc-mix.pcap"), str(tmp_path / "b" / "hpc-mix.pcapng")]
    done = subprocess.run([sys.executable, "-c", WALK, *paths], env=_env(aot_folder, DETECTOR_AOT="1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["numba"] is False
    for path in paths:
        count, threaded = out["walked"][path]
        assert threaded and count == 5000  # synth writes exactly --packets records


ANALYZE = """
import json, sys
from detector.cli import main
rc = main(["analyze", *sys.argv[1:], "-q", "--no-progress"])
print(json.dumps({"rc": rc, "numba": "numba" in sys.modules}))
"""


def test_analyze_alerts_are_the_same_with_kernels_compiled_ahead(aot_folder, tmp_path):
    from detector.cli import main

    caps = tmp_path / "caps"
    assert main(["synth", "exfil-dns-tunnel", "mitm-tls-cert", "--packets", "4000", "-o", str(caps)]) == 0
    alerts = {}
    for aot in ("1", "0"):
        out = tmp_path / f"alerts-{aot}.jsonl"
        done = subprocess.run([sys.executable, "-c", ANALYZE, str(caps), "--config", str(caps / "site.toml"),
                               "-o", str(out)], env=_env(aot_folder, DETECTOR_AOT=aot), capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"rc": 0, "numba": aot == "0"}
        alerts[aot] = [json.loads(line) for line in out.read_text().splitlines()]
    assert {a["technique"] for a in alerts["1"]} == {"dns_tunnel", "tls_cert_change"}
    assert alerts["1"] == alerts["0"]


FALLBACK = """
import json, sys
import numpy as np
from kernels import cuda_kernels, decode, flowtable  # cuda_kernels: its shared functions must become Numba's
hashes = np.arange(1000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
rows = np.zeros(1000, dtype=np.int64)
n = flowtable.rows_of_shard(hashes, 1000, 4, 1, rows)
before = "numba" in sys.modules
odd = hashes.copy(); odd.setflags(write=False)  # a read-only argument: no compiled-ahead signature
rows2 = np.zeros(1000, dtype=np.int64)
n2 = flowtable.rows_of_shard(odd, 1000, 4, 1, rows2)
rows3 = np.zeros(1000, dtype=np.int64)
n3 = flowtable.rows_of_shard.py_func(hashes, 1000, 4, 1, rows3)
print(json.dumps({"numba_before": before, "numba_after": "numba" in sys.modules,
                  "cuda_sees": type(cuda_kernels.decode_record).__name__,
                  "unroll_is_numbas": decode.literal_unroll is sys.modules["numba"].literal_unroll,
                  "same": bool(n == n2 == n3 and (rows[:n] == rows3[:n]).all() and (rows2[:n2] == rows3[:n3]).all()),
                  "n": int(n)}))
"""


def test_a_signature_the_build_lacks_goes_to_numba_with_the_same_result(aot_folder):
    done = subprocess.run([sys.executable, "-c", FALLBACK], env=_env(aot_folder, DETECTOR_AOT="1"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["numba_before"] is False and out["numba_after"] is True
    assert out["cuda_sees"] == "CPUDispatcher" and out["unroll_is_numbas"]
    assert out["same"] and 0 < out["n"] < 1000


def test_the_compiled_drivers_release_the_gil(aot_folder):
    """Flow threads share a batch only if the kernels let go of the GIL, as Numba's ``nogil``
    ones do: the module must call CPython's thread-state switch (pycc's wrappers do not, unless
    the build asks)."""
    manifest = json.loads((aot_folder / aot_load.MANIFEST).read_text())
    library = (aot_folder / manifest["library"]).read_bytes()
    assert b"PyEval_SaveThread" in library and b"PyEval_RestoreThread" in library
