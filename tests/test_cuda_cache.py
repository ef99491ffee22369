"""The CUDA kernels' on-disk cache (kernels/cuda_cache.py): one folder per kernel sources and GPU
model, keys that a later process finds again, and nothing cached where nothing runs on a GPU.
(Loading kernels from it needs a GPU: benchmarks/device_check.sh's ``cache`` step measures it.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from kernels import aot_build, aot_load, cuda_cache
from tests.conftest import REPO


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """A copy of the kernel sources that the fingerprint reads instead of the checkout's."""
    shutil.copytree(REPO / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("__pycache__", "_aot"))
    monkeypatch.setattr(aot_load, "_KERNELS_DIR", tmp_path / "kernels")
    monkeypatch.setattr(aot_build, "ROOT", tmp_path)
    monkeypatch.setattr(cuda_cache, "_KERNELS_DIR", tmp_path / "kernels")
    cuda_cache.sources_fingerprint.cache_clear()
    yield tmp_path / "kernels"
    cuda_cache.sources_fingerprint.cache_clear()


def name_now(kernels_dir, cc=(9, 0)) -> str:
    cuda_cache.sources_fingerprint.cache_clear()
    return cuda_cache.folder_name(str(kernels_dir / "cuda_kernels.py"), cc)


def test_the_folder_changes_with_any_kernel_source_and_with_the_gpu(sources):
    first = name_now(sources)
    assert first == name_now(sources) and first.endswith("-sm90")
    assert name_now(sources, (8, 0)) != first and name_now(sources, (8, 0)).endswith("-sm80")
    for module in ("flowtable.py", "packet_columns.py", "cuda_kernels.py"):  # a callee, a constant, the kernels
        before = name_now(sources)
        with open(sources / module, "a") as f:
            f.write("\n# edited\n")
        assert name_now(sources) != before, module


def test_a_kernel_module_outside_kernels_is_fingerprinted_too(sources):
    models = sources.parent / "models"
    models.mkdir()
    (models / "gpu_scores.py").write_text("X = 1\n")
    before = cuda_cache.folder_name(str(models / "gpu_scores.py"), (9, 0))
    (models / "gpu_scores.py").write_text("X = 2\n")
    cuda_cache.sources_fingerprint.cache_clear()
    assert cuda_cache.folder_name(str(models / "gpu_scores.py"), (9, 0)) != before


def test_the_folder_is_made_under_the_chosen_root_or_reused_as_found(tmp_path, monkeypatch):
    monkeypatch.setenv(cuda_cache.ENV, str(tmp_path / "cache"))
    kernels_file = str(REPO / "kernels" / "cuda_kernels.py")
    made = cuda_cache.cache_folder(kernels_file, (9, 0))
    assert made.is_dir() and made.parent == tmp_path / "cache" and made.name.endswith("-sm90")
    assert cuda_cache.cache_folder(kernels_file, (9, 0)) == made
    monkeypatch.setenv(cuda_cache.ENV, str(tmp_path / "a-file" / "cache"))
    (tmp_path / "a-file").write_text("")
    assert cuda_cache.cache_folder(kernels_file, (9, 0)) is None  # nowhere to write: compiled every time


KEYS = """
import json, sys
from kernels.cuda_cache import _cache_class, _device_cc
from kernels.cuda_kernels import kernels

class Codegen:  # stands in for the GPU's (CUDA runtime version, compute capability)
    def magic_tuple(self):
        return ("runtime", (9, 0))

built = kernels()
keys = {}
for name in ("decode", "frag_claim", "walk"):
    cache = _cache_class(sys.argv[1], "stamp")(getattr(built, name).py_func)
    keys[name] = [cache.cache_path, repr(cache._index_key((), Codegen()))]
print(json.dumps({"keys": keys, "cc": _device_cc(), "cache": type(built.decode._cache).__name__}))
"""


def test_keys_are_found_again_by_the_next_process_and_nothing_is_cached_without_a_gpu(tmp_path):
    """Numba's own key hashes the pickled closure cells, which for a kernel calling a device function
    that calls an njit function differ in every process (frag_claim); the folder's fingerprint
    stands for them instead. Without a GPU the kernels get no cache (nothing to compile there)."""
    pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBA_DISABLE_JIT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", KEYS, str(tmp_path)], env=env, capture_output=True, text=True,
                              timeout=300, cwd=REPO)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["keys"] == second["keys"]
    assert all(path == str(tmp_path) for path, _ in first["keys"].values())
    assert first["cc"] is None and first["cache"] == "NullCache"


def test_warming_compiles_every_kernel_on_a_gpu_and_says_why_not_elsewhere(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBA_DISABLE_JIT")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
               DETECTOR_CUDA_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "kernels.cuda_warm"], env=env, capture_output=True, text=True,
                          timeout=900, cwd=REPO)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if done.returncode == 3:  # no GPU here (CI, the 2-core VM): nothing compiled, nothing written
        assert summary["skipped"] and not (tmp_path / "cache").exists()
        return
    from kernels.cuda_registry import registered

    assert done.returncode == 0, done.stderr
    assert summary["compiled"] + summary["loaded"] == len(registered())
    assert summary["folders"] and all(f.startswith(str(tmp_path / "cache")) for f in summary["folders"])


def test_warming_removes_folders_of_earlier_sources_and_keeps_other_gpus(tmp_path):
    from kernels.cuda_warm import prune

    for name in ("new-sm90", "new-sm80", "old-sm90", "old-sm80"):
        (tmp_path / name).mkdir()
    assert prune([str(tmp_path / "new-sm90")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new-sm80", "new-sm90"]
