"""Conformance of every scoring model: the scikit-learn conventions, files, and the quality bar
(AUC > 0.9 on planted anomalies)."""

from __future__ import annotations

import numpy as np
import pytest

from models.base import NotFittedError
from models.isolation_forest import IsolationForest
from models.knn import KnnDistance
from models.pca import PcaReconstruction
from models.robust_z import RobustZ
from models.store import ModelError

MODELS = [RobustZ, IsolationForest, PcaReconstruction, KnnDistance]
NAMES = ["bytes_out", "bytes_in", "destinations", "ports", "dns_queries", "connections"]


def normal_rows(rng, n):
    """Correlated, skewed host-window features, as traffic gives."""
    conns = rng.lognormal(3.0, 0.4, n)
    return np.column_stack([conns * rng.lognormal(8, 0.3, n), conns * rng.lognormal(9, 0.3, n),
                            conns * rng.uniform(0.2, 0.3, n), rng.poisson(4, n) + 1.0,
                            conns * rng.uniform(0.5, 0.7, n), conns])


def planted(rng, n):
    """Windows unlike the normal ones: exfiltration, scanning, DNS tunnelling."""
    x = normal_rows(rng, n)
    k = n // 3
    x[:k, 0] *= 40  # far more bytes out
    x[k:2 * k, 2] *= 30  # many destinations
    x[k:2 * k, 3] += 200  # and ports
    x[2 * k:, 4] *= 50  # a storm of DNS queries
    return x


def auc(normal_scores, anomaly_scores) -> float:
    """P(an anomaly scores lower than a normal row): scores are higher for normal rows."""
    s = np.concatenate([normal_scores, anomaly_scores])
    ranks = np.argsort(np.argsort(s)) + 1.0
    r_anom = ranks[len(normal_scores):].sum()
    n_a, n_n = len(anomaly_scores), len(normal_scores)
    return 1.0 - (r_anom - n_a * (n_a + 1) / 2) / (n_a * n_n)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return normal_rows(rng, 600), normal_rows(rng, 300), planted(rng, 90)


@pytest.mark.parametrize("cls", MODELS)
def test_fit_returns_self_and_shapes(cls, data):
    train, test, _ = data
    model = cls()
    assert model.fit(train, NAMES) is model
    assert model.feature_names_ == NAMES
    assert model.score_samples(test).shape == (len(test),)
    with pytest.raises(ValueError, match="features"):
        model.score_samples(test[:, :3])


@pytest.mark.parametrize("cls", MODELS)
def test_unfitted_model_raises(cls, data):
    with pytest.raises(NotFittedError):
        cls().score_samples(data[1])


@pytest.mark.parametrize("cls", MODELS)
def test_planted_anomalies_are_found(cls, data):
    train, test, anomalies = data
    model = cls().fit(train, NAMES)
    assert auc(model.score_samples(test), model.score_samples(anomalies)) > 0.9


@pytest.mark.parametrize("cls", MODELS)
def test_saved_and_loaded_model_scores_the_same(cls, data, tmp_path, monkeypatch):
    monkeypatch.delenv("DETECTOR_MODEL_KEY", raising=False)
    monkeypatch.delenv("DETECTOR_MODEL_KEY_FILE", raising=False)
    train, test, _ = data
    model = cls().fit(train, NAMES)
    path = str(tmp_path / "m.model")
    model.save(path)
    again = cls.load(path)
    assert np.array_equal(again.score_samples(test), model.score_samples(test))
    again.check_schema(NAMES)
    with pytest.raises(ModelError, match="schema"):
        again.check_schema(NAMES[::-1])
    other = next(c for c in MODELS if c is not cls)
    with pytest.raises(ModelError, match="not a"):
        other.load(path)


def test_isolation_forest_scores_equal_scikit_learn(data):
    """The array traversal (NumPy here, CuPy on a GPU) gives scikit-learn's scores."""
    from sklearn.ensemble import IsolationForest as SkForest

    train, test, anomalies = data
    rows = np.vstack([test, anomalies])
    ours = IsolationForest(n_estimators=50, random_state=3).fit(train, NAMES).score_samples(rows)
    theirs = SkForest(n_estimators=50, random_state=3).fit(train).score_samples(rows)
    assert np.allclose(ours, theirs, rtol=0, atol=1e-12)


