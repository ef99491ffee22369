"""detector: network traffic anomaly detection for HPC sites (packets -> flows -> alerts)."""

__version__ = "0.1.0"
