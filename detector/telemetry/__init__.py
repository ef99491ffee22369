"""GPU telemetry and the scheduler's allocations: what GPUs did, and which job held them.

Sources: nvidia-smi CSV logs (offline, ``detector analyze --gpu-log``), Slurm's JSON
(``--slurm``) and a site's allocation map (``[site] gpu_allocations``). The detectors that
judge them are in :mod:`detector.detect.gpu_theft`.
"""
