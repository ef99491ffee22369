"""Pick the few packets the L7 inspectors need, and copy their bytes out of the batch.

``classify_payloads`` looks at the first bytes of every packet that carries payload and names
the protocol they start like (TLS handshake, SSH banner, HTTP, JSON, RFB, DNS, DHCP), and gives each
packet the 64-bit id of the flow record it belongs to (the number behind its uid), so that the
caller can also keep the later packets of streams it is following. ``gather`` copies the
chosen payloads (and ICMP heads) into one flat buffer.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, row_fn
from kernels.flowkey import canonical_key, mix64
from kernels.textfmt import write_ip

SIG_NONE = 0
SIG_TLS = 1  # a TLS handshake record
SIG_SSH = 2  # "SSH-" banner
SIG_HTTP = 3  # an HTTP request or response line
SIG_JSON = 4  # '{' or '[': JSON (JSON-RPC, Stratum)
SIG_DNS = 5  # UDP or TCP port 53
SIG_DHCP = 6  # UDP ports 67/68
SIG_OTHER = 7  # payload of no known start (kept only for followed streams)
SIG_P2P = 8  # a cryptocurrency peer-to-peer message header (Bitcoin family magic, Monero levin)
SIG_FTP = 9  # FTP control channel (TCP port 21)
SIG_RFB = 10  # "RFB xxx.yyy" protocol version: VNC


@row_fn
def flow_id(cols, i):
    """The 64-bit value behind the uid of the flow record packet ``i`` was counted in."""
    a_hi, a_lo, b_hi, b_lo, w4, _ = canonical_key(cols, i)
    return mix64(a_hi ^ mix64(a_lo ^ mix64(b_hi ^ mix64(b_lo ^ mix64(w4 ^ np.uint64(cols.flow_first_ts[i]))))))


@row_fn
def _starts_http(buf, p, avail):
    if avail < 4:
        return False
    w = (int(buf[p]) << 24) | (int(buf[p + 1]) << 16) | (int(buf[p + 2]) << 8) | int(buf[p + 3])
    # GET , POST, PUT , HEAD, DELE(TE), OPTI(ONS), PATC(H), CONN(ECT), HTTP
    return (w == 0x47455420 or w == 0x504F5354 or w == 0x50555420 or w == 0x48454144 or w == 0x44454C45
            or w == 0x4F505449 or w == 0x50415443 or w == 0x434F4E4E or w == 0x48545450)


@row_fn
def _p2p_magic(buf, p):
    w = (int(buf[p]) << 24) | (int(buf[p + 1]) << 16) | (int(buf[p + 2]) << 8) | int(buf[p + 3])
    # Bitcoin main/test/regtest/signet, Litecoin, Dogecoin network magics
    if w == 0xF9BEB4D9 or w == 0x0B110907 or w == 0xFABFB5DA or w == 0x0A03CF40 or w == 0xFBC0B6DB \
            or w == 0xC0C0C0C0:
        return True
    # Monero's levin protocol signature 0x0101010101012101, little-endian on the wire
    return (w == 0x01210101 and buf[p + 4] == 1 and buf[p + 5] == 1 and buf[p + 6] == 1 and buf[p + 7] == 1)


@row_fn
def classify_one(buf, rec_off, cols, i, sig, fid):
    """Packet ``i``'s ``sig`` (what its payload starts like) and ``fid`` (its flow id, 0 when it
    is not in a flow)."""
    sig[i] = SIG_NONE
    fid[i] = 0
    if cols.flow_dir[i] == 0:
        return
    fid[i] = flow_id(cols, i)
    plen = cols.payload_len[i]
    if plen == 0:
        return
    proto = cols.proto[i]
    sp = cols.sport[i]
    dp = cols.dport[i]
    if (proto == 17 or proto == 6) and (sp == 53 or dp == 53):
        sig[i] = SIG_DNS
        return
    if proto == 17 and (sp == 67 or sp == 68 or dp == 67 or dp == 68):
        sig[i] = SIG_DHCP
        return
    if proto != 6:
        return
    if sp == 21 or dp == 21:
        sig[i] = SIG_FTP
        return
    p = rec_off[i] + cols.payload_off[i]
    avail = np.int64(cols.cap_len[i]) - np.int64(cols.payload_off[i])
    if avail <= 0:
        return
    b0 = buf[p]
    if avail >= 3 and b0 == 0x16 and buf[p + 1] == 3 and buf[p + 2] <= 4:
        sig[i] = SIG_TLS
    elif avail >= 4 and b0 == 0x53 and buf[p + 1] == 0x53 and buf[p + 2] == 0x48 and buf[p + 3] == 0x2D:
        sig[i] = SIG_SSH
    elif avail >= 12 and b0 == 0x52 and buf[p + 1] == 0x46 and buf[p + 2] == 0x42 and buf[p + 3] == 0x20:
        sig[i] = SIG_RFB
    elif _starts_http(buf, p, avail):
        sig[i] = SIG_HTTP
    elif b0 == 0x7B or b0 == 0x5B:
        sig[i] = SIG_JSON
    elif avail >= 8 and _p2p_magic(buf, p):
        sig[i] = SIG_P2P
    else:
        sig[i] = SIG_OTHER


@cpu_kernel
def classify_payloads(buf, rec_off, cols, n, sig, fid):
    """For packets ``0..n``: ``sig`` = what the payload starts like; ``fid`` = flow id (0 when
    the packet is not in a flow)."""
    for i in range(n):
        classify_one(buf, rec_off, cols, i, sig, fid)


@cpu_kernel
def gather(buf, rec_off, cols, idx, limit, icmp_head, out, out_off):
    """Copy the captured payload of each packet ``idx[j]`` (at most ``limit`` bytes) into
    ``out``; with ``icmp_head`` the copy starts at the ICMP header instead."""
    pos = 0
    out_off[0] = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        start = np.int64(cols.payload_off[i])
        if icmp_head:
            start -= 8
        avail = np.int64(cols.cap_len[i]) - start
        take = min(max(avail, 0), limit)
        src = rec_off[i] + start
        for k in range(take):
            out[pos + k] = buf[src + k]
        pos += take
        out_off[j + 1] = pos
    return pos


@cpu_kernel
def payloads_with_literals(buf, rec_off, cols, idx, limit, lits, lit_off, first, out):
    """``out[j]`` = 1 when the captured payload of packet ``idx[j]`` (its first ``limit`` bytes,
    as :func:`gather` would copy them) holds one of the literals ``lits[lit_off[k]:lit_off[k + 1]]``;
    ``first[c]`` is 1 for the bytes a literal starts with. One pass over the capture buffer, in
    place: only the payloads that hit need copying out."""
    n_lits = lit_off.shape[0] - 1
    for j in range(idx.shape[0]):
        i = idx[j]
        start = np.int64(cols.payload_off[i])
        avail = min(max(np.int64(cols.cap_len[i]) - start, 0), limit)
        p = rec_off[i] + start
        hit = 0
        for q in range(avail):
            c = buf[p + q]
            if first[c] == 0:
                continue
            for k in range(n_lits):
                a = lit_off[k]
                size = lit_off[k + 1] - a
                if lits[a] != c or q + size > avail:
                    continue
                same = True
                for r in range(1, size):
                    if buf[p + q + r] != lits[a + r]:
                        same = False
                        break
                if same:
                    hit = 1
                    break
            if hit:
                break
        out[j] = hit


@cpu_kernel
def packet_addresses(cols, idx, src_buf, src_off, dst_buf, dst_off):
    """Text source and destination addresses of the packets ``idx`` (buffers + offsets)."""
    sp = 0
    dp = 0
    src_off[0] = 0
    dst_off[0] = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        sp = write_ip(src_buf, sp, cols.src_ip_hi[i], cols.src_ip_lo[i])
        src_off[j + 1] = sp
        dp = write_ip(dst_buf, dp, cols.dst_ip_hi[i], cols.dst_ip_lo[i])
        dst_off[j + 1] = dp


@cpu_kernel
def flow_ids(cols, idx, out):
    """Flow ids (see :func:`flow_id`) of the packets ``idx``; 0 for packets not in a flow."""
    for j in range(idx.shape[0]):
        i = idx[j]
        out[j] = flow_id(cols, i) if cols.flow_dir[i] != 0 else np.uint64(0)