def test_robust_z_is_per_entity_trims_poison_and_explains(data):
    rng = np.random.default_rng(1)
    quiet = normal_rows(rng, 200)
    busy = normal_rows(rng, 200) * 20
    poison = normal_rows(rng, 8) * 500  # a few windows an attacker slipped into training
    X = np.vstack([quiet, busy, poison])
    entities = ["quiet"] * 200 + ["busy"] * 208
    model = RobustZ().fit(X, NAMES, entities=entities)
    assert model.trimmed_ >= 8
    # the busy host's normal is the quiet host's anomaly, and the explanation says which feature
    row = busy[:1]
    assert model.score_samples(row, entities=["busy"])[0] > -4
    assert model.score_samples(row, entities=["quiet"])[0] < -10
    unseen = model.score_samples(row, entities=["never seen"])[0]  # the global baseline
    assert model.score_samples(row, entities=["quiet"])[0] < unseen
    spike = quiet[:1].copy()
    spike[0, 4] *= 100
    [why] = model.explain(spike, entities=["quiet"], top=2)
    assert why[0]["feature"] == "dns_queries" and why[0]["z"] > 10
    assert why[0]["value"] == pytest.approx(spike[0, 4]) and why[0]["baseline"] == pytest.approx(
        np.median(quiet[:, 4]), rel=0.05)


def test_pca_flags_a_broken_correlation_that_no_single_feature_shows(data):
    """Bytes out of a busy window with the connection count of a quiet one: each value alone
    is ordinary, together they are not."""
    train = data[0]
    model = PcaReconstruction().fit(train, NAMES)
    busy, quiet = np.quantile(train, 0.9, axis=0), np.quantile(train, 0.1, axis=0)
    row = busy.copy()
    row[5] = quiet[5]
    assert model.score_samples(row[None])[0] < np.quantile(model.score_samples(train), 0.01)
    assert RobustZ().fit(train, NAMES).score_samples(row[None])[0] > -3  # per feature, nothing stands out


def test_robust_z_online_updates_move_by_bounded_steps():
    rng = np.random.default_rng(3)
    X = normal_rows(rng, 300)
    model = RobustZ().fit(X, NAMES, entities=["h"] * 300)
    before = model.median_[0].copy()
    shifted = X[:50] * 3  # the host's normal grows
    assert model.update(shifted, ["h"] * 50) == 50
    moved = model.median_[0] - before
    assert (moved > 0).all() and (moved <= 50 * 0.05 * model.scale_[0] + 1e-9).all()
    assert model.update(shifted, ["never seen"] * 50) == 0  # no baseline of its own: not learned


def test_knn_distance_equals_scikit_learn_neighbours(data):
    from sklearn.neighbors import NearestNeighbors

    train, test, _ = data
    model = KnnDistance(k=3).fit(train, NAMES)
    dist, _ = NearestNeighbors(n_neighbors=3).fit(model.reference_).kneighbors((test - model.center_) / model.scale_)
    assert np.allclose(model.score_samples(test), -dist[:, 2], rtol=1e-9, atol=1e-9)
    # the array code the GPU runs (CuPy there, NumPy here) gives the KD-tree's distances
    assert np.allclose(model.score_samples(test, brute=True), -dist[:, 2], rtol=1e-7, atol=1e-7)


def test_robust_z_scale_floor_keeps_always_zero_features_sane():
    rng = np.random.default_rng(5)
    X = np.column_stack([rng.normal(5, 1, 200), np.zeros(200)])
    model = RobustZ(abs_min_scale=0.25).fit(X, ["busy", "never"], entities=["h"] * 200)
    z = np.asarray(model.z(np.array([[5.0, np.log1p(1)]]), ["h"]))[0]
    assert 2 < z[1] < 3  # one event where there never was one: notable, not a billion deviations
    model.update(np.tile([5.0, 0.0], (500, 1)), ["h"] * 500)
    assert (model.scale_ >= model.floor_ - 1e-12).all()  # online updates keep the training floor
