"""Alerts: the contract of DESIGN.md (one JSON object per line), and their sinks.

Detectors build :class:`Alert` objects; ``to_json`` writes the fixed schema. Times are RFC 3339
UTC with microseconds. One incident is one alert: detectors aggregate before they alert.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field

CATEGORIES = ("exfiltration", "mitm", "compute_theft", "unauthorized_access", "scan", "dos", "anomaly")
SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def rfc3339(ts_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ts_ns % 1_000_000_000) // 1000:06d}Z"


def _plain(value):
    """Evidence values as JSON-friendly Python (numpy scalars, NaN, bytes, sets)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_plain(v) for v in items]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    return value


@dataclass
class Alert:
    ts_ns: int
    ts_end_ns: int
    category: str
    technique: str
    severity: str
    score: float
    summary: str
    detector: str
    host: str
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    proto: str | None = None
    evidence: dict = field(default_factory=dict)
    community_id: str | None = None

    def __post_init__(self):
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        self.score = float(min(1.0, max(0.0, self.score)))

    @property
    def severity_rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {
            "ts": rfc3339(self.ts_ns),
            "ts_end": rfc3339(max(self.ts_end_ns, self.ts_ns)),
            "category": self.category,
            "technique": self.technique,
            "severity": self.severity,
            "score": round(self.score, 4),
            "src_ip": self.src_ip,
            "dst_ip": self.dst_ip,
            "src_port": None if self.src_port is None else int(self.src_port),
            "dst_port": None if self.dst_port is None else int(self.dst_port),
            "proto": self.proto,
            "host": self.host,
            "summary": self.summary,
            "evidence": _plain(d["evidence"]),
            "detector": self.detector,
            "community_id": self.community_id,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False)


def severity_for(score: float, medium: float = 0.5, high: float = 0.75, critical: float = 0.95) -> str:
    """A severity from a score, with the cut points a detector chooses."""
    if score >= critical:
        return "critical"
    if score >= high:
        return "high"
    if score >= medium:
        return "medium"
    return "low"
