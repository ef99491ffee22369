"""The GPU part of a site model: how the site's GPUs work, learned from telemetry taken as
normal (``detector train --gpu-log``), and the windows unlike it.

Per (node, GPU, window) features (:mod:`detector.telemetry.gpu_windows`), in ``log1p`` units:

- an Isolation Forest (Liu et al. 2008) over all training windows learns the shapes the site's
  GPUs take (idle, training that breathes, inference in bursts), whatever node they ran on: a
  node idle in training that later runs a job is not, by that alone, unusual;
- robust baselines (median and MAD, :class:`models.robust_z.RobustZ`) of busy windows and of
  idle ones (``busy_share`` at least one half, or not) explain a window feature by feature
  against the windows of its kind: a miner's "utilisation spread 0.4 % against a usual 24 %
  for busy GPUs".

A window is unlike the training when its forest score is below the ``if_quantile`` quantile of
the training windows (less ``IF_MARGIN``) and a feature is ``z_alert`` robust deviations from
its kind's baseline: both, as for host windows (:mod:`detector.baseline.site_model`).
"""

from __future__ import annotations

import numpy as np

from detector.telemetry.gpu_windows import GPU_FEATURES
from models.isolation_forest import IsolationForest
from models.robust_z import RobustZ
from models.store import ModelFile

IF_MARGIN = 0.01
LOG_MIN_SCALE = 0.25


def kinds(X: np.ndarray) -> list[str]:
    """Each window's kind: busy (half its samples or more at busy utilisation) or idle."""
    busy = X[:, GPU_FEATURES.index("busy_share")] >= 0.5
    return ["busy" if b else "idle" for b in busy.tolist()]


class GpuProfileModel:
    def __init__(self, window_s: float = 3600.0, z_alert: float = 6.0, if_quantile: float = 0.001):
        self.window_s, self.z_alert, self.if_quantile = window_s, z_alert, if_quantile
        self.baseline: RobustZ | None = None
        self.forest: IsolationForest | None = None
        self.if_threshold = -1.0
        self.windows_trained = 0
        self.nodes: list[str] = []

    def fit(self, nodes: list[str], X: np.ndarray) -> GpuProfileModel:
        if len(X) < 2:
            raise ValueError("too little GPU telemetry to learn from: fewer than two GPU windows")
        L = np.log1p(np.maximum(X, 0.0))
        self.baseline = RobustZ(abs_min_scale=LOG_MIN_SCALE).fit(L, list(GPU_FEATURES), entities=kinds(X))
        self.forest = IsolationForest(n_estimators=100, random_state=0).fit(L, list(GPU_FEATURES))
        self.if_threshold = float(np.quantile(self.forest.score_samples(L), self.if_quantile))
        self.windows_trained = len(X)
        self.nodes = sorted(set(nodes))
        return self

    def judge(self, X: np.ndarray) -> list[dict | None]:
        """Per window: None when usual, else its score, kind and deviating features."""
        if not len(X):
            return []
        L = np.log1p(np.maximum(X, 0.0))
        scores = self.forest.score_samples(L)
        k = kinds(X)
        z = np.asarray(self.baseline.z(L, k))
        out: list[dict | None] = []
        for i in range(len(X)):
            zmax = float(np.abs(z[i]).max())
            if not (scores[i] < self.if_threshold - IF_MARGIN and zmax >= self.z_alert):
                out.append(None)
                continue
            row = self.baseline.entity_rows([k[i]], 1)[0]
            order = np.argsort(-np.abs(z[i]), kind="stable")
            out.append({"score": float(scores[i]), "kind": k[i], "deviations": [
                {"feature": GPU_FEATURES[j], "value": round(float(X[i, j]), 2),
                 "baseline": round(float(np.expm1(self.baseline.median_[row, j])), 2), "z": round(float(z[i, j]), 1)}
                for j in order[:4].tolist() if abs(z[i, j]) >= self.z_alert / 2]})
        return out

    # -- inside a site model's file ------------------------------------------------------------
    def to_parts(self) -> tuple[dict, dict[str, np.ndarray]]:
        z, f = self.baseline.to_file(), self.forest.to_file()
        meta = {"window_s": self.window_s, "z_alert": self.z_alert, "if_quantile": self.if_quantile,
                "if_threshold": self.if_threshold, "windows_trained": self.windows_trained, "nodes": self.nodes,
                "features": list(GPU_FEATURES), "z": z.meta, "if": f.meta}
        return meta, {**{f"z.{k}": v for k, v in z.arrays.items()}, **{f"if.{k}": v for k, v in f.arrays.items()}}

    @classmethod
    def from_parts(cls, meta: dict, arrays: dict[str, np.ndarray], path: str) -> GpuProfileModel:
        from models.store import ModelError

        if list(meta["features"]) != list(GPU_FEATURES):
            raise ModelError(path, "the GPU profile was learned on other features: train the model again")
        m = cls(float(meta["window_s"]), float(meta["z_alert"]), float(meta["if_quantile"]))
        m.if_threshold, m.windows_trained = float(meta["if_threshold"]), int(meta["windows_trained"])
        m.nodes = [str(n) for n in meta["nodes"]]

        def part(prefix: str, kind: str) -> ModelFile:
            return ModelFile(kind, 1, list(GPU_FEATURES), meta[prefix],
                             {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + ".")})

        m.baseline = RobustZ.from_file(part("z", RobustZ.kind), path)
        m.forest = IsolationForest.from_file(part("if", IsolationForest.kind), path)
        return m
