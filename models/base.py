"""What every scoring model shares: the scikit-learn conventions (``fit`` returns the model,
fitted attributes end in ``_``, ``score_samples`` is higher for more normal rows), a feature
schema recorded with the model, and saving to and loading from :mod:`models.store` files.

Scoring is written against an array namespace ``xp``: NumPy on the CPU, CuPy on the GPU when
the input is a CuPy array (imported only then), so a model fitted on the CPU scores on either.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from models.store import ModelError, ModelFile, load, save


class NotFittedError(ValueError):
    """The model is used before ``fit`` (or loading)."""


def array_namespace(x):
    """NumPy, or CuPy for CuPy arrays (imported only when given one)."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def as_matrix(X, n_features: int | None = None, xp=np) -> np.ndarray:
    X = xp.asarray(X, dtype=xp.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows and features, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features, got {X.shape[1]}")
    return X


def robust_scaling(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and IQR (the IQR of a constant feature is its magnitude, or 1)."""
    center = np.median(X, axis=0)
    q75, q25 = np.percentile(X, [75, 25], axis=0)
    iqr = q75 - q25
    return center, np.where(iqr > 0, iqr, np.maximum(np.abs(center), 1.0))


class Scorer:
    """Base class. Subclasses set ``kind`` and implement ``_fit``, ``_score``, ``_arrays`` and
    ``_restore``."""

    kind: ClassVar[str] = "scorer"
    version: ClassVar[int] = 1

    def __init__(self):
        self.feature_names_: list[str] | None = None

    @property
    def fitted(self) -> bool:
        return self.feature_names_ is not None

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit() or load() first")

    def fit(self, X, feature_names: list[str] | None = None, **kw):
        X = as_matrix(X)
        if len(X) == 0:
            raise ValueError("cannot fit on zero rows")
        names = list(feature_names) if feature_names is not None else [f"f{j}" for j in range(X.shape[1])]
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} feature names for {X.shape[1]} features")
        self._fit(X, **kw)
        self.feature_names_ = names
        return self

    def score_samples(self, X, **kw):
        """Higher is more normal (scikit-learn's convention)."""
        self._check_fitted()
        xp = array_namespace(X)
        return self._score(as_matrix(X, len(self.feature_names_), xp), xp, **kw)

    # -- files ---------------------------------------------------------------------------------
    def to_file(self) -> ModelFile:
        self._check_fitted()
        meta, arrays = self._arrays()
        return ModelFile(self.kind, self.version, list(self.feature_names_), meta, arrays)

    @classmethod
    def from_file(cls, mf: ModelFile, path: str = "model"):
        if mf.kind != cls.kind:
            raise ModelError(path, f"holds a {mf.kind!r} model, not a {cls.kind!r} one")
        if mf.version != cls.version:
            raise ModelError(path, f"{cls.kind} format version {mf.version} is not supported (this version "
                                   f"reads {cls.version})")
        model = cls.__new__(cls)
        Scorer.__init__(model)
        model.feature_names_ = list(mf.schema)
        try:
            model._restore(mf.meta, mf.arrays)
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(path, f"incomplete {cls.kind} model: {exc}") from None
        return model

    def save(self, path: str, key: bytes | None = None) -> None:
        save(path, self.to_file(), key)

    @classmethod
    def load(cls, path: str, key: bytes | None = None):
        return cls.from_file(load(path, key, kind=cls.kind), path)

    def check_schema(self, names: list[str], path: str = "model") -> None:
        """A model scores only the features it was fitted on, in the same order."""
        self._check_fitted()
        if list(names) != self.feature_names_:
            raise ModelError(path, f"feature schema mismatch: the model has {self.feature_names_}, "
                                   f"the data has {list(names)}")

    # -- for subclasses --------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, **kw) -> None:
        raise NotImplementedError

    def _score(self, X, xp, **kw):
        raise NotImplementedError

    def _arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        raise NotImplementedError

    def _restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError
