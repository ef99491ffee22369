"""The detector interface, and the views of flows and events detectors read.

A detector is constructed with its parameters (a frozen dataclass, defaults documented there,
overridable in ``[detect.<name>]``) and the :class:`~detector.site.Site`. It sees every batch
of flow records (``observe_flows``) and of L7/packet events (``observe_events``), keeps bounded
state, and returns its alerts from ``finish``. One incident gives one alert.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector import arrowutil as au
from detector.alerts import Alert
from detector.detect.address_columns import crc32_column, ipv4_values, padded, string_ids
from detector.l7.events import Events
from detector.site import Site
from kernels.xp_ops import distinct


def keep_earliest(heap: list, item: tuple, k: int) -> None:
    """Keep in ``heap`` the ``k`` earliest of the items offered, whatever their order: items
    start with the negated time, so the heap's root is the latest one kept."""
    if len(heap) < k:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def widen(span: dict, ts: int) -> None:
    """Stretch ``span["first"]``/``span["last"]`` to cover ``ts``, whatever order times come in."""
    if ts < span["first"]:
        span["first"] = ts
    if ts > span["last"]:
        span["last"] = ts


class FlowView:
    """One batch of flow records, with columns converted on first use and cached. ``extra``
    holds per-record arrays that are not record fields (``first_payload``: see
    :mod:`detector.flows.services`)."""

    def __init__(self, batch: pa.RecordBatch, extra: dict[str, np.ndarray] | None = None):
        self.batch = batch
        self._cache: dict[str, np.ndarray] = dict(extra or {})

    def __contains__(self, name: str) -> bool:
        return name in self._cache or self.batch.schema.get_field_index(name) >= 0

    def __len__(self) -> int:
        return self.batch.num_rows

    def __getitem__(self, name: str) -> np.ndarray:
        col = self._cache.get(name)
        if col is None:
            arr = self.batch.column(name)
            if name == "ts":
                col = au.to_numpy(arr)
            elif pa.types.is_dictionary(arr.type):
                arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
                values = np.asarray(arr.dictionary.to_pylist() + [None], dtype=object)
                col = values[_codes(arr.indices, len(values) - 1)]
            elif pa.types.is_string(arr.type):
                col = np.asarray(arr.to_pylist(), dtype=object)
            else:
                col = au.to_numpy(arr)
            self._cache[name] = col
        return col

    def member(self, name: str, nets) -> np.ndarray:
        """Whether each address in column ``name`` is in ``nets`` (a NetSet), computed once per
        batch and shared by the detectors that ask."""
        key = f"{name} in {id(nets)}"
        mask = self._cache.get(key)
        if mask is None:
            dictionary, indices = self.encoded(name)
            is_v4, v4 = self.ipv4(name)
            found = np.zeros(len(dictionary) + 1, bool)  # the last: null
            found[:-1][is_v4] = nets.contains_ipv4(v4[is_v4])
            other = np.flatnonzero(~is_v4 & np.asarray(dictionary.is_valid()))
            if len(other):  # IPv6 and the rest, one at a time (memoised in the set)
                found[other] = [x in nets for x in dictionary.take(other).to_pylist()]
            mask = self._cache[key] = found[indices]
        return mask

    def ipv4(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """For :meth:`encoded`'s distinct values: which are IPv4 addresses, and their values."""
        if name in ADDRESS_COLUMNS:
            return self._address_values(name)[1]
        key = f"{name} ipv4"
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = ipv4_values(self.encoded(name)[0])
        return hit

    def _address_values(self, name: str) -> tuple:
        """Of an address column's distinct values: ids, IPv4 values and crc32 hashes, read from
        one padded byte matrix (a flood's millions of distinct addresses are laid out once, and
        the matrix is not kept)."""
        key = f"{name} address values"
        hit = self._cache.get(key)
        if hit is None:
            mat = padded(self.encoded(name)[0])
            hit = self._cache[key] = (string_ids(mat), ipv4_values(mat), crc32_column(mat))
        return hit

    def encoded(self, name: str) -> tuple[pa.Array, np.ndarray]:
        """The column's distinct values (Arrow) and each row's index into them, nulls as
        ``len(values)``."""
        key = f"{name} encoded"
        hit = self._cache.get(key)
        if hit is None:
            enc = pc.dictionary_encode(self.batch.column(name))
            if isinstance(enc, pa.ChunkedArray):
                enc = enc.unify_dictionaries().combine_chunks()
            hit = self._cache[key] = (enc.dictionary, _codes(enc.indices, len(enc.dictionary)))
        return hit

    def value_ids(self, name: str) -> np.ndarray:
        """The 64-bit id (see :func:`~detector.detect.address_columns.string_ids`) of each of
        :meth:`encoded`'s distinct values, and last, of null."""
        key = f"{name} value ids"
        hit = self._cache.get(key)
        if hit is None:
            ids = self._address_values(name)[0] if name in ADDRESS_COLUMNS else string_ids(self.encoded(name)[0])
            hit = self._cache[key] = np.append(ids, _NULL_ID)
        return hit

    def crc32(self, name: str) -> np.ndarray:
        """``zlib.crc32`` of each of :meth:`encoded`'s distinct values, and last 0 for null (the
        hash :class:`~detector.detect.sample.DistinctSample` ranks by)."""
        key = f"{name} crc32"
        hit = self._cache.get(key)
        if hit is None:
            crc = self._address_values(name)[2] if name in ADDRESS_COLUMNS else crc32_column(self.encoded(name)[0])
            hit = self._cache[key] = np.append(crc, np.uint32(0))
        return hit

    def ids_at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """:meth:`ids` at ``rows``, computing ids only for the values there (for a column of
        many distinct values, such as uids, of which a detector keeps a few)."""
        if f"{name} value ids" in self._cache:
            return self.ids(name)[rows]
        dictionary, codes = self.encoded(name)
        seen, inverse = np.unique(codes[rows], return_inverse=True)
        present = seen < len(dictionary)
        ids = np.full(len(seen), _NULL_ID, np.uint64)
        ids[present] = string_ids(dictionary.take(pa.array(seen[present])))
        return ids[inverse]

    def ids(self, name: str) -> np.ndarray:
        """The 64-bit id of each row's value in string column ``name``, computed once per batch."""
        key = f"{name} ids"
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self.value_ids(name)[self.encoded(name)[1]]
        return hit

    def named(self, name: str, rows: np.ndarray) -> tuple[np.ndarray, pa.Array]:
        """The distinct non-null values of string column ``name`` at ``rows``: their ids
        (:meth:`ids`) and their text as Arrow, for a :class:`~detector.detect.keyed_table.Names`."""
        dictionary, codes = self.encoded(name)
        seen = distinct(np, codes[rows])
        seen = seen[seen < len(dictionary)]  # (the null code is last)
        text = dictionary.take(pa.array(seen))
        return (self.value_ids(name)[seen] if name in ADDRESS_COLUMNS else string_ids(text)), text

    def has_value(self, name: str) -> np.ndarray:
        """Whether each row's value of column ``name`` is not null."""
        return au.to_numpy(pc.is_valid(self.batch.column(name)))

    def has_text(self, name: str, text: str) -> np.ndarray:
        """Whether each row's value of string column ``name`` contains ``text`` (nulls: no)."""
        dictionary, codes = self.encoded(name)
        found = au.to_numpy(pc.fill_null(pc.match_substring(dictionary, text), False))
        return np.append(found, False)[codes]

    def isin(self, name: str, values) -> np.ndarray:
        """Whether each row's value of column ``name`` is one of ``values`` (nulls: no)."""
        col = self.batch.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        return au.to_numpy(pc.fill_null(pc.is_in(col, pa.array(list(values), col.type)), False))

    def distinct(self, name: str) -> tuple[list, np.ndarray]:
        """The column's distinct values and each row's index into them (hosts repeat a lot)."""
        key = f"{name} distinct"
        hit = self._cache.get(key)
        if hit is None:
            dictionary, codes = self.encoded(name)
            hit = self._cache[key] = (dictionary.to_pylist() + [None], codes)
        return hit

    def take(self, name: str, rows: np.ndarray) -> list:
        """Column ``name`` at ``rows`` as Python values (for the loops over the few rows a
        detector keeps after filtering with whole-column operations)."""
        return self[name][rows].tolist()


ADDRESS_COLUMNS = ("orig_h", "resp_h")  # their ids, IPv4 values and hashes are computed together
_NULL_ID = string_ids(pa.nulls(1, pa.string()))[0]


def _codes(indices: pa.Array, null_code: int) -> np.ndarray:
    """Dictionary indices as NumPy, nulls as ``null_code``."""
    codes = au.to_numpy(indices)
    if indices.null_count:
        codes = np.where(np.isnan(codes), null_code, codes)
    return codes.astype(np.int64)


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

    @property
    def evictions(self) -> int:
        """Entries this detector dropped or refused at the caps on its state (exported as
        ``detector_detector_evictions_total``): above zero, some findings may be missed."""
        return getattr(self, "dropped", 0)

    def learned(self) -> dict:
        """What this detector pinned from the traffic (JSON-safe), for a site model to keep."""
        return {}

    def seed(self, pins: dict) -> None:
        """Start from pins a site model kept (what :meth:`learned` gave in training)."""

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


def is_public_suffix(name: str) -> bool:
    """A name nobody registers below the registry: one label (``org``), or a common second
    level under a country (``co.uk``)."""
    labels = name.lower().strip(".").split(".")
    return len(labels) == 1 or (len(labels) == 2 and labels[0] in _SECOND_LEVEL and len(labels[1]) == 2)


def mac_text(mac: int) -> str:
    return ":".join(f"{(int(mac) >> s) & 0xFF:02x}" for s in range(40, -1, -8))


def ipv4_text(value: int) -> str:
    v = int(value)
    return f"{v >> 24 & 255}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"
