"""The site model ``detector train`` writes and ``detector analyze --model`` reads.

What it learns from traffic taken as normal:

- per host, a robust baseline of its window features (:class:`models.robust_z.RobustZ`, median
  and MAD of ``log1p`` features per host), and per role (DTN, login node, compute node, other)
  for hosts with too few windows of their own or never seen, then site-wide; the baseline is
  also what explains an alert;
- an Isolation Forest over all hosts' windows, for combinations no single feature shows;
- a flow scorer: the distance from each outbound connection's features (bytes and packets
  each way, duration, failed or not, transport; :mod:`detector.baseline.flow_features`) to its
  k-th nearest training connection (:class:`models.knn.KnnDistance`); connections further than
  all but ``flow_quantile`` of the training ones are rare, and each host window counts them
  (the ``rare_flows`` window feature), so that a host that starts making connections of a kind
  the site never made stands out even when its totals do not;
- each host's hour-of-day profile (the share of its active windows in each UTC hour);
- per (host, external destination), the most bytes sent there in one window: a transfer the
  site does every day is not an exfiltration (the bulk-upload detector asks the model);
- pins: ARP bindings, SSH host keys, TLS certificates and the hop counts of known peers, as
  the MITM detectors learned them, so that the analysed traffic is compared with them from its
  first packet;
- with GPU telemetry (``detector train --gpu-log``), how the site's GPUs work
  (:mod:`detector.baseline.gpu_profile`);
- the alert thresholds, from the training scores: a window is anomalous when its Isolation
  Forest score is below the ``if_quantile`` quantile of the training windows and one of its
  features is at least ``z_alert`` robust standard deviations from its baseline; or when a
  feature is ``z_strong`` deviations from the host's own baseline (an Isolation Forest cannot
  tell how far beyond the training range a value lies: a value fifty times the usual lands in
  the same leaf as the largest one seen, while the host's median and MAD measure it).

A window must score ``IF_MARGIN`` below that quantile: the forest's scores are averages over
100 random trees, and a window as unusual as the most unusual training window (the same
nightly backup on another day) lands within about 0.01 of it on either side.

Training trims outliers (RobustZ), and the forest's threshold is a low quantile of training
scores, so a few attacker windows in the training data neither move the baselines nor raise
the bar by much. Online updates (:meth:`SiteModel.update`, for the daemon) never learn from a
window either scorer finds unusual and move a baseline by bounded steps; a model can be frozen
(``detector train --freeze``) so that it is never updated. One file, in :mod:`models.store`'s format: no pickle.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from detector.baseline.flow_features import FLOW_FEATURES
from detector.baseline.gpu_profile import GpuProfileModel
from detector.baseline.windows import FEATURES
from models.isolation_forest import IsolationForest
from models.knn import KnnDistance
from models.robust_z import RobustZ
from models.store import ModelError, ModelFile, load, save

KIND = "site_model"
VERSION = 2
MAX_DESTINATIONS = 100_000
# smallest baseline scale, in log1p units: a feature always 0 in training puts 10 events at z 9.6
LOG_MIN_SCALE = 0.25
# flows are scored on a grid of 0.01 in log units (1 %): identical connections are scored once
FLOW_GRID_DECIMALS = 2


def hour_of(window_start_ns: np.ndarray) -> np.ndarray:
    return (np.asarray(window_start_ns, np.int64) // 3_600_000_000_000) % 24


IF_MARGIN = 0.01  # how far below the training quantile a window's forest score must be

class SiteModel:
    def __init__(self, window_s: float = 600.0, z_alert: float = 6.0, if_quantile: float = 0.001,
                 z_strong: float = 12.0, flow_quantile: float = 0.001):
        self.window_s, self.z_alert, self.if_quantile, self.z_strong = window_s, z_alert, if_quantile, z_strong
        self.flow_quantile = flow_quantile
        self.flow_scorer: KnnDistance | None = None
        self.flow_threshold = -np.inf
        self.baseline: RobustZ | None = None  # per host
        self.role_baseline: RobustZ | None = None  # per role (dtn, login, compute, host): hosts without their own
        self.forest: IsolationForest | None = None
        self.if_threshold = -1.0
        self.hours: dict[str, list[float]] = {}
        self.destinations: dict[tuple[str, str], float] = {}
        self.pins: dict[str, dict] = {}  # detector name -> what it pinned (ARP bindings, keys, certificates, TTLs)
        self.windows_trained = 0
        self.frozen = False  # a frozen model is never updated online
        self.gpu: GpuProfileModel | None = None  # how the site's GPUs work (detector train --gpu-log)

    # -- learning ------------------------------------------------------------------------------
    def fit_flows(self, flows: np.ndarray) -> SiteModel:
        """Fits the flow scorer on the training connections (``FLOW_FEATURES`` rows); fewer than
        a few distinct connections leave it unfitted, and no flow is then rare."""
        grid = np.unique(np.round(np.asarray(flows, np.float64), FLOW_GRID_DECIMALS), axis=0)
        scorer = KnnDistance(k=5)
        if len(grid) <= scorer.k:
            return self
        self.flow_scorer = scorer.fit(np.asarray(flows, np.float64), FLOW_FEATURES)
        self.flow_threshold = float(np.quantile(self._flow_scores(flows), self.flow_quantile))
        return self

    def _flow_scores(self, flows: np.ndarray) -> np.ndarray:
        grid, inverse = np.unique(np.round(np.asarray(flows, np.float64), FLOW_GRID_DECIMALS), axis=0,
                                  return_inverse=True)
        return self.flow_scorer.score_samples(grid)[inverse.reshape(-1)]

    def rare_flows(self, flows: np.ndarray) -> np.ndarray:
        """Per connection (``FLOW_FEATURES`` rows), whether it is unlike the training ones."""
        if self.flow_scorer is None or not len(flows):
            return np.zeros(len(flows), bool)
        return self._flow_scores(flows) < self.flow_threshold

    def fit(self, hosts: list[str], starts: np.ndarray, X: np.ndarray,
            destinations: dict[tuple[str, str], float], pins: dict[str, dict] | None = None,
            roles: list[str] | None = None) -> SiteModel:
        if len(X) < 2:
            raise ValueError("too little traffic to learn from: fewer than two host windows")
        L = np.log1p(X)
        self.baseline = RobustZ(abs_min_scale=LOG_MIN_SCALE).fit(L, FEATURES, entities=hosts)
        self.role_baseline = RobustZ(abs_min_scale=LOG_MIN_SCALE).fit(L, FEATURES,
                                                                      entities=roles or ["host"] * len(hosts))
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

    def update(self, hosts: list[str], X: np.ndarray, roles: list[str] | None = None) -> int:
        """Online learning (the daemon calls it as windows close): windows that the forest or
        the host's baseline finds unusual (either one: stricter than alerting, which needs both)
        are never learned from; the others move their host's baseline by a bounded step
        (:meth:`models.robust_z.RobustZ.update`). A frozen model learns nothing. Returns the
        windows learned."""
        if self.frozen or not len(X):
            return 0
        L = np.log1p(np.asarray(X, dtype=np.float64))
        median, scale, _ = self._reference(hosts, roles)
        usual = (self.forest.score_samples(L) >= self.if_threshold) & \
            (np.abs((L - median) / scale).max(axis=1) < self.z_alert)
        keep = np.flatnonzero(usual)
        return self.baseline.update(L[keep], [hosts[i] for i in keep.tolist()])

    # -- using it ------------------------------------------------------------------------------
    def _reference(self, hosts: list[str], roles: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Per row, the baseline it is judged against: its host's own, else its role's own, else
        the site-wide one: ``(median, scale, which)``."""
        host_rows = self.baseline.entity_rows(hosts, len(hosts))
        role_rows = self.role_baseline.entity_rows(roles, len(hosts))
        n_hosts, n_roles = len(self.baseline.entities_), len(self.role_baseline.entities_)
        own_host = (host_rows < n_hosts) & self.baseline.own_[np.minimum(host_rows, max(n_hosts - 1, 0))] \
            if n_hosts else np.zeros(len(hosts), bool)
        own_role = (role_rows < n_roles) & self.role_baseline.own_[np.minimum(role_rows, max(n_roles - 1, 0))] \
            if n_roles else np.zeros(len(hosts), bool)
        median = np.where(own_host[:, None], self.baseline.median_[host_rows],
                          np.where(own_role[:, None], self.role_baseline.median_[role_rows], self.baseline.median_[-1]))
        scale = np.where(own_host[:, None], self.baseline.scale_[host_rows],
                         np.where(own_role[:, None], self.role_baseline.scale_[role_rows], self.baseline.scale_[-1]))
        which = ["host" if h else f"role {roles[i]}" if r else "site"
                 for i, (h, r) in enumerate(zip(own_host.tolist(), own_role.tolist()))]
        return median, scale, which

    def knows_destination(self, dst: str) -> bool:
        """Whether any site host sent data to ``dst`` in the training traffic."""
        return any(d == dst for _, d in self.destinations)  # asked once per reported upload

    def known_transfer(self, src: str, dst: str, bytes_out: float, factor: float) -> bool:
        """Whether ``src`` sent ``dst`` at least 1/``factor`` of this much in one training window."""
        seen = self.destinations.get((src, dst))
        return seen is not None and bytes_out <= factor * seen

    def judge(self, hosts: list[str], starts: np.ndarray, X: np.ndarray,
              roles: list[str] | None = None) -> list[dict]:
        """The anomalous windows: host, window start, score, and the deviating features."""
        if not len(X):
            return []
        L = np.log1p(X)
        scores = self.forest.score_samples(L)
        median, scale, which = self._reference(hosts, roles)
        z = (L - median) / scale
        zmax = np.abs(z).max(axis=1)
        agree = (scores < self.if_threshold - IF_MARGIN) & (zmax >= self.z_alert)
        strong = np.array([w == "host" for w in which]) & (zmax >= self.z_strong)
        out = []
        for i in np.flatnonzero(agree | strong).tolist():
            order = np.argsort(-np.abs(z[i]), kind="stable")
            deviations = [{"feature": FEATURES[j], "value": float(X[i, j]), "baseline": float(np.expm1(median[i, j])),
                           "z": round(float(z[i, j]), 1)}
                          for j in order[:4].tolist() if abs(z[i, j]) >= self.z_alert / 2]
            hour = int(hour_of([starts[i]])[0])
            profile = self.hours.get(hosts[i])
            out.append({"host": hosts[i], "start_ns": int(starts[i]), "score": float(scores[i]),
                        "deviations": deviations, "baseline": which[i], "known_host": self.baseline.knows(hosts[i]),
                        "rule": "forest and baseline" if agree[i] else "far from the host's own baseline",
                        "hour_share": None if profile is None else profile[hour], "hour": hour})
        return out

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str, key: bytes | None = None) -> None:
        z, r, f = self.baseline.to_file(), self.role_baseline.to_file(), self.forest.to_file()
        arrays = {**{f"z.{k}": v for k, v in z.arrays.items()}, **{f"role.{k}": v for k, v in r.arrays.items()},
                  **{f"if.{k}": v for k, v in f.arrays.items()}}
        flows = self.flow_scorer.to_file() if self.flow_scorer is not None else None
        if flows is not None:
            arrays.update({f"flows.{k}": v for k, v in flows.arrays.items()})
        meta = {"window_s": self.window_s, "z_alert": self.z_alert, "if_quantile": self.if_quantile,
                "z_strong": self.z_strong, "flow_quantile": self.flow_quantile,
                "flow_threshold": self.flow_threshold if flows is not None else None,
                "flows": flows.meta if flows is not None else None,
                "if_threshold": self.if_threshold, "windows_trained": self.windows_trained, "frozen": self.frozen,
                "z": z.meta, "role": r.meta, "if": f.meta, "hours": self.hours,
                "destinations": [[s, d, b] for (s, d), b in self.destinations.items()], "pins": self.pins}
        if self.gpu is not None:
            gmeta, garrays = self.gpu.to_parts()
            meta["gpu"] = gmeta
            arrays.update({f"gpu.{k}": v for k, v in garrays.items()})
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
            model = cls(float(m["window_s"]), float(m["z_alert"]), float(m["if_quantile"]), float(m["z_strong"]),
                        float(m["flow_quantile"]))
            if m["flows"] is not None:
                model.flow_scorer = KnnDistance.from_file(
                    _part(mf, "flows", KnnDistance.kind, m["flows"], FLOW_FEATURES), path)
                model.flow_threshold = float(m["flow_threshold"])
            model.if_threshold, model.windows_trained = float(m["if_threshold"]), int(m["windows_trained"])
            model.frozen = bool(m["frozen"])
            model.baseline = RobustZ.from_file(_part(mf, "z", RobustZ.kind, m["z"]), path)
            model.role_baseline = RobustZ.from_file(_part(mf, "role", RobustZ.kind, m["role"]), path)
            model.forest = IsolationForest.from_file(_part(mf, "if", IsolationForest.kind, m["if"]), path)
            model.hours = {str(h): [float(x) for x in v] for h, v in dict(m["hours"]).items()}
            model.destinations = {(str(s), str(d)): float(b) for s, d, b in _triples(m["destinations"])}
            model.pins = {str(k): dict(v) for k, v in dict(m["pins"]).items()}
            if m.get("gpu"):  # (models trained without GPU telemetry have none)
                model.gpu = GpuProfileModel.from_parts(
                    m["gpu"], {k[4:]: v for k, v in mf.arrays.items() if k.startswith("gpu.")}, path)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(path, f"incomplete site model: {exc}") from None
        return model


def _part(mf: ModelFile, prefix: str, kind: str, meta: dict, schema: list[str] | None = None) -> ModelFile:
    arrays = {k[len(prefix) + 1:]: v for k, v in mf.arrays.items() if k.startswith(prefix + ".")}
    return ModelFile(kind, 1, mf.schema if schema is None else schema, meta, arrays)


def _triples(items: Iterable) -> Iterable[tuple]:
    for item in items:
        s, d, b = item
        yield s, d, b
