"""Learned site models end to end: ``detector train``, ``analyze --model``, and the bars of the
issue: a model trained on one benign day lowers false alerts on another, and every attack is
still found; damaged or foreign model files are refused with exit status 2."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from detector.alerts import SEVERITY_RANK
from detector.baseline.site_model import SiteModel
from detector.cli import main
from detector.config import load_config
from detector.pipeline.analyze_job import run_analyze, summary_text
from models import store

MEDIUM = SEVERITY_RANK["medium"]


@pytest.fixture(autouse=True)
def _no_site_key(monkeypatch):
    monkeypatch.delenv("DETECTOR_MODEL_KEY", raising=False)
    monkeypatch.delenv("DETECTOR_MODEL_KEY_FILE", raising=False)


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Two benign days of the same site (different seeds), and a model trained on the first."""
    a, b = tmp_path_factory.mktemp("day_a"), tmp_path_factory.mktemp("day_b")
    assert main(["synth", "benign", "-o", str(a), "--packets", "3000", "--seed", "21"]) == 0
    assert main(["synth", "benign", "-o", str(b), "--packets", "3000", "--seed", "22"]) == 0
    return a, b


def train(day, tmp_path, *extra) -> str:
    out = str(tmp_path / "site.model")
    assert main(["train", *[str(p) for p in sorted(day.glob("*.pcap"))], "-o", out, "-q", *extra]) == 0
    return out


def strong(path, config=None, model=None):
    cfg = load_config(str(config) if config else None)
    alerts = run_analyze([str(path)], cfg, None, progress=False, model=model).alerts
    return [(a.category, a.technique, a.host) for a in alerts if a.severity_rank >= MEDIUM]


def test_model_trained_on_one_day_quiets_the_next_days_normal_transfers(days, tmp_path):
    """Without a site configuration the login node's nightly backup is an unknown bulk upload;
    the model saw it on day A and knows it on day B."""
    a, b = days
    model = SiteModel.load(train(a, tmp_path))
    assert [t for _, t, _ in strong(b / "benign-login.pcap")] == ["bulk_upload"]
    result = run_analyze([str(b / "benign-login.pcap")], load_config(None), None, progress=False, model=model)
    assert result.summary["model"]["windows_trained"] == model.windows_trained > 0
    assert "site model" in summary_text(result.summary, result.alerts)
    assert strong(b / "benign-login.pcap", model=model) == []
    for name in ("benign-dtn", "hpc-mix"):
        assert strong(b / f"{name}.pcap", model=model) == []
        assert strong(b / f"{name}.pcap", b / "site.toml", model=model) == []


def test_every_attack_is_still_found_with_a_model(days, synth_dir, tmp_path):
    model = SiteModel.load(train(days[0], tmp_path, "--config", str(days[0] / "site.toml")))
    labels = json.loads((synth_dir / "labels.json").read_text())
    for name, label in labels.items():
        if label["benign"] or label["incidents"][0].get("seen_in") == "telemetry":
            continue
        found = {c for c, _, _ in strong(synth_dir / f"{name}.pcap", synth_dir / "site.toml", model)}
        assert label["incidents"][0]["category"] in found, (name, found)


def test_a_host_unlike_its_baseline_is_an_explained_anomaly():
    """A week of ten-minute windows of 20 hosts; then one host sends fifty times its usual bytes
    to the outside from a hundred times its usual destinations: one anomaly alert for it, which
    names those features with the observed and the usual values."""
    from detector.baseline.windows import FEATURES
    from detector.detect.host_anomaly import HostAnomaly
    from detector.site import Site

    rng = np.random.default_rng(11)
    hosts = [f"10.0.0.{1 + k % 20}" for k in range(20 * 1008)]
    level = np.exp(rng.normal(6, 1, (20, len(FEATURES))))
    X = level[np.arange(len(hosts)) % 20] * rng.lognormal(0, 0.2, (len(hosts), len(FEATURES)))
    starts = np.arange(len(hosts)) // 20 * 600 * 10**9
    model = SiteModel().fit(hosts, starts, X, {})
    today = level[:20] * rng.lognormal(0, 0.2, (20, len(FEATURES)))
    ext, dsts = FEATURES.index("external_bytes_out"), FEATURES.index("distinct_dsts")
    today[3, ext] *= 50
    today[3, dsts] *= 100
    site = Site()
    site.model = model
    detector = HostAnomaly(site=site)
    detector.collector.windows.table = lambda rare_flows=None: (hosts[:20], np.full(20, starts[-1] + 600 * 10**9), today)
    [alert] = detector.finish()
    assert (alert.category, alert.technique, alert.host, alert.severity) == ("anomaly", "host_behaviour", "10.0.0.4",
                                                                           "medium")
    named = {d["feature"]: d for d in alert.evidence["deviations"]}
    assert {"external_bytes_out", "distinct_dsts"} <= set(named) and alert.evidence["baseline"] == "host"
    assert named["distinct_dsts"]["value"] == pytest.approx(today[3, dsts])
    assert named["distinct_dsts"]["baseline"] == pytest.approx(level[3, dsts], rel=0.1)
    assert "distinct_dsts" in alert.summary and "external_bytes_out" in alert.summary


