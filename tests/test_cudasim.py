"""The GPU backend's numba.cuda kernels under Numba's CUDA simulator, against the CPU path.

Run with ``NUMBA_ENABLE_CUDASIM=1 NUMBA_DISABLE_JIT=1 pytest -m cudasim`` (``make test`` does):
the simulator runs each kernel thread as Python, and with the JIT off the shared per-element
functions run as Python inside it. Kernel-level tests compare with the CPU drivers in the same
process; end-to-end tests compare with the compiled CPU path, run in a child process.
These are smoke tests of the GPU code path on tiny inputs; runs on a real GPU are the proof.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from detector.backend import select_backend
from detector.config import FlowConfig
from detector.pipeline.flows_job import run_flows
from detector.sources import open_capture
from tests.capture_files import Rec, pcap_bytes
from tests.conftest import REPO, corpus_files
from tests.flow_compare import assert_same
from tests.test_flows_golden import tcp_session

pytestmark = pytest.mark.cudasim

S = 1_000_000_000
T0 = 1_700_000_000 * S


def mixed_frames():
    big = IP(src="10.0.0.1", dst="10.0.0.2", id=7) / UDP(sport=40000, dport=9999) / (b"a" * 2500)
    big6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=9) / UDP(sport=1, dport=2) / (b"b" * 2000)
    frames = [
        bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags="S")),
        bytes(Ether() / Dot1Q(vlan=3) / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=1234, flags="SA")),
        bytes(Ether() / IPv6(src="::1", dst="::2") / UDP(sport=53, dport=5353) / b"dns"),
        bytes(Ether() / IP(src="10.0.0.3", dst="10.0.0.1") / ICMP(type=8) / b"ping"),
        bytes(Ether() / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.9")),
        bytes(Ether() / IP(src="10.0.0.3", dst="10.0.0.1") / TCP(sport=5, dport=6))[:30],
    ]
    frames += [bytes(Ether() / f) for f in reversed(fragment(big, fragsize=1000))]
    frames += [bytes(Ether() / f) for f in fragment6(big6, 1280)]
    return frames


FLOW_ASSIGNED = ("flow_dir", "flow_nth", "flow_first_ts")


def decode_both(path):
    """Decode a capture's first batch with the CPU driver and with the GPU kernel."""
    from detector.flows.gpu_engine import GpuFlowEngine
    from kernels import packet_columns as pc
    from kernels.decode import decode_records

    gpu = GpuFlowEngine(FlowConfig(max_flows=64), select_backend("gpu"))
    reader = open_capture(str(path), 4096)
    b = next(reader.batches())
    cpu_cols = pc.allocate(b.n)
    cpu_hash = np.zeros(b.n, np.uint64)
    decode_records(b.buf, b.off, b.caplen, b.wirelen, b.ts_ns, b.link, 0, b.n, cpu_cols, cpu_hash,
                   np.zeros(9, np.int64))
    gpu.process(b)
    return b.n, cpu_cols, cpu_hash, gpu


@pytest.fixture(autouse=True)
def _simulator_only():
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"):
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before Numba is imported (make test runs these)")


def test_decode_kernel_matches_cpu(tmp_path):
    path = tmp_path / "m.pcap"
    path.write_bytes(pcap_bytes([Rec(T0 + k * 1000, f) for k, f in enumerate(mixed_frames())]))
    n, cpu_cols, cpu_hash, gpu = decode_both(path)
    for name in cpu_cols._fields:
        if name in ("sport", "dport", "frag") + FLOW_ASSIGNED:  # filled in after decoding
            continue
        assert np.array_equal(getattr(cpu_cols, name), getattr(gpu.cols, name)[:n]), name


@pytest.mark.parametrize("name", ["ppp", "cisco-hdlc", "nflog-big-endian", "radiotap", "ppi-ethernet"])
def test_decode_kernel_matches_cpu_on_other_link_layers(tmp_path, name):
    from tests import link_frames as lf

    link_type, wrap = lf.WRAPS[name]
    frames = [f for f in mixed_frames() if f[12:14] in (b"\x08\x00", b"\x86\xdd")]
    recs = [Rec(T0 + k * 1000, wrap(f[14:])) for k, f in enumerate(frames)]
    recs += [Rec(T0 + 10**6, wrap(frames[0][14:])[:3])]  # a link header cut short
    path = tmp_path / "m.pcap"
    path.write_bytes(pcap_bytes(recs, link_type=link_type))
    n, cpu_cols, cpu_hash, gpu = decode_both(path)
    assert n == len(recs)
    for col in cpu_cols._fields:
        if col in ("sport", "dport", "frag") + FLOW_ASSIGNED:
            continue
        assert np.array_equal(getattr(cpu_cols, col), getattr(gpu.cols, col)[:n]), col


