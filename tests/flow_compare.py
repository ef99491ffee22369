"""Comparing flow records and alerts between engines: every field equal, except the
inter-arrival standard deviations (accumulated in floating point differently by the engines),
which must agree to FLOAT_RTOL."""

from __future__ import annotations

import numpy as np

# The inter-arrival std is accumulated in floating point: packet by packet on the CPU (Welford),
# by two passes merged with Chan et al.'s formula in the data-parallel engine, and NVVM contracts
# a*b+c into fused multiply-adds where the CPU's LLVM does not. So it can differ in its last bits.
# Every other field, floats made from exact integer sums included, must be equal.
FLOAT_RTOL, FLOAT_ATOL = 1e-9, 1e-15
ACCUMULATED_FLOATS = ("orig_iat_std", "resp_iat_std")

SHOWN = ("ts", "orig_h", "orig_p", "resp_h", "resp_p", "ip_proto", "orig_pkts", "resp_pkts", "conn_state",
         "history")


def _flows_differing(cpu, gpu_table) -> str:
    """The flows only one side has, and every flow of their 5-tuples on both sides, in time order."""
    cols = [c for c in SHOWN if c in cpu.column_names]
    a = {tuple(r.values()) for r in cpu.select(cols).to_pylist()}
    b = {tuple(r.values()) for r in gpu_table.select(cols).to_pylist()}
    tuples = {r[1:6] for r in a ^ b}
    lines = [f"only on the CPU: {sorted(a - b)[:6]}", f"only on the GPU: {sorted(b - a)[:6]}"]
    for t in sorted(tuples)[:4]:
        lines.append(f"{t}: CPU {sorted(r for r in a if r[1:6] == t)[:8]}")
        lines.append(f"{t}: GPU {sorted(r for r in b if r[1:6] == t)[:8]}")
    return "\n".join(lines)


def assert_same(cpu, gpu_table):
    assert cpu.num_rows == gpu_table.num_rows, (
        f"{cpu.num_rows} flows on the CPU, {gpu_table.num_rows} on the GPU\n{_flows_differing(cpu, gpu_table)}")
    for name in cpu.column_names:
        a, b = cpu[name], gpu_table[name]
        if name in ACCUMULATED_FLOATS:
            assert a.is_null().equals(b.is_null()), name
            np.testing.assert_allclose(b.to_numpy(zero_copy_only=False), a.to_numpy(zero_copy_only=False),
                                       rtol=FLOAT_RTOL, atol=FLOAT_ATOL, equal_nan=True, err_msg=name)
        else:
            assert a.equals(b), f"{name}\n{_flows_differing(cpu, gpu_table)}"


def assert_same_alerts(cpu: list[dict], gpu_alerts: list[dict], where: str) -> None:
    """Equal alerts; floats (scores, rates: some come from the inter-arrival std) to FLOAT_RTOL."""
    def close(x, y) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return x == y or (x != x and y != y) or abs(x - y) <= FLOAT_ATOL + FLOAT_RTOL * abs(x)
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            return len(x) == len(y) and all(close(i, j) for i, j in zip(x, y))
        return x == y

    assert len(cpu) == len(gpu_alerts), f"{where}: {len(cpu)} alerts on the CPU, {len(gpu_alerts)} on the GPU"
    for a, b in zip(cpu, gpu_alerts):
        assert close(a, b), f"{where}:\nCPU {a}\nGPU {b}"
