"""The site model ``detector train`` writes and ``detector analyze --model`` reads.

What it learns from traffic taken as normal:

- per host, a robust baseline of its window features (:class:`models.robust_z.RobustZ`, median
  and MAD of ``log1p`` features per host, the global baseline for hosts never seen), which is
  also what explains an alert;
- an Isolation Forest over all hosts' windows, for combinations no single feature shows;
- each host's hour-of-day profile (the share of its active windows in each UTC hour);
- per (host, external destination), the most bytes sent there in one window: a transfer the
  site does every day is not an exfiltration (the bulk-upload detector asks the model);
- pins: ARP bindings, SSH host keys, TLS certificates and the hop counts of known peers, as
  the MITM detectors learned them, so that the analysed traffic is compared with them from its
  first packet;
- the alert thresholds, from the training scores: a window is anomalous when its Isolation
  Forest score is below the ``if_quantile`` quantile of the training windows and one of its
  features is at least ``z_alert`` robust standard deviations from the host's median.

Training trims outliers (RobustZ), and the forest's threshold is a low quantile of training
scores, so a few attacker windows in the training data neither move the baselines nor raise
the bar by much. Online updates (:meth:`SiteModel.update`, for the daemon) never learn from a
window either scorer finds unusual and move a baseline by bounded steps; a model can be frozen
(``detector train --freeze``) so that it is never updated. One file, in :mod:`models.store`'s format: no pickle.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from detector.baseline.windows import FEATURES
from models.isolation_forest import IsolationForest
from models.robust_z import RobustZ
from models.store import ModelError, ModelFile, load, save

KIND = "site_model"
VERSION = 1
MAX_DESTINATIONS = 100_000


def hour_of(window_start_ns: np.ndarray) -> np.ndarray:
    return (np.asarray(window_start_ns, np.int64) // 3_600_000_000_000) % 24


class SiteModel:
    def __init__(self, window_s: float = 600.0, z_alert: float = 6.0, if_quantile: float = 0.001):
        self.window_s, self.z_alert, self.if_quantile = window_s, z_alert, if_quantile
        self.baseline: RobustZ | None = None
        self.forest: IsolationForest | None = None
        self.if_threshold = -1.0
        self.hours: dict[str, list[float]] = {}
        self.destinations: dict[tuple[str, str], float] = {}
        self.pins: dict[str, dict] = {}  # detector name -> what it pinned (ARP bindings, keys, certificates, TTLs)
        self.windows_trained = 0
        self.frozen = False  # a frozen model is never updated online

    # -- learning ------------------------------------------------------------------------------
    def fit(self, hosts: list[str], starts: np.ndarray, X: np.ndarray,
            destinations: dict[tuple[str, str], float], pins: dict[str, dict] | None = None) -> SiteModel:
        if len(X) < 2:
            raise ValueError("too little traffic to learn from: fewer than two host windows")
        L = np.log1p(X)
        self.baseline = RobustZ().fit(L, FEATURES, entities=hosts)
        self.forest = IsolationForest(n_estimators=100, random_state=0).fit(L, FEATURES)
        self.if_threshold = float(np.quantile(self.forest.score_samples(L), self.if_quantile))
        hour = hour_of(starts)
        for h in sorted(set(hosts)):
            mine = hour[np.array([x == h for x in hosts])]
            self.hours[h] = (np.bincount(mine, minlength=24) / max(len(mine), 1)).round(4).tolist()
        top = sorted(destinations.items(), key=lambda kv: -kv[1])[:MAX_DESTINATIONS]
        self.destinations = dict(top)
        self.pins = {k: v for k, v in (pins or {}).items() if v}
        self.windows_trained = len(X)
        return self

    def update(self, hosts: list[str], X: np.ndarray) -> int:
        """Online learning (the daemon calls it as windows close): windows that the forest or
        the host's baseline finds unusual (either one: stricter than alerting, which needs both)
        are never learned from; the others move their host's baseline by a bounded step
        (:meth:`models.robust_z.RobustZ.update`). A frozen model learns nothing. Returns the
        windows learned."""
        if self.frozen or not len(X):
            return 0
        L = np.log1p(np.asarray(X, dtype=np.float64))
        usual = (self.forest.score_samples(L) >= self.if_threshold) & \
            (np.abs(np.asarray(self.baseline.z(L, hosts))).max(axis=1) < self.z_alert)
        keep = np.flatnonzero(usual)
        return self.baseline.update(L[keep], [hosts[i] for i in keep.tolist()])

    # -- using it ------------------------------------------------------------------------------
    def known_transfer(self, src: str, dst: str, bytes_out: float, factor: float) -> bool:
        """Whether ``src`` sent ``dst`` at least 1/``factor`` of this much in one training window."""
        seen = self.destinations.get((src, dst))
        return seen is not None and bytes_out <= factor * seen

    def judge(self, hosts: list[str], starts: np.ndarray, X: np.ndarray) -> list[dict]:
        """The anomalous windows: host, window start, score, and the deviating features."""
        if not len(X):
            return []
        L = np.log1p(X)
        scores = self.forest.score_samples(L)
        z = np.asarray(self.baseline.z(L, hosts))
        out = []
        for i in np.flatnonzero((scores < self.if_threshold) & (np.abs(z).max(axis=1) >= self.z_alert)).tolist():
            order = np.argsort(-np.abs(z[i]), kind="stable")
            row = self.baseline._rows([hosts[i]], 1)[0]
            deviations = [{"feature": FEATURES[j], "value": float(X[i, j]),
                           "baseline": float(np.expm1(self.baseline.median_[row, j])), "z": round(float(z[i, j]), 1)}
                          for j in order[:4].tolist() if abs(z[i, j]) >= self.z_alert / 2]
            hour = int(hour_of([starts[i]])[0])
            profile = self.hours.get(hosts[i])
            out.append({"host": hosts[i], "start_ns": int(starts[i]), "score": float(scores[i]),
                        "deviations": deviations, "known_host": hosts[i] in self.baseline._index,
                        "hour_share": None if profile is None else profile[hour], "hour": hour})
        return out

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str, key: bytes | None = None) -> None:
        z, f = self.baseline.to_file(), self.forest.to_file()
        arrays = {**{f"z.{k}": v for k, v in z.arrays.items()}, **{f"if.{k}": v for k, v in f.arrays.items()}}
        meta = {"window_s": self.window_s, "z_alert": self.z_alert, "if_quantile": self.if_quantile,
                "if_threshold": self.if_threshold, "windows_trained": self.windows_trained, "frozen": self.frozen,
                "z": z.meta, "if": f.meta, "hours": self.hours,
                "destinations": [[s, d, b] for (s, d), b in self.destinations.items()], "pins": self.pins}
        save(path, ModelFile(KIND, VERSION, list(FEATURES), meta, arrays), key)

    @classmethod
    def load(cls, path: str, key: bytes | None = None) -> SiteModel:
        mf = load(path, key, kind=KIND)
        if mf.version != VERSION:
            raise ModelError(path, f"site model format version {mf.version} is not supported (this version reads "
                                   f"{VERSION})")
        if mf.schema != FEATURES:
            raise ModelError(path, f"feature schema mismatch: the model has {mf.schema}, this version computes "
                                   f"{FEATURES}; train the model again")
        m = mf.meta
        try:
            model = cls(float(m["window_s"]), float(m["z_alert"]), float(m["if_quantile"]))
            model.if_threshold, model.windows_trained = float(m["if_threshold"]), int(m["windows_trained"])
            model.frozen = bool(m["frozen"])
            model.baseline = RobustZ.from_file(_part(mf, "z", RobustZ.kind, m["z"]), path)
            model.forest = IsolationForest.from_file(_part(mf, "if", IsolationForest.kind, m["if"]), path)
            model.hours = {str(h): [float(x) for x in v] for h, v in dict(m["hours"]).items()}
            model.destinations = {(str(s), str(d)): float(b) for s, d, b in _triples(m["destinations"])}
            model.pins = {str(k): dict(v) for k, v in dict(m["pins"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(path, f"incomplete site model: {exc}") from None
        return model


def _part(mf: ModelFile, prefix: str, kind: str, meta: dict) -> ModelFile:
    arrays = {k[len(prefix) + 1:]: v for k, v in mf.arrays.items() if k.startswith(prefix + ".")}
    return ModelFile(kind, 1, mf.schema, meta, arrays)


def _triples(items: Iterable) -> Iterable[tuple]:
    for item in items:
        s, d, b = item
        yield s, d, b
