"""Learned baselines: host windows, the site model, training."""
