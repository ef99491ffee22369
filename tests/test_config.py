"""Configuration files: the shipped example is valid, and mistakes name their key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from detector.config import FlowConfig, load_config
from detector.errors import ConfigError
from detector.site import SiteConfig

REPO = Path(__file__).resolve().parents[1]


def test_example_config_is_valid():
    cfg = load_config(str(REPO / "deploy" / "detector.example.toml"))
    assert cfg.flows.tcp_idle_timeout == FlowConfig().tcp_idle_timeout
    assert cfg.flows.local_nets == ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    assert cfg.site.transfer_ports == SiteConfig().transfer_ports and cfg.disabled_detectors == ()


def test_example_config_lists_every_detector_with_its_defaults():
    """The shipped example documents every threshold: its values are the code's defaults."""
    from detector.detect.registry import BY_NAME

    cfg = load_config(str(REPO / "deploy" / "detector.example.toml"))
    for d in BY_NAME.values():
        if dataclasses.fields(d.Params):
            assert cfg.detect[d.name] == d.Params(), d.name


def test_example_config_daemon_section_is_the_defaults():
    from detector.daemon.settings import DaemonConfig

    assert load_config(str(REPO / "deploy" / "detector.example.toml")).daemon == DaemonConfig()


def test_defaults_without_a_file():
    assert load_config(None).flows == FlowConfig()


@pytest.mark.parametrize("text, key", [
    ("[flows]\nthreads = true\n", "flows.threads"),
    ("[flows]\nlocal_nets = '10.0.0.0/8'\n", "flows.local_nets"),
    ("[flows]\nlocal_nets = ['10.0.0.0/33']\n", "flows.local_nets"),
    ("[flows]\nfragment_slots = 1000\n", "flows.fragment_slots"),
    ("[flows]\nserver_ports = [70000]\n", "flows.server_ports"),
    ("flows = 3\n", "flows"),
])
def test_bad_values_name_the_key(tmp_path, text, key):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(p))
    assert f"key '{key}'" in str(info.value) and str(p) in str(info.value)
