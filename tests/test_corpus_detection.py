"""The detection bar on the shared corpus: every attack capture raises an alert of its
MANIFEST category at medium severity or above, and the benign captures raise none."""

from __future__ import annotations

import csv

import pytest

from detector.alerts import SEVERITY_RANK
from detector.config import Config
from detector.pipeline.analyze_job import run_analyze
from tests.conftest import CORPUS

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
