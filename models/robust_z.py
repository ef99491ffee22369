"""Robust per-feature z-scores per entity (median and MAD), the explanation behind every
``anomaly`` alert, in the manner of Morpheus DFP's per-feature z of the reconstruction loss.

For each entity (a host, or a role) and feature: the median and the MAD scaled by 1.4826 (so
that it estimates the standard deviation of normal data), floored at ``min_scale`` times the
feature's global scale so that a feature constant in training does not make every change
infinite, and never below ``abs_min_scale`` (in the features' units: a feature that was always
zero in training gets a scale a change of a few events stands out against, not one that makes a
single event a billion deviations). Entities with fewer than ``min_rows`` training rows, and entities never seen, use
the global baseline. Training trims outliers: rows of an entity with a baseline of its own whose
|z| exceeds ``trim_z`` in any feature against a first fit are dropped and the baselines are
fitted again (robust to a poisoned minority of windows).
``score_samples`` is minus the largest |z| of the row.
"""

from __future__ import annotations

import numpy as np

from models.base import Scorer, array_namespace, as_matrix

MAD_TO_SD = 1.4826


def _median_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    med = np.median(X, axis=0)
    return med, MAD_TO_SD * np.median(np.abs(X - med), axis=0)


class RobustZ(Scorer):
    kind = "robust_z"
    version = 1

    def __init__(self, min_rows: int = 8, trim_z: float = 6.0, min_scale: float = 0.05, abs_min_scale: float = 1e-9):
        super().__init__()
        self.min_rows, self.trim_z, self.min_scale = min_rows, trim_z, min_scale
        self.abs_min_scale = abs_min_scale

    def _baselines(self, X: np.ndarray, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        med, scale = np.empty((n + 1, X.shape[1])), np.empty((n + 1, X.shape[1]))
        med[n], scale[n] = _median_scale(X)
        floor = np.maximum(self.min_scale * np.where(scale[n] > 0, scale[n], np.abs(med[n])), self.abs_min_scale)
        scale[n] = np.maximum(scale[n], floor)
        self.floor_ = floor
        self.own_ = np.zeros(n, bool)
        for e in range(n):
            rows = X[codes == e]
            if len(rows) >= self.min_rows:
                med[e], s = _median_scale(rows)
                scale[e] = np.maximum(s, floor)
                self.own_[e] = True
            else:
                med[e], scale[e] = med[n], scale[n]
        return med, scale

    def _fit(self, X: np.ndarray, entities=None) -> None:
        names = sorted(set(entities)) if entities is not None else []
        index = {e: k for k, e in enumerate(names)}
        codes = np.array([index[e] for e in entities], np.int64) if entities is not None \
            else np.zeros(len(X), np.int64)
        n = len(names)
        med, scale = self._baselines(X, codes, n)
        z = np.abs(X - med[codes]) / scale[codes]  # without entities, code 0 is the global row
        # trim against an entity's own baseline only: the site-wide one spans unlike hosts
        own = np.bincount(codes, minlength=max(n, 1))[codes] >= self.min_rows
        keep = ~own | (z.max(axis=1) <= self.trim_z)
        if keep.sum() >= max(self.min_rows, len(X) // 2):  # never trim away most of the data
            med, scale = self._baselines(X[keep], codes[keep], n)
        self.trimmed_ = int((~keep).sum())
        self.entities_ = names
        self._index = index
        self.median_, self.scale_ = med, scale

    def knows(self, entity) -> bool:
        """Whether ``entity`` was in the training data."""
        return entity in self._index

    def entity_rows(self, entities, count: int) -> np.ndarray:
        """Each row's baseline index: its entity's, or the global one (the last)."""
        n = len(self.entities_)
        if entities is None:
            return np.full(count, n, np.int64)
        return np.array([self._index.get(e, n) for e in entities], np.int64)

    def z(self, X, entities=None):
        """Signed z of every feature of every row against its entity's baseline."""
        self._check_fitted()
        xp = array_namespace(X)
        X = as_matrix(X, len(self.feature_names_), xp)
        rows = xp.asarray(self.entity_rows(entities, len(X)))
        return (X - xp.asarray(self.median_)[rows]) / xp.asarray(self.scale_)[rows]

    def _score(self, X, xp, entities=None):
        rows = xp.asarray(self.entity_rows(entities, len(X)))
        return -xp.max(xp.abs(X - xp.asarray(self.median_)[rows]) / xp.asarray(self.scale_)[rows], axis=1)

    def update(self, X, entities=None, step: float = 0.05) -> int:
        """Online update with rows taken as normal (the caller leaves out the rows it flagged,
        as river's QuantileFilter does): each known entity's median moves by at most ``step``
        times its scale toward each row (the Robbins-Monro stochastic median), and its scale
        toward the row's absolute deviation the same way. One row cannot drag a baseline: it
        moves it by a bounded step. Rows of entities without a baseline of their own are not
        learned (they need a retraining). Returns the rows learned."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        rows = self.entity_rows(entities, len(X))
        n, floor = len(self.entities_), self.floor_
        learned = 0
        for i in np.flatnonzero(rows < n).tolist():
            e = rows[i]
            if not self.own_[e]:
                continue
            med, scale = self.median_[e], self.scale_[e]
            dev = X[i] - med
            med += step * scale * np.sign(dev)
            scale += step * scale * np.sign(MAD_TO_SD * np.abs(dev) - scale)
            np.maximum(scale, floor, out=scale)
            learned += 1
        return learned

    def explain(self, X, entities=None, top: int = 3) -> list[list[dict]]:
        """For each row, the ``top`` features that deviate most: name, observed value, the
        entity's baseline (median), its scale, and z."""
        z = np.asarray(self.z(X, entities))
        X = np.asarray(X, dtype=np.float64)
        rows = self.entity_rows(entities, len(X))
        out = []
        for i in range(len(X)):
            order = np.argsort(-np.abs(z[i]), kind="stable")[:top]
            out.append([{"feature": self.feature_names_[j], "value": float(X[i, j]),
                         "baseline": float(self.median_[rows[i], j]), "scale": float(self.scale_[rows[i], j]),
                         "z": round(float(z[i, j]), 2)} for j in order.tolist()])
        return out

    def _arrays(self):
        return ({"entities": self.entities_, "min_rows": self.min_rows, "trim_z": self.trim_z,
                 "min_scale": self.min_scale, "abs_min_scale": self.abs_min_scale, "trimmed": self.trimmed_},
                {"median": self.median_, "scale": self.scale_, "own": self.own_, "floor": self.floor_})

    def _restore(self, meta, arrays):
        self.min_rows, self.trim_z, self.min_scale = int(meta["min_rows"]), float(meta["trim_z"]), \
            float(meta["min_scale"])
        self.entities_ = [str(e) for e in meta["entities"]]
        self._index = {e: k for k, e in enumerate(self.entities_)}
        self.trimmed_ = int(meta["trimmed"])
        self.abs_min_scale = float(meta["abs_min_scale"])
        self.median_, self.scale_, self.own_ = arrays["median"], arrays["scale"], arrays["own"].astype(bool)
        self.floor_ = arrays["floor"]
        if self.median_.shape != self.scale_.shape or len(self.median_) != len(self.entities_) + 1 \
                or len(self.own_) != len(self.entities_) or self.floor_.shape != self.median_.shape[1:]:
            raise ValueError("median and scale do not match the entities")
