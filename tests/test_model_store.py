"""Model files: round trip, and refusal of modified, truncated, foreign and unsigned files."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct

import numpy as np
import pytest

from models import store
from models.store import ModelError, ModelFile


@pytest.fixture(autouse=True)
def _no_site_key(monkeypatch):
    monkeypatch.delenv("DETECTOR_MODEL_KEY", raising=False)
    monkeypatch.delenv("DETECTOR_MODEL_KEY_FILE", raising=False)


def sample() -> ModelFile:
    return ModelFile("robust_z", 1, ["bytes_out", "dst_count"], {"min_mad": 0.5, "entities": ["a", "b"]},
                     {"median": np.arange(6, dtype=np.float64).reshape(3, 2), "ids": np.array([1, 2, 3], np.uint32),
                      "empty": np.zeros((0, 4), np.float32)})


def test_round_trip(tmp_path):
    path = str(tmp_path / "m.model")
    store.save(path, sample())
    got = store.load(path, kind="robust_z")
    assert (got.kind, got.version, got.schema, got.meta) == ("robust_z", 1, ["bytes_out", "dst_count"],
                                                              sample().meta)
    for name, arr in sample().arrays.items():
        assert got.arrays[name].dtype == arr.dtype and np.array_equal(got.arrays[name], arr)


def test_a_flipped_byte_a_truncation_and_a_pickle_are_refused(tmp_path):
    path = tmp_path / "m.model"
    store.save(str(path), sample())
    blob = path.read_bytes()
    for where in (20, len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[where] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(ModelError, match="digest|damaged|header|fit"):
            store.load(str(path))
    path.write_bytes(blob[:-40])
    with pytest.raises(ModelError, match="digest|truncated"):
        store.load(str(path))
    path.write_bytes(pickle.dumps({"kind": "robust_z"}))
    with pytest.raises(ModelError, match="not a detector model"):
        store.load(str(path))


def test_a_consistent_file_with_an_object_dtype_is_still_refused(tmp_path):
    header = json.dumps({"kind": "x", "version": 1, "schema": [], "meta": {}, "signed": False,
                         "arrays": [{"name": "a", "dtype": "object", "shape": [1], "offset": 0, "nbytes": 8}]}).encode()
    body = struct.pack("<8sHI", b"DETMODEL", 1, len(header)) + header + bytes(8)
    path = tmp_path / "evil.model"
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(ModelError, match="never loaded"):
        store.load(str(path))


def test_a_consistent_file_with_negative_dimensions_is_refused(tmp_path):
    header = json.dumps({"kind": "x", "version": 1, "schema": [], "meta": {}, "signed": False,
                         "arrays": [{"name": "a", "dtype": "float64", "shape": [-1, -2], "offset": 0,
                                     "nbytes": 16}]}).encode()
    body = struct.pack("<8sHI", b"DETMODEL", 1, len(header)) + header + bytes(16)
    path = tmp_path / "odd.model"
    path.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(ModelError, match="negative"):
        store.load(str(path))


def test_signed_models(tmp_path, monkeypatch):
    path = str(tmp_path / "m.model")
    store.save(path, sample(), key=b"site secret")
    assert store.load(path, key=b"site secret").schema == sample().schema
    with pytest.raises(ModelError, match="HMAC"):
        store.load(path, key=b"another secret")
    with pytest.raises(ModelError, match="signed"):
        store.load(path)
    keyfile = tmp_path / "key"
    keyfile.write_bytes(b"site secret\n")
    monkeypatch.setenv("DETECTOR_MODEL_KEY_FILE", str(keyfile))
    assert store.load(path).kind == "robust_z"
    unsigned = str(tmp_path / "u.model")
    monkeypatch.delenv("DETECTOR_MODEL_KEY_FILE")
    store.save(unsigned, sample())
    monkeypatch.setenv("DETECTOR_MODEL_KEY", "site secret")
    with pytest.raises(ModelError, match="not signed"):
        store.load(unsigned)


def test_wrong_kind_and_unstorable_arrays(tmp_path):
    path = str(tmp_path / "m.model")
    store.save(path, sample())
    with pytest.raises(ModelError, match="not a 'isolation_forest'"):
        store.load(path, kind="isolation_forest")
    with pytest.raises(ValueError, match="dtype"):
        store.save(path, ModelFile("x", 1, [], {}, {"names": np.array(["a"], dtype=object)}))
