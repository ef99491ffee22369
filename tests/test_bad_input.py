"""Bad input gets a clear message naming the file and byte offset, the right exit status, and
everything read before the fault is still written."""

from __future__ import annotations

import gzip
import struct

import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from detector.cli import main
from tests.capture_files import Iface, Rec, pcap_bytes, pcapng_section

S = 1_000_000_000
T0 = 1_700_000_000 * S


def frames(n):
    return [Rec(T0 + k * S, bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + k, dport=53) / b"x"))
            for k in range(n)]


def run_cli(tmp_path, capsys, data: bytes | None, *extra, name="bad.pcap"):
    paths = []
    if data is not None:
        p = tmp_path / name
        p.write_bytes(data)
        paths.append(str(p))
    out = tmp_path / "out.parquet"
    code = main(["flows", *paths, *extra, "-o", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    rows = pq.read_table(out).num_rows if out.exists() and out.stat().st_size else 0
    return code, err, rows, paths


def record_offsets(data: bytes) -> list[int]:
    offs, pos = [], 24
    while pos + 16 <= len(data):
        offs.append(pos)
        pos += 16 + struct.unpack("<I", data[pos + 8:pos + 12])[0]
    return offs


def test_truncated_final_record_keeps_earlier_flows(tmp_path, capsys):
    data = pcap_bytes(frames(3))
    last = record_offsets(data)[-1]
    code, err, rows, (path,) = run_cli(tmp_path, capsys, data[:-10])
    assert code == 1
    assert f"{path}: offset {last}: truncated final record" in err
    assert rows == 2


def test_caplen_above_libpcaps_limit(tmp_path, capsys):
    data = bytearray(pcap_bytes(frames(3), snaplen=1500))
    second = record_offsets(bytes(data))[1]
    data[second + 8:second + 12] = struct.pack("<I", 300_000)
    code, err, rows, (path,) = run_cli(tmp_path, capsys, bytes(data))
    assert code == 1
    assert f"{path}: offset {second}: record claims 300000 captured bytes, above 262144 (the snap length, " in err
    assert rows == 1


def test_records_above_the_snap_length_are_read_and_counted(tmp_path, capsys):
    """The snap length is advisory (libpcap reads past it): a record longer than the header's
    snap length is read in full, and the run says how many there were."""
    short = pcap_bytes(frames(3), snaplen=30)  # the frames are 43 bytes
    code, err, rows, (path,) = run_cli(tmp_path, capsys, short)
    assert rows == 3 and "3 record(s) captured more bytes than the file's snap length (30)" in err, err
    assert code == 1  # a warning: the run went through, with something to say


def test_absurd_length_without_snaplen(tmp_path, capsys):
    data = bytearray(pcap_bytes(frames(2), snaplen=0))
    data[24 + 8:24 + 12] = struct.pack("<I", 0xFFFFFFF0)
    code, err, rows, (path,) = run_cli(tmp_path, capsys, bytes(data))
    assert code == 2  # nothing could be read
    assert f"{path}: offset 24:" in err and "corrupt record header" in err


def test_bad_magic(tmp_path, capsys):
    code, err, _, (path,) = run_cli(tmp_path, capsys, b"GIF89a" + bytes(100))
    assert code == 2
    assert f"{path}: offset 0: unknown capture format (first bytes 47 49 46 38 39 61 00" in err


def test_empty_file(tmp_path, capsys):
    code, err, _, (path,) = run_cli(tmp_path, capsys, b"")
    assert code == 2 and f"{path}: offset 0: empty file" in err


def test_missing_file(tmp_path, capsys):
    code = main(["flows", str(tmp_path / "nope.pcap"), "-o", str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.pcap: cannot open" in err


def test_unknown_link_type(tmp_path, capsys):
    code, err, _, (path,) = run_cli(tmp_path, capsys, pcap_bytes(frames(1), link_type=147))
    assert code == 2
    assert f"{path}: offset 20: link type 147 (USER0) is not supported" in err


def test_pcapng_interface_with_unknown_link_type_is_skipped_and_reported(tmp_path, capsys):
    recs = frames(2)
    recs[1].iface = 1
    data = pcapng_section(recs, [Iface(1), Iface(147)])
    code, err, rows, (path,) = run_cli(tmp_path, capsys, data, name="x.pcapng")
    assert code == 1 and rows == 1
    assert "link type 147 (USER0) is not supported" in err and path in err


@pytest.mark.parametrize("damage", ["length", "trailer"])
def test_malformed_pcapng_block(tmp_path, capsys, damage):
    good = pcapng_section(frames(3), [Iface(1)])
    # find the third Enhanced Packet Block
    pos, epbs = 0, []
    while pos < len(good):
        btype, blen = struct.unpack("<II", good[pos:pos + 8])
        if btype == 6:
            epbs.append(pos)
        pos += blen
    bad = bytearray(good)
    third = epbs[2]
    if damage == "length":
        bad[third + 4:third + 8] = struct.pack("<I", 13)
    else:
        blen = struct.unpack("<I", good[third + 4:third + 8])[0]
        bad[third + blen - 4:third + blen] = struct.pack("<I", blen + 4)
    code, err, rows, (path,) = run_cli(tmp_path, capsys, bytes(bad), name="x.pcapng")
    assert code == 1 and rows == 2
    assert f"{path}: offset {third}: " in err and "corrupt block" in err


def test_gzip_cut_short(tmp_path, capsys):
    data = gzip.compress(pcap_bytes(frames(400)))
    code, err, rows, (path,) = run_cli(tmp_path, capsys, data[: len(data) // 2], name="x.pcap.gz")
    assert code == 1
    assert path in err and "gzip stream ends before its end marker" in err
    assert 0 < rows < 400


def test_one_bad_input_among_good_ones(tmp_path, capsys):
    good = tmp_path / "good.pcap"
    good.write_bytes(pcap_bytes(frames(2)))
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\0" * 40)
    out = tmp_path / "o.parquet"
    code = main(["flows", str(good), str(bad), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "bad.pcap: offset 0: unknown capture format" in err
    assert pq.read_table(out).num_rows == 2


def test_output_folder_missing(tmp_path, capsys):
    p = tmp_path / "in.pcap"
    p.write_bytes(pcap_bytes(frames(1)))
    code = main(["flows", str(p), "-o", str(tmp_path / "no" / "such" / "out.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "out.parquet" in err


def test_full_disk(tmp_path, capsys):
    p = tmp_path / "in.pcap"
    p.write_bytes(pcap_bytes(frames(3)))
    code = main(["flows", str(p), "-o", "/dev/full", "--format", "csv"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 1 and "/dev/full" in err and "No space left on device" in err


@pytest.mark.parametrize("text, key", [
    ("[flows]\ntcp_idle_timeout = -1\n", "flows.tcp_idle_timeout"),
    ("[flows]\nmax_flows = 'many'\n", "flows.max_flows"),
    ("[flows]\nwalk_threads = -1\n", "flows.walk_threads"),
    ("[flows]\nidle = 3\n", "flows.idle"),
    ("[flow]\n", "flow"),
    ("[flows\n", None),
])
def test_garbage_config(tmp_path, capsys, text, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    p = tmp_path / "in.pcap"
    p.write_bytes(pcap_bytes(frames(1)))
    code = main(["flows", str(p), "-o", str(tmp_path / "o.parquet"), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and str(cfg) in err and "Traceback" not in err
    if key:
        assert f"key '{key}'" in err
    else:
        assert "not valid TOML" in err
