"""bruteforce as a bounded, mergeable reducer: SSH pairs' failed-looking connections as a
table, their densest window found for all pairs at once; FTP and VNC logins merged; any split
of the input, merged in any order, gives the one-pass alerts."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.detect.base import FlowView
from detector.detect.bruteforce import BruteForce, densest_windows
from detector.l7.events import Ctx, Events, FtpReply, RfbEvent
from tests.merge_splits import split_and_merge

T = 1_700_000_000 * 10**9
S = 10**9


def records(rows: list[dict]) -> FlowView:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["ts"] = pa.array(cols["ts"], pa.timestamp("ns"))
    cols["community_id"] = pa.array(cols["community_id"], pa.string())
    return FlowView(pa.RecordBatch.from_pydict(cols))


def guesses(seed: int, n: int) -> list[dict]:
    """SSH connections from a few or many clients to two servers: the server's byte counts
    alike (failed logins) or not, some unanswered, some on other ports."""
    rng = random.Random(seed)
    clients = [f"198.51.100.{k}" for k in range(rng.choice([2, 15]))]
    spread = rng.choice([1, 20, 2000])
    return [{"ts": T + k * S * rng.choice([1, 10, 100]) + rng.randrange(S), "uid": f"C{k:05d}",
             "orig_h": rng.choice(clients), "resp_h": rng.choice(["10.0.0.1", "10.0.0.2"]), "orig_p": 40000 + k,
             "resp_p": rng.choice([22, 22, 2222, 443]), "proto": "tcp", "community_id": rng.choice(["1:a", None]),
             "resp_bytes": rng.choice([745] * 8 + [3000, 9000]) + rng.randrange(spread),
             "resp_pkts": rng.choice([0, 5, 5, 5])} for k in range(n)]


def logins(seed: int) -> list:
    """FTP replies and VNC outcomes of a few clients, some fast."""
    rng = random.Random(seed)
    out = []
    for k in range(rng.randrange(0, 40)):
        c = Ctx(T + k * S, f"F{k}", False, "10.0.0.3", rng.choice(["198.51.100.7", "198.51.100.8"]), 21, 40000, 6)
        if rng.random() < 0.5:
            out.append(FtpReply(c, rng.choice([530, 530, 230]), rng.choice(["root", "admin", None])))
        else:
            c.sport, c.from_orig = 5900, False
            out.append(RfbEvent(c, "003.008", "003.008", 2, rng.random() < 0.2, None, c.ts_ns,
                                c.ts_ns + int(rng.choice([0.1, 3.0]) * S)))
    return out


def lenient() -> BruteForce:
    return BruteForce(BruteForce.Params(min_failures=5, distributed_min_sources=3, window_s=600.0))


def alerts(det: BruteForce) -> list[str]:
    return sorted(str(a.to_dict()) for a in det.finish())


def feed(det: BruteForce, batch: list) -> None:
    rows = [x for x in batch if isinstance(x, dict)]
    if rows:
        det.observe_flows(records(rows))
    det.observe_events(Events(ftp=[x for x in batch if isinstance(x, FtpReply)],
                              rfb=[x for x in batch if isinstance(x, RfbEvent)]))


def test_random_guesses_give_every_kind_of_alert_to_compare():
    found = set()
    for seed in range(30):
        det = lenient()
        feed(det, guesses(seed, 400) + logins(seed))
        found |= {a.technique for a in det.finish()}
    assert found == {"ssh_bruteforce", "distributed_guessing", "ftp_bruteforce", "vnc_bruteforce",
                     "credential_probe"}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(10, 500), st.lists(st.floats(0, 1), max_size=5), st.integers(0, 5))
def test_any_split_and_merge_order_gives_the_one_pass_alerts(seed, n, cuts, order):
    rows = guesses(seed, n) + logins(seed)
    one = lenient()
    feed(one, rows)
    assert alerts(split_and_merge(lenient, feed, rows, cuts, order, seed)) == alerts(one)


def reference_densest(ts: list[int], window: int) -> tuple[int, int]:
    """The first start of the most rows within ``window`` of it, one row at a time."""
    best_lo, best, hi = 0, 0, 0
    for lo in range(len(ts)):
        while hi < len(ts) and ts[hi] - ts[lo] <= window:
            hi += 1
        if hi - lo > best:
            best_lo, best = lo, hi - lo
    return best_lo, best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 60), min_size=1, max_size=25), min_size=1, max_size=6), st.integers(0, 20))
def test_densest_windows_of_all_groups_at_once_are_each_groups_own(series, window):
    series = [sorted(s) for s in series]
    group = np.concatenate([np.full(len(s), g) for g, s in enumerate(series)])
    ts = np.concatenate([np.array(s, np.int64) for s in series])
    first, count = densest_windows(group, ts, window)
    offsets = np.cumsum([0] + [len(s) for s in series])
    for g, s in enumerate(series):
        lo, n = reference_densest(s, window)
        assert (first[g] - offsets[g], count[g]) == (lo, n)


def test_past_max_pairs_the_pairs_with_fewest_connections_go_and_the_guesser_stays():
    det = BruteForce(BruteForce.Params(max_pairs=20))
    guesser = [{"ts": T + k * S, "uid": f"G{k}", "orig_h": "198.51.100.66", "resp_h": "10.0.0.1", "orig_p": 40000 + k,
                "resp_p": 22, "proto": "tcp", "community_id": None, "resp_bytes": 745, "resp_pkts": 5}
               for k in range(12)]
    once = [dict(guesser[0], ts=T + k * 10**6, uid=f"O{k}", orig_h=f"203.0.{k // 250}.{k % 250}") for k in range(400)]
    rows = once[:200] + guesser + once[200:]
    for a in range(0, len(rows), 50):
        det.observe_flows(records(rows[a:a + 50]))
    (a,) = [x for x in det.finish() if x.technique == "ssh_bruteforce"]
    assert a.src_ip == "198.51.100.66" and a.evidence["failed_looking_connections"] == 12
    assert a.evidence["uid"] == "G11" and det.evictions >= 400 + 1 - 20


def test_a_connection_of_unknown_server_bytes_is_not_judged():
    rows = [{"ts": T + k * S, "uid": f"G{k}", "orig_h": "198.51.100.66", "resp_h": "10.0.0.1", "orig_p": 40000 + k,
             "resp_p": 22, "proto": "tcp", "community_id": None, "resp_bytes": 745, "resp_pkts": 5} for k in range(12)]
    rows[5] = dict(rows[5], resp_bytes=None)  # (not 0 bytes: it would spread the sizes past ssh_size_cv)
    det = BruteForce()
    det.observe_flows(records(rows))
    (a,) = det.finish()
    assert a.evidence["failed_looking_connections"] == 11 and a.evidence["connections"] == 12
