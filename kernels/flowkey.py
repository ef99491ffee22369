"""Direction-agnostic flow keys and their 64-bit hash.

A key is five ``uint64`` words: endpoint A's address (hi, lo), endpoint B's address (hi, lo)
and one word packing A's port, B's port, the IP protocol and the VLAN id. A is the smaller
(address, port) pair, so both directions of a conversation give the same key; ``from_a``
says which endpoint sent the packet. For ICMP the "ports" are the type and the counterpart
type (or code), so an echo request and its reply share a key.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, device_fn, row_fn
from kernels.packet_columns import ST_L4_TRUNCATED, ST_OK

KEY_WORDS = 5

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S48 = np.uint64(48)
_S32 = np.uint64(32)
_S16 = np.uint64(16)


@device_fn
def mix64(x):
    """splitmix64's finaliser: a bijective, well-avalanching 64-bit mix."""
    x = x ^ (x >> _S30)
    x = x * _M2
    x = x ^ (x >> _S27)
    x = x * _M3
    return x ^ (x >> _S31)


@device_fn
def pack_ports(a_port, b_port, proto, vlan):
    return ((np.uint64(a_port) << _S48) | (np.uint64(b_port) << _S32)
            | (np.uint64(proto) << _S16) | np.uint64(vlan))


@device_fn
def hash_key(a_hi, a_lo, b_hi, b_lo, w4):
    h = mix64(a_hi + _M1)
    h = mix64(h ^ a_lo)
    h = mix64(h ^ b_hi)
    h = mix64(h ^ b_lo)
    return mix64(h ^ w4)


@row_fn
def canonical_key(cols, i):
    """``(a_hi, a_lo, b_hi, b_lo, w4, from_a)`` for packet ``i``."""
    s_hi = cols.src_ip_hi[i]
    s_lo = cols.src_ip_lo[i]
    d_hi = cols.dst_ip_hi[i]
    d_lo = cols.dst_ip_lo[i]
    sp = cols.sport[i]
    dp = cols.dport[i]
    if s_hi < d_hi or (s_hi == d_hi and (s_lo < d_lo or (s_lo == d_lo and sp <= dp))):
        return s_hi, s_lo, d_hi, d_lo, pack_ports(sp, dp, cols.proto[i], cols.vlan[i]), True
    return d_hi, d_lo, s_hi, s_lo, pack_ports(dp, sp, cols.proto[i], cols.vlan[i]), False


@row_fn
def is_flow_packet(cols, i):
    st = cols.status[i]
    return cols.ip_ver[i] != 0 and (st == ST_OK or st == ST_L4_TRUNCATED)


@row_fn
def packet_flow_hash(cols, i):
    a_hi, a_lo, b_hi, b_lo, w4, _ = canonical_key(cols, i)
    return hash_key(a_hi, a_lo, b_hi, b_lo, w4)


@cpu_kernel
def flow_hashes(cols, start, stop, out):
    """``out[i]`` = hash of packet ``i``'s flow key (0 for packets that are not in a flow)."""
    for i in range(start, stop):
        if is_flow_packet(cols, i):
            out[i] = packet_flow_hash(cols, i)
        else:
            out[i] = 0


@cpu_kernel
def flow_hashes_at(cols, idx, out):
    """Recompute the flow hash of the packets listed in ``idx`` (after their ports changed)."""
    for j in range(idx.shape[0]):
        i = idx[j]
        if is_flow_packet(cols, i):
            out[i] = packet_flow_hash(cols, i)
