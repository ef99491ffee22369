"""Scoring models, in scikit-learn style (``fit`` returns the model, fitted attributes end in
``_``, ``score_samples`` is higher for more normal rows), saved as safe model files.

- :class:`models.robust_z.RobustZ`: per-entity median/MAD z-scores; explains alerts.
- :class:`models.isolation_forest.IsolationForest`: fitted by scikit-learn, scored by an
  array traversal of its trees (NumPy or CuPy).
- :class:`models.pca.PcaReconstruction`: robust PCA reconstruction error.
- :class:`models.knn.KnnDistance`: distance to the k-th nearest training row (brute force in
  ``xp``, or cuML's ``NearestNeighbors`` on the GPU when installed).
- :mod:`models.store`: the file format (JSON header, raw arrays, SHA-256, optional HMAC).
"""
