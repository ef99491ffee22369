"""On a real GPU: the GPU backend gives the CPU's flows (the inter-arrival std to 1e-9 relative,
see FLOAT_RTOL) and alerts, and the feature math agrees to 1e-9 relative. Skipped where no CUDA GPU
is usable (and under the simulator, see tests/test_cudasim.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from detector.backend import CPU, BackendUnavailable, select_backend
from detector.config import FlowConfig
from detector.pipeline.flows_job import run_flows
from kernels import features
from tests.conftest import corpus_files
from tests.flow_compare import assert_same, assert_same_alerts

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    try:
        backend = select_backend("gpu")
    except BackendUnavailable as exc:
        pytest.skip(f"no GPU: {exc}")
    if backend.simulated:
        pytest.skip("the CUDA simulator is not a GPU")
    return backend


def flows_on(backend, path, tmp_path, name, **cfg):
    out = tmp_path / f"{name}.parquet"
    config = dataclasses.replace(FlowConfig(), **cfg)
    result = run_flows([str(path)], str(out), "parquet", config, progress=False, backend=backend)
    return pq.read_table(out).sort_by("uid"), result


CORPUS = corpus_files()


@pytest.mark.corpus
@pytest.mark.parametrize("path", CORPUS, ids=[f"{p.parent.name}/{p.name}" for p in CORPUS])
def test_gpu_flows_equal_cpu_on_corpus(gpu, corpus, tmp_path, path):
    assert_same(flows_on(CPU, path, tmp_path, "cpu")[0], flows_on(gpu, path, tmp_path, "gpu")[0])


@pytest.mark.slow
def test_gpu_flows_equal_cpu_on_a_million_packets(gpu, tmp_path):
    from detector.synth.encode import encode
    from detector.synth.scenarios import hpc_mix

    sc = hpc_mix(packets=1_200_000, seed=2)
    path = tmp_path / "mix.pcap"
    path.write_bytes(encode(sc.packets, sc.pool))
    cpu, r1 = flows_on(CPU, path, tmp_path, "cpu")
    gpu_table, r2 = flows_on(gpu, path, tmp_path, "gpu")
    assert r1.summary["packets"] == r2.summary["packets"] == 1_200_000
    assert_same(cpu, gpu_table)


def test_gpu_features_match_cpu(gpu):
    cp = gpu.xp
    rng = np.random.default_rng(4)
    n = 200_000
    group = rng.integers(0, 5000, n)
    ts = rng.uniform(0, 86400, n)
    a = features.interarrival_stats(np, group, ts)
    b = features.interarrival_stats(cp, cp.asarray(group), cp.asarray(ts))
    for k in a:
        np.testing.assert_allclose(cp.asnumpy(b[k]), a[k], rtol=1e-9, equal_nan=True, err_msg=k)
    cols = [rng.integers(0, 50, n), rng.integers(0, 24, n), rng.integers(0, 1000, n), rng.integers(0, 100, n),
            rng.integers(0, 10**6, n), rng.integers(0, 10**6, n)]
    a = features.host_window_features(np, *cols)
    b = features.host_window_features(cp, *(cp.asarray(c) for c in cols))
    for k in a:
        np.testing.assert_allclose(cp.asnumpy(b[k]), a[k], rtol=1e-9, err_msg=k)


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("name", ["robust_z", "isolation_forest", "pca_reconstruction", "knn_distance"])
def test_model_scores_on_the_gpu_agree_with_the_cpu(gpu, name):
    """Models fitted on the CPU score CuPy arrays with the same array code: the deterministic
    scorers agree to rank correlation 0.99 and more (here: to 1e-9 relative)."""
    from models.isolation_forest import IsolationForest
    from models.knn import KnnDistance
    from models.pca import PcaReconstruction
    from models.robust_z import RobustZ

    cls = {"robust_z": RobustZ, "isolation_forest": IsolationForest, "pca_reconstruction": PcaReconstruction,
           "knn_distance": KnnDistance}[name]
    rng = np.random.default_rng(9)
    train = rng.lognormal(0, 1, (5000, 8))
    rows = np.vstack([rng.lognormal(0, 1, (20000, 8)), rng.lognormal(2, 1, (200, 8))])
    model = cls().fit(train)
    cpu = model.score_samples(rows)
    on_gpu = gpu.xp.asnumpy(model.score_samples(gpu.xp.asarray(rows)))
    assert _spearman(cpu, on_gpu) >= 0.99
    np.testing.assert_allclose(on_gpu, cpu, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_gpu_alerts_equal_cpu_on_every_attack_scenario(gpu, tmp_path):
    """``detector analyze`` on the GPU gives the CPU's alerts, field by field, on every
    synthetic attack at full size, with the site's own configuration."""
    from detector.config import load_config
    from detector.pipeline.analyze_job import run_analyze
    from detector.synth.attacks import ATTACKS
    from detector.synth.encode import encode
    from detector.synth.scenarios import SCENARIOS
    from detector.synth.site import Site

    config = tmp_path / "site.toml"
    config.write_text(Site().config_toml())
    cfg = load_config(str(config))
    techniques = set()
    for name in sorted(ATTACKS):
        sc = SCENARIOS[name](packets=20_000, seed=5)
        path = tmp_path / f"{name}.pcap"
        path.write_bytes(encode(sc.packets, sc.pool))
        cpu = run_analyze([str(path)], cfg, None, progress=False, backend=CPU)
        on_gpu = run_analyze([str(path)], cfg, None, progress=False, backend=gpu)
        assert on_gpu.summary["backend"] == "gpu"
        assert on_gpu.summary["flows"] == cpu.summary["flows"], name
        assert_same_alerts([a.to_dict() for a in cpu.alerts], [a.to_dict() for a in on_gpu.alerts], name)
        techniques |= {a.technique for a in cpu.alerts}
    assert len(techniques) >= 20