def test_flow_assignment_matches_cpu(tmp_path):
    """Each packet's flow direction, number in its direction and flow start (the L7 tap's keys)."""
    from detector.flows.engine import FlowEngine

    path = tmp_path / "m.pcap"
    path.write_bytes(pcap_bytes([Rec(T0 + k * 1000, f) for k, f in enumerate(mixed_frames())]))
    n, _, _, gpu = decode_both(path)
    cpu = FlowEngine(FlowConfig(max_flows=64, threads=1))
    cpu.process(next(open_capture(str(path), 4096).batches()))
    assert set(cpu.cols.flow_dir[:n].tolist()) >= {1, 2}
    for name in FLOW_ASSIGNED:
        assert np.array_equal(getattr(cpu.cols, name)[:n], getattr(gpu.cols, name)[:n]), name


def test_fragment_kernels_match_cpu(tmp_path):
    from kernels.fragments import FragmentCache

    path = tmp_path / "m.pcap"
    path.write_bytes(pcap_bytes([Rec(T0 + k * 1000, f) for k, f in enumerate(mixed_frames())]))
    n, cpu_cols, cpu_hash, gpu = decode_both(path)
    cache = FragmentCache()
    frag = np.flatnonzero(cpu_cols.frag & 1)
    cache.resolve(cpu_cols, frag)
    for name in ("sport", "dport", "frag"):
        assert np.array_equal(getattr(cpu_cols, name), getattr(gpu.cols, name)[:n]), name
    assert gpu.fragment_stats["resolved"] == cache.stats[0] > 0
    assert gpu.fragment_stats["unresolved"] == cache.stats[1]


def compiled_cpu_flows(path, tmp_path, **cfg):
    """Flow records from the compiled CPU path, in a child process without the simulator."""
    out = tmp_path / "cpu.parquet"
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBA_DISABLE_JIT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    code = ("import dataclasses, sys; from detector.config import FlowConfig; "
            "from detector.pipeline.flows_job import run_flows; "
            f"cfg = dataclasses.replace(FlowConfig(), **{cfg!r}); "
            f"r = run_flows([{str(path)!r}], {str(out)!r}, 'parquet', cfg, progress=False); sys.exit(r.exit_code)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return pq.read_table(out)


def gpu_flows(path, tmp_path, **cfg):
    out = tmp_path / "gpu.parquet"
    config = dataclasses.replace(FlowConfig(), **cfg)
    result = run_flows([str(path)], str(out), "parquet", config, progress=False, backend=select_backend("gpu"))
    return pq.read_table(out), result


def assert_same_flows(cpu, gpu):
    assert_same(cpu.sort_by([("uid", "ascending"), ("ts", "ascending")]),
                gpu.sort_by([("uid", "ascending"), ("ts", "ascending")]))


def golden_capture(tmp_path):
    recs = tcp_session()
    udp = bytes(Ether() / IP(src="10.0.0.5", dst="10.0.0.53") / UDP(sport=3333, dport=53) / b"q")
    syn = bytes(Ether() / IP(src="10.0.0.5", dst="10.0.0.7") / TCP(sport=41000, dport=25, flags="S"))
    recs += [Rec(T0 + k * 20 * S, udp) for k in range(5)]  # idle gaps and an active-timeout split
    recs += [Rec(T0 + 3 * S, syn), Rec(T0 + 4 * S, syn), Rec(T0 + 11 * S, syn)]
    recs += [Rec(T0 + 90 * S + k, f) for k, f in enumerate(mixed_frames())]
    recs.sort(key=lambda r: r.ts_ns)
    path = tmp_path / "golden.pcap"
    path.write_bytes(pcap_bytes(recs))
    return path


def test_flows_match_compiled_cpu_on_golden_traffic(tmp_path):
    path = golden_capture(tmp_path)
    cfg = {"active_timeout": 50.0, "batch_size": 256}
    gpu, result = gpu_flows(path, tmp_path, **cfg)
    assert result.summary["backend"] == "gpu" and gpu.num_rows > 5
    assert_same_flows(compiled_cpu_flows(path, tmp_path, **cfg), gpu)


def test_flows_match_compiled_cpu_on_synthetic_mix(tmp_path):
    from detector.synth.encode import encode
    from detector.synth.scenarios import hpc_mix

    sc = hpc_mix(packets=3000, seed=11)
    path = tmp_path / "mix.pcap"
    path.write_bytes(encode(sc.packets, sc.pool))
    cfg = {"batch_size": 1024}
    gpu, _ = gpu_flows(path, tmp_path, **cfg)
    assert_same_flows(compiled_cpu_flows(path, tmp_path, **cfg), gpu)


def test_eviction_matches_compiled_cpu(tmp_path):
    recs = [Rec(T0 + k * 1000, bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") /
                                     UDP(sport=10000 + k % 60, dport=53) / b"q")) for k in range(240)]
    path = tmp_path / "many.pcap"
    path.write_bytes(pcap_bytes(recs))
    cfg = {"max_flows": 16, "batch_size": 256}
    gpu, result = gpu_flows(path, tmp_path, **cfg)
    assert result.summary["evicted_flows"] > 0
    assert_same_flows(compiled_cpu_flows(path, tmp_path, **cfg), gpu)


