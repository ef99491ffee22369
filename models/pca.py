"""PCA reconstruction error (Shyu et al., "A novel anomaly detection scheme based on principal
component classifier", 2003): rows the main components of normal data do not explain are
anomalous.

Features are centred on their median and scaled by their IQR (robust to the outliers a
training set may hold), the components are fitted on the rows left after trimming those whose
first-pass error is above the ``trim_quantile`` quantile, and the smallest number of components
that explains ``variance`` of the variance is kept. ``score_samples`` is minus the squared
reconstruction error; ``residuals`` gives it per feature (what explains a high score). Deterministic,
and written against ``xp`` so that it scores on NumPy or CuPy.
"""

from __future__ import annotations

import numpy as np

from models.base import Scorer, array_namespace, as_matrix, robust_scaling


class PcaReconstruction(Scorer):
    kind = "pca_reconstruction"
    version = 1

    def __init__(self, variance: float = 0.95, trim_quantile: float = 0.95):
        super().__init__()
        self.variance, self.trim_quantile = variance, trim_quantile

    def _components(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = Z.mean(axis=0)
        _, s, vt = np.linalg.svd(Z - mean, full_matrices=False)
        share = np.cumsum(s ** 2) / max(float((s ** 2).sum()), 1e-300)
        k = int(np.searchsorted(share, self.variance) + 1)
        return mean, vt[:min(k, len(vt))]

    def _fit(self, X: np.ndarray) -> None:
        self.center_, self.scale_ = robust_scaling(X)
        Z = (X - self.center_) / self.scale_
        mean, comp = self._components(Z)
        D = Z - mean
        err = ((D - (D @ comp.T) @ comp) ** 2).sum(axis=1)
        keep = err <= np.quantile(err, self.trim_quantile)
        self.mean_, self.components_ = self._components(Z[keep]) if keep.sum() > X.shape[1] else (mean, comp)

    def residuals(self, X):
        """Per-feature reconstruction residual (in robust units) of every row."""
        self._check_fitted()
        xp = array_namespace(X)
        Z = (as_matrix(X, len(self.feature_names_), xp) - xp.asarray(self.center_)) / xp.asarray(self.scale_)
        D = Z - xp.asarray(self.mean_)
        comp = xp.asarray(self.components_)
        return D - (D @ comp.T) @ comp

    def _score(self, X, xp):
        return -(self.residuals(X) ** 2).sum(axis=1)

    def _arrays(self):
        return ({"variance": self.variance, "trim_quantile": self.trim_quantile},
                {"center": self.center_, "scale": self.scale_, "mean": self.mean_, "components": self.components_})

    def _restore(self, meta, arrays):
        self.variance, self.trim_quantile = float(meta["variance"]), float(meta["trim_quantile"])
        self.center_, self.scale_, self.components_ = arrays["center"], arrays["scale"], arrays["components"]
        self.mean_ = arrays["mean"]
        f = len(self.feature_names_)
        if self.center_.shape != (f,) or self.scale_.shape != (f,) or self.mean_.shape != (f,) \
                or self.components_.shape[1:] != (f,):
            raise ValueError("arrays do not match the feature schema")
