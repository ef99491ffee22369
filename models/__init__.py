"""Scoring models (``fit`` / ``score_samples``, scikit-learn style).

Empty in this version: the learned baselines and anomaly models are their own work item.
"""
