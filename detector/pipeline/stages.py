"""The analysis stages shared by ``detector analyze`` and the daemon: flow accounting (CPU or
GPU engine), the L7 tap on each batch's packets, and the detectors, which see the ended flows
and the events. The caller owns the loop: batches in, alerts out when it asks."""

from __future__ import annotations

import dataclasses
import logging

from detector.alerts import Alert
from detector.backend import CPU, Backend
from detector.config import Config
from detector.detect.base import FlowView
from detector.detect.corroboration import settle
from detector.detect.registry import build_detectors
from detector.flows.engine import available_cores, make_engine
from detector.flows.records import RecordBuilder
from detector.flows.services import ServiceNames
from detector.l7.tap import L7Tap
from detector.pipeline.detect_lane import DetectLane
from detector.pipeline.tap_input import host_columns, tap_input
from detector.site import Site
from detector.site_inference import infer_local_hosts
from detector.sources.batch import RawBatch

log = logging.getLogger("detector.analyze")


def flow_config(cfg: Config):
    """The flow table's settings: ``[flows]``, its local networks defaulting to ``[site]``'s."""
    flow_cfg = cfg.flows
    if not flow_cfg.local_nets and cfg.site.local_nets:
        flow_cfg = dataclasses.replace(flow_cfg, local_nets=cfg.site.local_nets)
    return flow_cfg


class Stages:
    def __init__(self, cfg: Config, backend: Backend = CPU, model=None, extra_detectors=(), flow_writer=None,
                 site: Site | None = None, detect_thread: bool | None = None):
        """``detect_thread``: whether the detectors take in flows and events on a thread of
        their own (default: ``flows.detect_thread`` and a core left over by the flow threads)."""
        self.site = site or Site(cfg.site)
        self.site.model = model
        flow_cfg = flow_config(cfg)
        self.engine = make_engine(flow_cfg, backend)
        self.builder = RecordBuilder(flow_cfg)
        self.services = ServiceNames()
        self.tap = L7Tap()
        self.flow_writer = flow_writer
        self.cfg, self.extra_detectors = cfg, extra_detectors
        if detect_thread is None:
            detect_thread = cfg.flows.detect_thread and available_cores() > self.engine.threads
        self.lane = DetectLane(detect_thread)
        self._detectors = self.new_detectors()
        if backend.is_gpu:
            log.info("L7 inspectors and detectors run on the host, on the packets and flows they need")
        self.flows_seen = 0
        self._first_batch = True

    @property
    def detectors(self) -> list:
        """The detectors, once they have taken in everything handed to them."""
        self.lane.drain()
        return self._detectors

    @detectors.setter
    def detectors(self, detectors: list) -> None:
        self.lane.drain()
        self._detectors = detectors

    def new_detectors(self, pins: dict | None = None) -> list:
        """The configured detectors (plus the extra ones), seeded with the model's pins, or
        ``pins`` (detector name -> what it learned) when given."""
        site = self.site
        detectors = build_detectors(site, self.cfg.detect, self.cfg.disabled_detectors) + \
            [make(site) for make in self.extra_detectors]
        seeds = pins if pins is not None else (site.model.pins if site.model is not None else {})
        for d in detectors:
            if seeds.get(d.name):
                d.seed(seeds[d.name])
        return detectors

    def feed_flows(self, emitted) -> None:
        for em in emitted:
            self.feed_records(*self.services.fill(self.builder.build(em)))

    def feed_records(self, rb, first_payload=None) -> None:
        """Flow records built here or by a partition of a distributed run (with their
        ``service`` named there, and what their first payload was: see
        :class:`~detector.flows.services.ServiceNames`): counted, written (``--flows-out``), and
        seen by the detectors."""
        self.flows_seen += rb.num_rows
        if self.flow_writer is not None:
            self.flow_writer.write(rb)
        self.feed_flow_batch(rb, first_payload)

    def feed_flow_batch(self, rb, first_payload=None) -> None:
        """Flow records from elsewhere (a Zeek conn.log) meet the same detectors."""
        self.lane.submit(self._observe_flows, FlowView(rb, None if first_payload is None else {
            "first_payload": first_payload}))

    def feed_events(self, events) -> None:
        self.lane.submit(self._observe_events, events)

    def _observe_flows(self, view: FlowView) -> None:
        for d in self._detectors:
            d.observe_flows(view)

    def _observe_events(self, events) -> None:
        for d in self._detectors:
            d.observe_events(events)

    def process(self, batch: RawBatch) -> None:
        emitted = self.engine.process(batch)
        if self._first_batch:
            infer_local_hosts(self.site, host_columns(self.engine, batch.n), batch.n)
            self._first_batch = False
        tapped, cols = tap_input(self.engine, batch)
        self.services.observe(tapped.buf, tapped.off, cols, tapped.n)  # before the flows it names end
        self.feed_flows(emitted)
        self.feed_events(self.tap.process(tapped, cols, tapped.n))

    def expire(self, now_ns: int) -> None:
        """Ends the flows idle at ``now_ns`` (wall clock, for live input), and hands on what
        quiet application streams found."""
        self.feed_flows(self.engine.expire(now_ns))
        self.feed_events(self.tap.ripe(now_ns))

    def flush(self) -> None:
        """End of input: every open flow and stream ends (and the flow table's memory goes
        before the detectors report)."""
        self.feed_flows(self.engine.finish_groups())
        self.engine.release()
        self.feed_events(self.tap.flush())

    def close(self) -> None:
        """Wait for the detectors to take in what was handed to them, and end their thread."""
        self.lane.close()

    def report(self) -> list[Alert]:
        """Every detector's alerts over what it has seen so far, corroborated
        (:func:`~detector.detect.corroboration.settle`), in time order."""
        return time_ordered(settle([a for d in self.detectors for a in d.finish()]))


def time_ordered(alerts: list[Alert]) -> list[Alert]:
    """Alerts by time, the more severe first at one instant; ties keep the detectors' order."""
    alerts.sort(key=lambda a: (a.ts_ns, -a.severity_rank))
    return alerts
