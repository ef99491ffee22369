"""Where ``detector analyze``'s time goes, stage by stage, on one core, after start-up: read
(finding records in the capture bytes), decode (packet columns), flows (the flow table:
per-packet state), L7 (selecting and inspecting application payloads), features (turning
ended flows into feature records: sizes, inter-arrival statistics, flags, TTLs, Community ID),
scoring (every detector, including the feature kernels they call), output (Parquet flow
records and JSON alerts). The stages run one after the other on each batch, as in
``analyze``; each is timed around its own calls. A warm-up on the first batch loads the
kernels first.

Usage: python -m detector.bench.stages CAPTURE   (prints JSON: seconds per stage, packets)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter


def breakdown(path: str) -> dict:
    import pyarrow.parquet as pq

    from detector.config import Config, FlowConfig
    from detector.detect.base import FlowView
    from detector.detect.registry import build_detectors
    from detector.flows.engine import FlowEngine
    from detector.flows.records import FLOW_SCHEMA, RecordBuilder
    from detector.l7.tap import L7Tap
    from detector.site import Site
    from detector.sources import open_capture

    cfg = Config(flows=dataclasses.replace(FlowConfig(), threads=1))
    t: Counter = Counter()

    def run(limit: int | None) -> int:
        engine, builder, tap = FlowEngine(cfg.flows), RecordBuilder(cfg.flows), L7Tap()
        site = Site(cfg.site)
        detectors = build_detectors(site, cfg.detect, cfg.disabled_detectors)
        packets = 0
        with tempfile.TemporaryDirectory() as d:
            writer = pq.ParquetWriter(f"{d}/flows.parquet", FLOW_SCHEMA)
            reader = open_capture(path, cfg.flows.batch_size)
            batches = reader.batches()

            def feed(emitted) -> None:
                for em in emitted:
                    c0 = time.perf_counter()
                    rb = builder.build(em)
                    view = FlowView(rb)
                    c1 = time.perf_counter()
                    for det in detectors:
                        det.observe_flows(view)
                    c2 = time.perf_counter()
                    writer.write_batch(rb)
                    c3 = time.perf_counter()
                    t["features"] += c1 - c0
                    t["scoring"] += c2 - c1
                    t["output"] += c3 - c2

            while True:
                c0 = time.perf_counter()
                batch = next(batches, None)
                t["read"] += time.perf_counter() - c0
                if batch is None:
                    break
                packets += batch.n
                before = dict(engine.seconds)
                emitted = engine.process(batch)
                t["decode"] += engine.seconds["decode"] - before["decode"]
                t["flows"] += engine.seconds["flows"] - before["flows"]
                feed(emitted)
                c0 = time.perf_counter()
                events = tap.process(batch, engine.cols, batch.n)
                c1 = time.perf_counter()
                for det in detectors:
                    det.observe_events(events)
                t["l7"] += c1 - c0
                t["scoring"] += time.perf_counter() - c1
                if limit is not None and packets >= limit:
                    break
            reader.src.close()
            c0 = time.perf_counter()
            emitted = engine.finish()
            t["flows"] += time.perf_counter() - c0
            feed(emitted)
            c0 = time.perf_counter()
            events = tap.flush()
            c1 = time.perf_counter()
            for det in detectors:
                det.observe_events(events)
            alerts = [a for det in detectors for a in det.finish()]
            c2 = time.perf_counter()
            with open(f"{d}/alerts.jsonl", "w") as fh:
                fh.writelines(a.to_json() + "\n" for a in alerts)
            writer.close()
            t["l7"] += c1 - c0
            t["scoring"] += c2 - c1
            t["output"] += time.perf_counter() - c2
        return packets

    run(1)  # warm-up: the first batch loads every kernel
    t.clear()
    packets = run(None)
    total = sum(t.values())
    stages = ("read", "decode", "flows", "l7", "features", "scoring", "output")
    return {"packets": packets, "seconds": total,
            "stages": {s: {"seconds": round(t[s], 4), "share": round(t[s] / total, 4) if total else 0.0,
                           "packets_per_s": round(packets / t[s]) if t[s] > 0 else None} for s in stages}}


if __name__ == "__main__":
    print(json.dumps(breakdown(sys.argv[1])))
