"""The deployment files: example configurations that load, and a systemd unit that keeps the
privileges the README promises (CAP_NET_RAW only, no new privileges, read-only system)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from detector.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.parametrize("name, role", [("dtn.toml", "dtns"), ("login.toml", "login_nodes")])
def test_example_node_configs_load(name, role):
    cfg = load_config(str(DEPLOY / name))
    assert cfg.daemon.iface and cfg.daemon.alerts.startswith("/var/log/detector/")
    assert cfg.daemon.metrics.startswith("127.0.0.1:")  # metrics stay on loopback
    assert getattr(cfg.site, role) and cfg.site.local_nets


def test_systemd_unit_runs_unprivileged_with_cap_net_raw_only():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(DEPLOY / "detector.service")
    svc = unit["Service"]
    assert svc["User"] == "detector" and svc["AmbientCapabilities"] == "CAP_NET_RAW"
    assert svc["CapabilityBoundingSet"] == "CAP_NET_RAW"
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("StateDirectory", "detector"), ("Type", "notify")):
        assert svc[key] == value, key
    assert "detector run --config" in svc["ExecStart"] and "-HUP" in svc["ExecReload"]
    assert svc["Environment"].startswith("NUMBA_CACHE_DIR=/var/cache/detector")  # the install is read-only


def test_logrotate_snippet_signals_the_daemon():
    text = (DEPLOY / "detector.logrotate").read_text()
    assert "/var/log/detector/" in text and "reload detector" in text


def test_slurm_examples_use_real_options():
    """The Slurm examples parse, and every ``detector analyze`` option they pass exists."""
    import argparse
    import re
    import subprocess

    from detector.cli import analyze

    slurm = DEPLOY / "slurm"
    compile((slurm / "dask_cluster.py").read_text(), "dask_cluster.py", "exec")
    script = (slurm / "analyze-archive.sbatch").read_text()
    assert subprocess.run(["bash", "-n", str(slurm / "analyze-archive.sbatch")]).returncode == 0
    command = script[script.rindex("detector analyze"):]
    used = set(re.findall(r"(--[a-z-]+)", command))
    parser = argparse.ArgumentParser()
    analyze.add_arguments(parser)
    known = {opt for action in parser._actions for opt in action.option_strings}
    assert {"--cluster", "--work-dir"} <= used and used <= known, used - known
    assert "--scheduler-file" in script and "dask worker" in script
