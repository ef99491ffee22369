"""Detectors on the workers: the configured detectors split into groups, each group a task
that reads every partition's records and events in file order, exactly the stream one pass
gives its detectors, and returns their alerts.

Detectors are independent of one another, so splitting them changes nothing in what each
sees; the groups are balanced by a rough cost per detector (the heaviest first onto the
lightest group), which only decides how fast the run is, never what it finds.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from detector.alerts import Alert
from detector.config import Config
from detector.dist.partition import feed_items
from detector.l7.events import merge_events
from detector.site import Site

# seconds per million packets of the hpc-mix synthetic site on one core (2-core VM, Nov 2026);
# detectors not listed cost next to nothing there
COST = {"bulk_upload": 0.17, "dns_spoof": 0.10, "mining": 0.07, "port_scan": 0.06, "floods": 0.06,
        "dns_tunnel": 0.04, "ttl_change": 0.04, "icmp_tunnel": 0.03, "beaconing": 0.03, "compute_outbound": 0.01}
DEFAULT_COST = 0.005


def groups(names: list[str], n: int) -> list[list[str]]:
    """``names`` in at most ``n`` groups of about equal cost (longest processing time first);
    each group keeps the detectors' own order."""
    n = max(1, min(n, len(names)))
    load = [0.0] * n
    member: dict[str, int] = {}
    for name in sorted(names, key=lambda x: -COST.get(x, DEFAULT_COST)):
        g = load.index(min(load))
        member[name] = g
        load[g] += COST.get(name, DEFAULT_COST)
    out = [[x for x in names if member[x] == g] for g in range(n)]
    return [g for g in out if g]


def _ranked(items, rank: int):
    for (i, j), rbs, events in items:
        yield (i, j, rank), rbs, events


def ordered_feed(folders: list[str]):
    """Every task's record batches and events, merged into one pass's order: by file, by
    batch within the file (the partition's part of a batch first, then the stitching shards'),
    what ends with the input last. Yields ``(record batches, events)`` per batch."""
    merged = heapq.merge(*(_ranked(feed_items(f), r) for r, f in enumerate(folders)), key=lambda it: it[0])
    for _, group in itertools.groupby(merged, key=lambda it: it[0][:2]):
        group = list(group)
        yield [rb for _, rbs, _ in group for rb in rbs], merge_events([ev for _, _, ev in group])


@dataclass
class GroupResult:
    alerts: dict[str, list[Alert]]  # detector name -> its alerts
    kept: list = field(default_factory=list)  # finished detectors the client asked back (the report's)
    evictions: dict[str, int] = field(default_factory=dict)  # detector name -> entries dropped at its caps


def detect_group(names: list[str], folders: list[str], cfg: Config, site: Site,
                 keep: tuple[str, ...] = ()) -> GroupResult:
    """Run the detectors ``names`` over the records and events in ``folders`` (partitions in
    file order, then the stitching shards), in one pass's order. ``site`` carries the site
    model, if any (``site.model``)."""
    from detector.pipeline.stages import Stages

    stages = Stages(cfg, model=site.model, site=site, detect_thread=False)  # Dask owns the cores
    stages.detectors = [d for d in stages.detectors if d.name in names]
    for rbs, events in ordered_feed(folders):
        for rb, first_payload in rbs:
            stages.feed_flow_batch(rb, first_payload)
        stages.feed_events(events)
    alerts = {d.name: d.finish() for d in stages.detectors}
    return GroupResult(alerts, [d for d in stages.detectors if d.name in keep],
                       {d.name: d.evictions for d in stages.detectors if d.evictions})

