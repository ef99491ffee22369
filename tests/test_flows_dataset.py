"""``--flows-out DIR/``: a Parquet dataset partitioned by date and hour, with the same records
as a single file, readable by pyarrow.dataset (and so pandas, DuckDB, Spark) as is."""

from __future__ import annotations

import pyarrow.dataset as ds
import pyarrow.parquet as pq
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from detector.cli import main


def test_flows_dataset_is_partitioned_by_date_and_hour(tmp_path):
    t0 = 1_700_000_000 - 1_700_000_000 % 3600 + 1800  # half past an hour
    pkts = []
    for k in range(300):  # one flow every 30 s for 2.5 hours, from half past an hour: three hours
        p = Ether(src="52:54:00:00:00:01", dst="52:54:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2") / \
            UDP(sport=20000 + k, dport=53) / b"q"
        p.time = t0 + k * 30
        pkts.append(p)
    cap = tmp_path / "hours.pcap"
    wrpcap(str(cap), pkts)
    assert main(["flows", str(cap), "-o", str(tmp_path / "ds") + "/", "-q"]) == 0
    assert main(["flows", str(cap), "-o", str(tmp_path / "one.parquet"), "-q"]) == 0
    parts = {p.relative_to(tmp_path / "ds").parts[:2] for p in (tmp_path / "ds").rglob("*.parquet")}
    assert len(parts) == 3 and all(d.startswith("date=") and h.startswith("hour=") for d, h in parts)
    assert not list((tmp_path / "ds").rglob("*.tmp"))  # every part file complete
    dataset = ds.dataset(tmp_path / "ds", format="parquet", partitioning="hive").to_table()
    single = pq.read_table(tmp_path / "one.parquet")
    assert dataset.num_rows == single.num_rows == 300
    assert sorted(dataset["uid"].to_pylist()) == sorted(single["uid"].to_pylist())
    hours = {int(h) for h in dataset["hour"].to_pylist()}
    expected = {(t0 + k * 30) // 3600 % 24 for k in range(300)}
    assert hours == expected


def test_a_folder_takes_parquet_only(tmp_path, capsys):
    cap = tmp_path / "x.pcap"
    p = Ether(src="52:54:00:00:00:01", dst="52:54:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2") / UDP()
    p.time = 1_700_000_000
    wrpcap(str(cap), [p])
    (tmp_path / "out").mkdir()
    assert main(["flows", str(cap), "-o", str(tmp_path / "out"), "--format", "csv", "-q"]) == 2
    assert "partitioned Parquet" in capsys.readouterr().err
