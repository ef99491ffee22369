"""A human summary of flow records: flows per protocol and state, and the top talkers."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc


class FlowSummary:
    def __init__(self):
        self.protos: Counter = Counter()
        self.states: Counter = Counter()
        self.pairs: dict[tuple[str, str], list[int]] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        t = pa.Table.from_batches([batch])
        for name, counter in (("proto", self.protos), ("conn_state", self.states)):
            for row in t.group_by(name).aggregate([([], "count_all")]).to_pylist():
                counter[str(row[name])] += row["count_all"]
        ip_bytes = pc.add(t["orig_ip_bytes"], t["resp_ip_bytes"])
        pkts = pc.add(t["orig_pkts"], t["resp_pkts"])
        g = pa.table({"orig_h": t["orig_h"], "resp_h": t["resp_h"], "b": ip_bytes, "p": pkts})
        for row in g.group_by(["orig_h", "resp_h"]).aggregate([("b", "sum"), ("p", "sum"), ([], "count_all")]) \
                .to_pylist():
            acc = self.pairs.setdefault((row["orig_h"], row["resp_h"]), [0, 0, 0])
            acc[0] += row["count_all"]
            acc[1] += row["p_sum"]
            acc[2] += row["b_sum"]

    def render(self, top: int) -> str:
        total = sum(self.protos.values())
        lines = ["flows by protocol: " + ", ".join(f"{k} {v:,}" for k, v in self.protos.most_common()),
                 "flows by state:    " + ", ".join(f"{k} {v:,}" for k, v in self.states.most_common(8))]
        if total and top:
            lines.append(f"top {top} talkers (by IP bytes, both directions):")
            ranked = sorted(self.pairs.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
            for (o, r), (flows, pkts, nbytes) in ranked:
                lines.append(f"  {o:>39} -> {r:<39} {nbytes / 1e6:10.1f} MB {pkts:>10,} pkts {flows:>6,} flows")
        return "\n".join(lines)
