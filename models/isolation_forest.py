"""Isolation Forest (Liu, Ting and Zhou, ICDM 2008).

Fitted with scikit-learn's ``IsolationForest`` on the CPU (cuML's ``IsolationForest`` is not
used: a forest it fits can be saved only through pickle, which model files refuse). The fitted trees are then kept as flat arrays: left and
right children, the split feature (in the input's column order) and threshold, and per node
the path length a row ending there gets (its depth plus the average path length of the
training rows left in it). Scoring walks every tree for every row at once with array
operations in ``xp``: NumPy on the CPU, CuPy on the GPU (the tree-traversal "kernel" for a
forest fitted on the CPU), and gives scikit-learn's ``score_samples`` exactly: minus
2^(-mean path length / c(max_samples)). Model files hold those arrays, never a pickle.
"""

from __future__ import annotations

import numpy as np

from models.base import Scorer


def average_path_length(n):
    """c(n): the average path length of an unsuccessful search in a binary search tree of n."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class IsolationForest(Scorer):
    kind = "isolation_forest"
    version = 1

    def __init__(self, n_estimators: int = 100, max_samples="auto", random_state: int = 0):
        super().__init__()
        self.n_estimators, self.max_samples, self.random_state = n_estimators, max_samples, random_state

    def _fit(self, X: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest as SkForest

        forest = SkForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                          random_state=self.random_state).fit(X)
        roots, left, right, feature, threshold, path = [], [], [], [], [], []
        base = 0
        for tree, features in zip(forest.estimators_, forest.estimators_features_):
            t = tree.tree_
            leaf = t.children_left == -1
            roots.append(base)
            left.append(np.where(leaf, -1, t.children_left + base))
            right.append(np.where(leaf, -1, t.children_right + base))
            feature.append(np.where(leaf, 0, np.asarray(features)[np.maximum(t.feature, 0)]))
            threshold.append(t.threshold)
            path.append(t.compute_node_depths() + average_path_length(t.n_node_samples) - 1.0)
            base += t.node_count
        self.roots_ = np.array(roots, np.int64)
        self.left_, self.right_ = np.concatenate(left).astype(np.int64), np.concatenate(right).astype(np.int64)
        self.feature_ = np.concatenate(feature).astype(np.int64)
        self.threshold_ = np.concatenate(threshold).astype(np.float64)
        self.path_ = np.concatenate(path).astype(np.float64)
        self.max_samples_ = int(forest.max_samples_)
        self.max_depth_ = int(max(e.tree_.max_depth for e in forest.estimators_))

    def _score(self, X, xp):
        # scikit-learn's trees compare float32 inputs with float64 thresholds: do the same
        X = X.astype(xp.float32).astype(xp.float64)
        left, right = xp.asarray(self.left_), xp.asarray(self.right_)
        feature, threshold = xp.asarray(self.feature_), xp.asarray(self.threshold_)
        node = xp.broadcast_to(xp.asarray(self.roots_), (len(X), len(self.roots_))).copy()
        for _ in range(self.max_depth_):
            value = xp.take_along_axis(X, feature[node], axis=1)
            nxt = xp.where(value <= threshold[node], left[node], right[node])
            node = xp.where(nxt >= 0, nxt, node)  # leaves stay
        depth = xp.asarray(self.path_)[node].sum(axis=1)
        denominator = len(self.roots_) * float(average_path_length([self.max_samples_])[0])
        if denominator == 0:
            return -xp.ones(len(X))
        return -(2.0 ** (-depth / denominator))

    def _arrays(self):
        return ({"n_estimators": self.n_estimators, "max_samples": self.max_samples, "random_state": self.random_state,
                 "max_samples_fitted": self.max_samples_, "max_depth": self.max_depth_},
                {"roots": self.roots_, "left": self.left_, "right": self.right_, "feature": self.feature_,
                 "threshold": self.threshold_, "path": self.path_})

    def _restore(self, meta, arrays):
        self.n_estimators, self.max_samples = int(meta["n_estimators"]), meta["max_samples"]
        self.random_state = int(meta["random_state"])
        self.max_samples_, self.max_depth_ = int(meta["max_samples_fitted"]), int(meta["max_depth"])
        for name in ("roots", "left", "right", "feature", "threshold", "path"):
            setattr(self, f"{name}_", arrays[name])
        nodes = len(self.left_)
        if not all(len(getattr(self, f"{n}_")) == nodes for n in ("right", "feature", "threshold", "path")):
            raise ValueError("tree arrays of different lengths")
        if (self.left_.max(initial=-1) >= nodes or self.right_.max(initial=-1) >= nodes
                or (self.roots_ >= nodes).any() or (self.roots_ < 0).any() or (self.feature_ < 0).any()
                or (self.feature_ >= len(self.feature_names_)).any()):
            raise ValueError("tree arrays point outside the forest or the features")
