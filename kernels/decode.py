"""CPU decode driver: packet columns for a range of records, plus each packet's flow hash."""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, literal_unroll, row_fn
from kernels.flowkey import is_flow_packet, packet_flow_hash
from kernels.parse import parse_packet


@cpu_kernel
def clear_rows(cols, start, stop):
    """Zero rows ``start..stop`` of every column (``parse_packet`` writes only what it finds)."""
    for col in literal_unroll(cols):
        col[start:stop] = 0


@row_fn
def decode_record(buf, off, caplen, wirelen, ts_ns, link, cols, pkt_hash, i):
    """Record ``i`` into row ``i`` of ``cols``, and its flow-key hash (0 when not in a flow);
    the CPU driver below and the CUDA kernel both call it."""
    parse_packet(buf, off[i], caplen[i], wirelen[i], link[i], cols, i)
    cols.ts_ns[i] = ts_ns[i]
    cols.wire_len[i] = wirelen[i]
    cols.cap_len[i] = caplen[i]
    if is_flow_packet(cols, i):
        pkt_hash[i] = packet_flow_hash(cols, i)
    else:
        pkt_hash[i] = 0


TALLY_WIRE_BYTES = 8  # tally: packets per status (ST_*, 0..7), then the wire bytes


@cpu_kernel
def decode_records(buf, off, caplen, wirelen, ts_ns, link, start, stop, cols, pkt_hash, tally):
    """Decode records ``start..stop`` into the same rows of ``cols``; hash their flow keys; add
    their count per status and their wire bytes to ``tally`` (counted here, on the decoding
    thread, as a pass of its own over the batch would be serial)."""
    clear_rows(cols, start, stop)
    for j in range(start, stop):
        i = np.uint64(j)  # unsigned: no negative-index wraparound on each of the row's ~40 stores
        decode_record(buf, off, caplen, wirelen, ts_ns, link, cols, pkt_hash, i)
        tally[cols.status[i] & 7] += 1
        tally[TALLY_WIRE_BYTES] += wirelen[i]
