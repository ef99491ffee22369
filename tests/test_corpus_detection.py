"""The detection bar on the shared corpus: every attack capture raises an alert of its
MANIFEST category at medium severity or above, and the benign captures raise none."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from detector.alerts import SEVERITY_RANK
from detector.config import Config
from detector.errors import DetectorError
from detector.pipeline.analyze_job import run_analyze
from tests.conftest import CORPUS, REPO, ZEEK_TRACES

pytestmark = pytest.mark.corpus

EXPECTED = {
    "benign": None, "bruteforce": "unauthorized_access", "dos": "dos", "exfil_dns_tunnel": "exfiltration",
    "exfil_other": "exfiltration", "mining": "compute_theft", "mitm_arp": "mitm", "mitm_other": "mitm",
    "scan": "scan", "mixed": "*",
}


def manifest() -> list[tuple[str, str]]:
    path = CORPUS / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [(row["category"], row["local_file"]) for row in csv.DictReader(fh, delimiter="\t")]


@pytest.mark.parametrize("category,local_file", manifest() or [
    pytest.param("", "", marks=pytest.mark.skip(reason=f"capture corpus not found at {CORPUS}"))])
def test_corpus_capture_gets_its_category(corpus, category, local_file):
    result = run_analyze([str(corpus / local_file)], Config(), None, progress=False)
    strong = [a for a in result.alerts if a.severity_rank >= SEVERITY_RANK["medium"]]
    expected = EXPECTED[category]
    if expected is None:
        assert strong == [], [a.to_dict() for a in strong]
    elif expected == "*":
        assert strong
    else:
        assert expected in {a.category for a in strong}, [f"{a.category}/{a.technique}" for a in result.alerts]


# -- Zeek's test traces: real traffic of many protocols, judged by reading them ----------------------

JUDGED = REPO / "tests" / "traces_zeek_judged.tsv"


def judged(verdict: str) -> list[str]:
    rows = [line.split("\t") for line in JUDGED.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "file\t"))]
    return [name for name, v, _ in rows if v == verdict]


def test_every_judgement_names_a_verdict_and_a_reason():
    rows = [line.split("\t") for line in JUDGED.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "file\t"))]
    assert rows and all(len(r) == 3 and r[1] in ("benign", "attack") and len(r[2]) > 20 for r in rows), rows
    assert len({r[0] for r in rows}) == len(rows)


@pytest.fixture
def zeek_traces() -> Path:
    if not ZEEK_TRACES.is_dir():
        pytest.skip(f"Zeek's test traces not found at {ZEEK_TRACES}")
    return ZEEK_TRACES


@pytest.mark.parametrize("name", judged("benign"))
def test_a_trace_judged_benign_raises_no_medium_alert(zeek_traces, name):
    result = run_analyze([str(zeek_traces / name)], Config(), None, progress=False)
    strong = [a for a in result.alerts if a.severity_rank >= SEVERITY_RANK["medium"]]
    assert strong == [], [a.to_dict() for a in strong]


@pytest.mark.slow
def test_at_most_one_percent_of_the_benign_traces_raise_a_medium_alert(zeek_traces):
    """Every capture not judged or named an attack counts as benign (README of traces-zeek)."""
    attacks = set(judged("attack"))
    names = sorted(p.name for p in zeek_traces.iterdir() if (".pcap" in p.name or p.suffix in (".cap", ".trace"))
                   and p.name not in attacks)
    alerted = []
    for name in names:
        try:
            alerts = run_analyze([str(zeek_traces / name)], Config(), None, progress=False).alerts
        except DetectorError:
            continue  # the few link types nothing here reads (FDDI, 802.15.4)
        if any(a.severity_rank >= SEVERITY_RANK["medium"] for a in alerts):
            alerted.append(name)
    assert len(names) > 700 and len(alerted) <= len(names) // 100, alerted


@pytest.mark.parametrize("name", judged("attack"))
def test_a_trace_judged_an_attack_raises_a_medium_alert(zeek_traces, name):
    result = run_analyze([str(zeek_traces / name)], Config(), None, progress=False)
    assert any(a.severity_rank >= SEVERITY_RANK["medium"] for a in result.alerts), [a.to_dict() for a in result.alerts]
