"""k-nearest-neighbour distance (Ramaswamy, Rastogi and Shim, SIGMOD 2000): a row far from
its k-th nearest training row is anomalous.

Features are centred on their median and scaled by their IQR; up to ``max_reference`` training
rows (a deterministic sample) are kept as the reference set, in the model file. Distances are
exact Euclidean ones on every backend: scikit-learn's KD-tree on the CPU (``brute=True`` asks
for the chunked brute force in NumPy instead, which the tests compare with), and on the GPU
``cuml.neighbors.NearestNeighbors`` where cuML is installed, else the same chunked brute force
in CuPy. ``score_samples`` is minus the distance to the k-th neighbour.
"""

from __future__ import annotations

import numpy as np

from models.base import Scorer, robust_scaling

CHUNK = 4096


def _cuml_neighbors():
    try:
        from cuml.neighbors import NearestNeighbors
    except ImportError:
        return None
    return NearestNeighbors


class KnnDistance(Scorer):
    kind = "knn_distance"
    version = 1

    def __init__(self, k: int = 5, max_reference: int = 5000, random_state: int = 0):
        super().__init__()
        self.k, self.max_reference, self.random_state = k, max_reference, random_state

    def _fit(self, X: np.ndarray) -> None:
        if len(X) <= self.k:
            raise ValueError(f"needs more than k={self.k} rows")
        self.center_, self.scale_ = robust_scaling(X)
        Z = (X - self.center_) / self.scale_
        if len(Z) > self.max_reference:
            pick = np.random.default_rng(self.random_state).choice(len(Z), self.max_reference, replace=False)
            Z = Z[np.sort(pick)]
        self.reference_ = Z

    def _score(self, X, xp, brute: bool = False):
        Z = (X - xp.asarray(self.center_)) / xp.asarray(self.scale_)
        ref = xp.asarray(self.reference_)
        if xp is np and not brute:
            from sklearn.neighbors import KDTree

            dist, _ = KDTree(ref).query(Z, k=self.k)
            return -dist[:, self.k - 1]
        if xp is not np:
            neighbors = _cuml_neighbors()
            if neighbors is not None:
                dist, _ = neighbors(n_neighbors=self.k).fit(ref).kneighbors(Z)
                return -xp.asarray(dist)[:, self.k - 1]
        ref_sq = (ref ** 2).sum(axis=1)
        out = xp.empty(len(Z))
        for lo in range(0, len(Z), CHUNK):
            z = Z[lo:lo + CHUNK]
            d2 = xp.maximum((z ** 2).sum(axis=1)[:, None] + ref_sq[None, :] - 2.0 * z @ ref.T, 0.0)
            out[lo:lo + CHUNK] = -xp.sqrt(xp.partition(d2, self.k - 1, axis=1)[:, self.k - 1])
        return out

    def _arrays(self):
        return ({"k": self.k, "max_reference": self.max_reference, "random_state": self.random_state},
                {"center": self.center_, "scale": self.scale_, "reference": self.reference_})

    def _restore(self, meta, arrays):
        self.k, self.max_reference = int(meta["k"]), int(meta["max_reference"])
        self.random_state = int(meta["random_state"])
        self.center_, self.scale_, self.reference_ = arrays["center"], arrays["scale"], arrays["reference"]
        f = len(self.feature_names_)
        if self.center_.shape != (f,) or self.reference_.ndim != 2 or self.reference_.shape[1] != f \
                or len(self.reference_) <= self.k:
            raise ValueError("arrays do not match the feature schema or k")
