"""Kernels loaded from Numba's on-disk cache: the same results, without readying the compiler.

Each check runs in a fresh interpreter, as a real start-up does, with its own cache folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

KERNEL = textwrap.dedent("""
    import numpy as np
    from kernels._jit import cpu_kernel, device_fn

    @device_fn
    def twice(x):
        return 2 * x

    @cpu_kernel
    def total(a):
        s = 0
        for i in range(a.shape[0]):
            s += twice(a[i])
        return s
""")

RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cached_kernel
    value = int(cached_kernel.total(np.arange(10, dtype=np.int64)))
    print(json.dumps({"value": value,
                      "cache_hits": sum(cached_kernel.total.stats.cache_hits.values()),
                      "compiler_ready": "numba.np.arraymath" in sys.modules}))
""")


def _run(tmp_path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["DETECTOR_AOT"] = "0"  # Numba's own dispatchers, whatever ahead-of-time build is present
    env.pop("NUMBA_DISABLE_JIT", None)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True, timeout=300,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_cached_kernel_loads_without_the_compiler_and_gives_the_same_result(tmp_path):
    (tmp_path / "cached_kernel.py").write_text(KERNEL)
    first = _run(tmp_path)
    assert first == {"value": 90, "cache_hits": 0, "compiler_ready": True}  # compiled, then stored
    second = _run(tmp_path)
    assert second == {"value": 90, "cache_hits": 1, "compiler_ready": False}


def test_a_changed_kernel_is_compiled_again(tmp_path):
    (tmp_path / "cached_kernel.py").write_text(KERNEL)
    _run(tmp_path)
    (tmp_path / "cached_kernel.py").write_text(KERNEL.replace("2 * x", "3 * x"))
    os.utime(tmp_path / "cached_kernel.py", (1, 1))  # a different time stamp invalidates the entry
    assert _run(tmp_path) == {"value": 135, "cache_hits": 0, "compiler_ready": True}
