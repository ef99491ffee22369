"""Model files: JSON metadata and raw NumPy arrays, with a SHA-256 digest and an optional HMAC.
No pickle anywhere: loading parses a JSON header and copies bytes into arrays of plain numeric
dtypes, so it never executes code.

Layout (all integers little-endian)::

    b"DETMODEL"  format version (u16)  header length (u32)
    header: UTF-8 JSON {"kind", "version", "schema", "meta", "signed",
                        "arrays": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}
    array data, each at its offset (from the start of the data section)
    SHA-256 of everything above (32 bytes)
    HMAC-SHA256 of everything above, with the site's key (32 bytes, only when "signed")

The key comes from ``DETECTOR_MODEL_KEY`` (the key itself) or ``DETECTOR_MODEL_KEY_FILE`` (a
file holding it), or is passed explicitly. A file signed with a key is refused without it, and
a key that is set refuses unsigned files: a site that signs its models accepts only signed ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from detector.errors import DetectorError

MAGIC = b"DETMODEL"
FORMAT_VERSION = 1
DIGEST = 32
_HEAD = struct.Struct("<8sHI")
# plain numeric dtypes only: nothing that needs pickle or Python objects to rebuild
DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float32", "float64"})
MAX_HEADER = 16 << 20


class ModelError(DetectorError):
    """A model file that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass
class ModelFile:
    kind: str  # which model class wrote it
    version: int  # that class's format version
    schema: list[str]  # the feature names, in column order
    meta: dict = field(default_factory=dict)  # JSON-safe parameters and fitted scalars
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def site_key(explicit: bytes | None = None) -> bytes | None:
    """The HMAC key: ``explicit``, else the environment's, else None."""
    if explicit is not None:
        return explicit
    value = os.environ.get("DETECTOR_MODEL_KEY")
    if value:
        return value.encode()
    path = os.environ.get("DETECTOR_MODEL_KEY_FILE")
    if path:
        try:
            with open(path, "rb") as fh:
                key = fh.read().strip()
        except OSError as exc:
            raise ModelError(path, f"cannot read the model key file: {exc.strerror}") from None
        if not key:
            raise ModelError(path, "the model key file is empty")
        return key
    return None


def save(path: str, model: ModelFile, key: bytes | None = None) -> None:
    """Write ``model`` to ``path`` (atomically: a temporary file renamed into place)."""
    key = site_key(key)
    entries, chunks, offset = [], [], 0
    for name, arr in model.arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in DTYPES:
            raise ValueError(f"array {name!r}: dtype {arr.dtype} cannot be stored (plain numeric dtypes only)")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        entries.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape), "offset": offset,
                        "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
    header = json.dumps({"kind": model.kind, "version": model.version, "schema": list(model.schema),
                         "meta": model.meta, "signed": key is not None, "arrays": entries},
                        sort_keys=True, allow_nan=False).encode()
    body = _HEAD.pack(MAGIC, FORMAT_VERSION, len(header)) + header + b"".join(chunks)
    body += hashlib.sha256(body).digest()
    if key is not None:
        body += hmac.new(key, body, hashlib.sha256).digest()
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ModelError(path, f"cannot write the model: {exc.strerror}") from None


def load(path: str, key: bytes | None = None, kind: str | None = None) -> ModelFile:
    """Read and verify a model file; anything unexpected is a :class:`ModelError`."""
    key = site_key(key)
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError as exc:
        raise ModelError(path, f"cannot read the model: {exc.strerror}") from None
    if len(blob) < _HEAD.size or blob[:8] != MAGIC:
        raise ModelError(path, "not a detector model file (it does not start with the DETMODEL signature; "
                               "pickles and other formats are never loaded)")
    _, fmt, hlen = _HEAD.unpack_from(blob)
    if fmt != FORMAT_VERSION:
        raise ModelError(path, f"model file format {fmt} is not supported (this version reads {FORMAT_VERSION})")
    if hlen > MAX_HEADER or _HEAD.size + hlen > len(blob):
        raise ModelError(path, f"truncated or damaged: header of {hlen} bytes does not fit in {len(blob)} bytes")
    try:
        header = json.loads(blob[_HEAD.size:_HEAD.size + hlen])
    except (UnicodeDecodeError, ValueError):
        raise ModelError(path, f"damaged header at offset {_HEAD.size}") from None
    signed = bool(header.get("signed")) if isinstance(header, dict) else False
    end = len(blob) - DIGEST - (DIGEST if signed else 0)
    if end < _HEAD.size + hlen:
        raise ModelError(path, "truncated: the digest is missing")
    if not hmac.compare_digest(hashlib.sha256(blob[:end]).digest(), blob[end:end + DIGEST]):
        raise ModelError(path, "the SHA-256 digest does not match: the file was modified or truncated")
    if signed:
        if key is None:
            raise ModelError(path, "the model is signed: set DETECTOR_MODEL_KEY or DETECTOR_MODEL_KEY_FILE")
        mac = hmac.new(key, blob[:end + DIGEST], hashlib.sha256).digest()
        if not hmac.compare_digest(mac, blob[end + DIGEST:]):
            raise ModelError(path, "the HMAC signature does not match this site's key")
    elif key is not None:
        raise ModelError(path, "the model is not signed, and a model key is set: only signed models are accepted")
    return _parse(path, header, blob, _HEAD.size + hlen, end, kind)


def _parse(path: str, header, blob: bytes, data_start: int, data_end: int, kind: str | None) -> ModelFile:
    try:
        model = ModelFile(str(header["kind"]), int(header["version"]), [str(x) for x in header["schema"]],
                          dict(header["meta"]))
        entries = list(header["arrays"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(path, "the header lacks kind, version, schema, meta or arrays") from None
    if kind is not None and model.kind != kind:
        raise ModelError(path, f"holds a {model.kind!r} model, not a {kind!r} one")
    for e in entries:
        try:
            name, dtype, shape = str(e["name"]), str(e["dtype"]), tuple(int(x) for x in e["shape"])
            offset, nbytes = int(e["offset"]), int(e["nbytes"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(path, "an array entry of the header is malformed") from None
        if dtype not in DTYPES:
            raise ModelError(path, f"array {name!r} has dtype {dtype!r}, which is never loaded")
        if any(d < 0 for d in shape):
            raise ModelError(path, f"array {name!r} has a negative dimension")
        dt = np.dtype(dtype).newbyteorder("<")
        count = 1
        for d in shape:  # Python integers: no overflow
            count *= d
        if offset < 0 or nbytes != count * dt.itemsize or data_start + offset + nbytes > data_end:
            raise ModelError(path, f"array {name!r} does not fit the file (offset {data_start + offset})")
        arr = np.frombuffer(blob, dt, count, data_start + offset).reshape(shape)
        model.arrays[name] = arr.astype(dt.newbyteorder("="), copy=True)
    return model


def file_digest(path: str) -> str | None:
    """SHA-256 of a file's bytes (hex), or None when it cannot be read: tells whether a model
    file is the one a daemon's state started from."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None
