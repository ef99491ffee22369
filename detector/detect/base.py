"""The detector interface, and the views of flows and events detectors read.

A detector is constructed with its parameters (a frozen dataclass, defaults documented there,
overridable in ``[detect.<name>]``) and the :class:`~detector.site.Site`. It sees every batch
of flow records (``observe_flows``) and of L7/packet events (``observe_events``), keeps bounded
state, and returns its alerts from ``finish``. One incident gives one alert.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pyarrow as pa

from detector.alerts import Alert
from detector.l7.events import Events
from detector.site import Site


class FlowView:
    """One batch of flow records, with columns converted on first use and cached."""

    def __init__(self, batch: pa.RecordBatch):
        self.batch = batch
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.batch.num_rows

    def __getitem__(self, name: str) -> np.ndarray:
        col = self._cache.get(name)
        if col is None:
            arr = self.batch.column(name)
            if name == "ts":
                col = arr.cast(pa.int64()).to_numpy()
            elif pa.types.is_dictionary(arr.type):
                col = np.asarray(arr.cast(pa.string()).to_pylist(), dtype=object)
            elif pa.types.is_string(arr.type) or pa.types.is_boolean(arr.type):
                col = np.asarray(arr.to_pylist(), dtype=object)
            else:
                col = arr.to_numpy(zero_copy_only=False)
            self._cache[name] = col
        return col


class Detector:
    """Base class. Subclasses set ``name``, ``version``, ``Params`` and override the hooks."""

    name: ClassVar[str] = "detector"
    version: ClassVar[str] = "1"

    @dataclasses.dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params=None, site: Site | None = None):
        self.p = params if params is not None else self.Params()
        self.site = site or Site()

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"

    def observe_flows(self, flows: FlowView) -> None:
        pass

    def observe_events(self, events: Events) -> None:
        pass

    def finish(self) -> list[Alert]:
        return []

    def host_for(self, *addrs: str | None) -> str:
        """The site host an alert is about: the first local address among ``addrs``."""
        for a in addrs:
            if a and self.site.is_local(a):
                return a
        return next((a for a in addrs if a), "")


def registered_domain(name: str) -> str:
    """The domain a name belongs to: its last two labels, or three under the common
    two-label public suffixes (co.uk, ac.jp, com.au, ...)."""
    labels = name.lower().strip(".").split(".")
    if len(labels) <= 2:
        return ".".join(labels)
    if labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


_SECOND_LEVEL = {"co", "com", "ac", "edu", "gov", "net", "org", "or", "ne", "go", "gob", "mil", "nic", "ltd", "plc"}


def mac_text(mac: int) -> str:
    return ":".join(f"{(int(mac) >> s) & 0xFF:02x}" for s in range(40, -1, -8))


def ipv4_text(value: int) -> str:
    v = int(value)
    return f"{v >> 24 & 255}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"
