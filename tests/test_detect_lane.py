"""The detectors on a thread of their own (issue 21, every core): the same alerts as inline,
work in the order handed over, errors raised on the main thread, reads wait for the work."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from detector.config import Config
from detector.pipeline.analyze_job import run_analyze
from detector.pipeline.detect_lane import DetectLane


def test_work_runs_in_order_on_another_thread_and_drain_waits_for_it():
    lane, seen, main = DetectLane(True), [], threading.get_ident()
    for k in range(50):
        lane.submit(lambda k=k: seen.append((k, threading.get_ident())))
    lane.drain()
    assert [k for k, _ in seen] == list(range(50))
    assert {t for _, t in seen} != {main}
    lane.close()


def test_inline_lane_runs_at_once():
    lane, seen = DetectLane(False), []
    lane.submit(seen.append, 1)
    assert seen == [1]


def test_an_error_in_the_worker_is_raised_on_the_main_thread_and_later_work_skipped():
    lane, seen = DetectLane(True), []

    def boom():
        raise ValueError("detector failed")

    lane.submit(boom)
    with pytest.raises(ValueError, match="detector failed"):
        lane.submit(seen.append, 1)  # raised here if the worker failed already, else skipped there
        lane.drain()
    assert seen == []
    with pytest.raises(ValueError, match="detector failed"):  # and at every hand-over after it
        lane.submit(seen.append, 2)
    lane.close()
    assert seen == []


def test_analyze_gives_the_same_alerts_with_and_without_the_detection_thread(synth_dir, monkeypatch):
    import detector.pipeline.stages as stages_mod

    monkeypatch.setattr(stages_mod, "available_cores", lambda: 4)  # a core left over, on any runner
    lanes = []
    monkeypatch.setattr(stages_mod, "DetectLane", lambda threaded: lanes.append(DetectLane(threaded)) or lanes[-1])
    paths = [str(synth_dir / name) for name in ("hpc-mix.pcap", "dos-syn-flood.pcap", "mitm-tcp-hijack.pcap")]
    results = []
    for threaded in (True, False):
        cfg = dataclasses.replace(Config(), flows=dataclasses.replace(Config().flows, detect_thread=threaded))
        results.append([a.to_dict() for a in run_analyze(paths, cfg, progress=False).alerts])
    assert [lane.threaded for lane in lanes] == [True, False]
    assert results[0] and results[0] == results[1]