def test_damaged_foreign_and_mismatched_model_files_exit_2(days, tmp_path, capsys):
    path = tmp_path / "site.model"
    train(days[0], tmp_path)
    capture = str(days[1] / "hpc-mix.pcap")
    blob = path.read_bytes()
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    cases = {"flipped.model": bytes(flipped), "truncated.model": blob[:len(blob) // 3],
             "renamed.model": pickle.dumps(SiteModel())}
    mf = store.load(str(path))
    mf.schema = mf.schema[::-1]
    store.save(str(tmp_path / "schema.model"), mf)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for name in [*cases, "schema.model"]:
        capsys.readouterr()
        assert main(["analyze", capture, "--model", str(tmp_path / name), "-q"]) == 2, name
        err = capsys.readouterr().err
        assert str(tmp_path / name) in err and "Traceback" not in err, err
    assert "schema mismatch" in err


def test_pins_learned_in_training_are_compared_from_the_first_packet(days, synth_dir, tmp_path):
    """Training keeps what the MITM detectors pinned, and the model file carries it; analysing
    with the model starts from those pins: the first host key a server presents is already a
    change when the model pinned another."""
    path = train(days[0], tmp_path, "--config", str(days[0] / "site.toml"))
    model = SiteModel.load(path)
    assert model.pins["key_pins"]["ssh"] and model.pins["ttl_change"]["peers"]
    capture, cfg = synth_dir / "mitm-ssh-hostkey.pcap", load_config(str(synth_dir / "site.toml"))
    learned = run_analyze([str(capture)], cfg, None, progress=False).detectors
    server = next(iter(next(d for d in learned if d.name == "key_pins").learned()["ssh"]))
    model.pins["key_pins"] = {"ssh": {server: "SHA256:pinned-in-training"}, "tls": {}}
    model.save(path)
    alerts = run_analyze([str(capture)], cfg, None, progress=False, model=SiteModel.load(path)).alerts
    pinned = {a.evidence["pinned_key"] for a in alerts if a.technique == "ssh_hostkey_change"}
    assert "SHA256:pinned-in-training" in pinned


def test_online_updates_skip_flagged_windows_and_frozen_models(days, tmp_path):
    model = SiteModel.load(train(days[0], tmp_path, "--window", "10"))  # short windows: baselines of their own
    own = [h for h, mine in zip(model.baseline.entities_, model.baseline.own_) if mine]
    host = own[0]  # a host with a baseline of its own (enough training windows)
    row = model.baseline.entity_rows([host], 1)[0]
    usual = np.expm1(model.baseline.median_[row])[None]
    wild = usual * 1000  # a window of one host sending a thousand times its usual
    before = model.baseline.median_[row].copy()
    assert model.update([host], wild) == 0 and np.array_equal(model.baseline.median_[row], before)
    assert model.update([host], usual) == 1
    model.frozen = True
    assert model.update([host], usual) == 0
    path = str(tmp_path / "frozen.model")
    model.save(path)
    assert SiteModel.load(path).frozen is True
    out = str(tmp_path / "f.model")
    assert main(["train", *[str(p) for p in sorted(days[0].glob("*.pcap"))], "-o", out, "-q", "--freeze"]) == 0
    assert SiteModel.load(out).frozen is True


def test_hosts_without_their_own_baseline_are_judged_by_their_role():
    from detector.baseline.windows import FEATURES

    rng = np.random.default_rng(2)
    dtn = rng.lognormal(20, 0.3, (40, len(FEATURES)))  # DTNs move terabytes
    login = rng.lognormal(8, 0.3, (40, len(FEATURES)))
    hosts = [f"d{k}" for k in range(40)] + [f"l{k}" for k in range(40)]  # one window each: no own baseline
    model = SiteModel().fit(hosts, np.zeros(80, np.int64), np.vstack([dtn, login]), {},
                            roles=["dtn"] * 40 + ["login"] * 40)
    row = np.log1p(dtn[:1])
    for role, far in (("dtn", False), ("login", True)):
        median, scale, which = model._reference(["new"], [role])
        assert which == [f"role {role}"]
        assert bool(np.abs((row - median) / scale).max() > model.z_alert) is far
    assert model._reference(["new"], None)[2] == ["site"]


def test_train_bad_input_and_output_exit_2_with_the_path(synth_dir, tmp_path, capsys):
    header_only = tmp_path / "empty.pcap"
    header_only.write_bytes((synth_dir / "scan-sweep.pcap").read_bytes()[:24])
    for argv, where in (([str(tmp_path / "missing.pcap"), "-o", str(tmp_path / "m.model")], "missing.pcap"),
                        ([str(synth_dir / "scan-sweep.pcap"), "-o", str(tmp_path / "no" / "m.model")], "no/m.model"),
                        ([str(header_only), "-o", str(tmp_path / "m.model")], "too little traffic")):
        capsys.readouterr()
        assert main(["train", *argv, "-q"]) == 2
        err = capsys.readouterr().err
        assert where in err and "Traceback" not in err, err
    assert not (tmp_path / "m.model").exists()


def test_a_destination_the_model_saw_is_not_new(days, synth_dir, tmp_path):
    model = SiteModel.load(train(days[0], tmp_path, "--config", str(days[0] / "site.toml")))
    capture, cfg = str(synth_dir / "exfil-bulk-upload.pcap"), load_config(str(synth_dir / "site.toml"))

    def upload():
        [hit] = [a for a in run_analyze([capture], cfg, None, progress=False, model=model).alerts
                 if a.technique == "bulk_upload"]
        return hit

    first = upload()
    assert first.evidence["new_destination"] is True
    model.destinations[("10.10.1.99", first.dst_ip)] = 1000.0  # some other host sent it a little, in training
    again = upload()
    assert again.evidence["new_destination"] is False and again.score < first.score


def test_connections_of_a_kind_the_site_never_made_are_rare_flows(tmp_path):
    """The flow scorer learns what connections look like (short request/response exchanges
    here); a long, slow, one-way stream is rare, the usual kind is not, and a saved model says
    the same after loading."""
    from detector.baseline.flow_features import FLOW_FEATURES
    from detector.baseline.windows import FEATURES

    rng = np.random.default_rng(3)
    n = 4000
    usual = np.column_stack([np.log1p(rng.integers(200, 2000, n)), np.log1p(rng.integers(1000, 50000, n)),
                             np.log1p(rng.integers(3, 12, n)), np.log1p(rng.integers(3, 40, n)),
                             np.log1p(rng.uniform(5, 500, n)), np.zeros(n), np.zeros(n), np.zeros(n)])
    model = SiteModel().fit_flows(usual.astype(np.float32))
    assert model.flow_scorer is not None and model.flow_scorer.feature_names_ == FLOW_FEATURES
    assert model.rare_flows(usual).mean() <= 0.002  # the training quantile, give or take ties
    stream = np.array([[np.log1p(5e8), np.log1p(2000), np.log1p(4e5), np.log1p(900), np.log1p(3.6e6), 0, 0, 0]])
    assert model.rare_flows(stream).tolist() == [True]
    assert SiteModel().rare_flows(stream).tolist() == [False]  # no flow scorer: nothing is rare

    hosts = [f"10.0.0.{i % 5}" for i in range(200)]
    X = np.abs(rng.normal(10, 2, (200, len(FEATURES))))
    model.fit(hosts, np.arange(200) * 600 * 10**9, X, {}, roles=["host"] * 200)
    model.save(str(tmp_path / "m.model"))
    loaded = SiteModel.load(str(tmp_path / "m.model"))
    assert loaded.flow_threshold == model.flow_threshold
    mixed = np.vstack([usual[:50], stream])
    assert np.array_equal(loaded.rare_flows(mixed), model.rare_flows(mixed))