SMALL_CORPUS = [p for p in corpus_files() if p.stat().st_size < 40_000]


@pytest.mark.corpus
@pytest.mark.parametrize("path", SMALL_CORPUS, ids=[f"{p.parent.name}/{p.name}" for p in SMALL_CORPUS])
def test_flows_match_compiled_cpu_on_small_corpus_captures(corpus, tmp_path, path):
    gpu, _ = gpu_flows(path, tmp_path)
    assert_same_flows(compiled_cpu_flows(path, tmp_path), gpu)


def compiled_cpu_alerts(paths, config=None):
    """Alerts from the compiled CPU path, in a child process without the simulator."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBA_DISABLE_JIT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    code = ("import json, sys; from detector.config import load_config; "
            "from detector.pipeline.analyze_job import run_analyze; "
            f"r = run_analyze({[str(p) for p in paths]!r}, load_config({config!r}), None, progress=False); "
            "print(json.dumps([a.to_dict() for a in r.alerts]))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    return json.loads(proc.stdout)


def test_alerts_match_compiled_cpu(tmp_path):
    """Both backends give the same alerts: small synthetic incidents analysed with the GPU
    backend under the simulator and with the compiled CPU backend."""
    from detector.config import load_config
    from detector.pipeline.analyze_job import run_analyze
    from detector.synth.encode import encode
    from detector.synth.scenarios import SCENARIOS
    from detector.synth.site import Site

    paths = []
    for name in ("mitm-arp-spoof", "mitm-dns-spoof", "mitm-tls-cert", "mitm-rogue-dhcp"):
        sc = SCENARIOS[name](packets=200, seed=3)
        paths.append(tmp_path / f"{name}.pcap")
        paths[-1].write_bytes(encode(sc.packets, sc.pool))
    config = tmp_path / "site.toml"
    config.write_text(Site().config_toml())
    cpu = compiled_cpu_alerts(paths, str(config))
    cfg = load_config(str(config))
    cfg = dataclasses.replace(cfg, flows=dataclasses.replace(cfg.flows, batch_size=512))
    gpu = run_analyze([str(p) for p in paths], cfg, None, progress=False, backend=select_backend("gpu"))
    assert gpu.summary["backend"] == "gpu"
    assert {a["technique"] for a in cpu} >= {"arp_spoof", "dns_spoof", "tls_cert_change", "rogue_dhcp"}
    assert [a.to_dict() for a in gpu.alerts] == cpu


def test_wall_clock_expiry_matches_cpu(tmp_path):
    """The daemon ends idle flows on the wall clock (``expire``): after the first batch of the
    golden capture and a clock 400 s past its last packet, both engines have ended every flow,
    with the same records."""
    import pyarrow as pa

    from detector.flows.engine import FlowEngine
    from detector.flows.gpu_engine import GpuFlowEngine
    from detector.flows.records import RecordBuilder

    path = golden_capture(tmp_path)
    cfg = FlowConfig(batch_size=256, max_flows=64)
    tables = {}
    for name, engine in (("cpu", FlowEngine(cfg)), ("gpu", GpuFlowEngine(cfg, select_backend("gpu")))):
        builder = RecordBuilder(cfg)
        reader = open_capture(str(path), 256)
        b = next(reader.batches())
        emitted = engine.process(b)
        emitted += engine.expire(int(b.ts_ns.max()) + 400 * S)
        assert engine.active_flows == 0, name
        tables[name] = pa.Table.from_batches([builder.build(e) for e in emitted]).sort_by("uid")
        reader.src.close()
    assert tables["cpu"].num_rows > 3
    assert_same_flows(tables["cpu"], tables["gpu"])
