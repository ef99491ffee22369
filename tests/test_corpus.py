"""Every capture of the shared corpus is read without error, and its flows account for every
IPv4/IPv6 packet that an independent reader (dpkt) finds."""

from __future__ import annotations

import pytest

from tests.conftest import corpus_files
from tests.reference_flows import conversations, count_ip_packets, flow_conversations

pytestmark = pytest.mark.corpus

FILES = corpus_files()


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_capture_accounts_for_every_ip_packet(corpus, flows, path):
    run = flows(path)
    assert run.result.exit_code == 0, run.result.errors + run.result.warnings
    expected = count_ip_packets(path)
    assert run.total_packets() == expected
    assert run.summary["ip_packets"] == expected


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_conversations_match_reference(corpus, flows, path):
    run = flows(path)
    ref_pkts, ref_bytes = conversations(path)
    got_pkts, got_bytes = flow_conversations(run.rows)
    assert got_pkts == ref_pkts
    assert got_bytes == ref_bytes


def test_corpus_has_captures(corpus):
    assert len(FILES) >= 10
