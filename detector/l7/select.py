"""Which packets the L7 tap may look at (:func:`candidates`), and the per-flow packet counts it
looks at: kept apart from the tap's parsers so that ``detector flows`` can select without
importing them (start-up), and a GPU can copy back only these packets.
"""

from __future__ import annotations

from kernels import l7_select as ks
from kernels import packet_columns as pc
from kernels.service_sig import EARLY

FOLLOW_PACKETS = 32
SHELL_PACKETS = 8  # unclaimed TCP streams are searched for shell text in their first packets per direction
NEXT_HOP_PACKETS = 2  # packets per flow direction whose MACs say where a host's frames go
DST_SAMPLE = 4  # destination-address hashes kept per next hop (distinct counts up to this are exact)


def odd_tcp(flags):
    """TCP flag combinations no ordinary stack sends (null, SYN+FIN, SYN+RST, FIN without ACK,
    Xmas without ACK): scans and fingerprinting. NumPy or CuPy arrays alike."""
    return ((flags == 0) | ((flags & 0x03) == 0x03) | ((flags & 0x06) == 0x06)
            | (((flags & 0x01) != 0) & ((flags & 0x10) == 0))
            | (((flags & 0x29) == 0x29) & ((flags & 0x10) == 0)))


def candidates(xp, cols: pc.PacketColumns, sig, n: int):
    """Every packet :meth:`L7Tap.process` may look at, whatever streams it follows: a superset,
    so that the tap run on these packets alone finds what it finds on the whole batch, except
    ``tcp_rexmit`` (the resent-sequence table needs every data segment; it sees these only). A
    GPU copies back only these (``xp``: the columns' library)."""
    payload = cols.payload_len[:n] > 0
    # a known start anywhere in a stream; any payload early in one (followed streams, shell text,
    # service names); the first packets of each flow direction (next hops) and every SYN (openers)
    early = cols.flow_nth[:n] < max(FOLLOW_PACKETS, SHELL_PACKETS, EARLY)
    flows = ((sig != ks.SIG_NONE) & (sig != ks.SIG_OTHER)) | (payload & early) | \
        ((cols.flow_dir[:n] != 0) & (cols.flow_nth[:n] < NEXT_HOP_PACKETS))
    ipv = cols.ip_ver[:n] != 0
    proto = cols.proto[:n]
    icmp = ipv & ((proto == 1) | (proto == 58))
    flags = cols.tcp_flags[:n]
    odd = ipv & (proto == 6) & odd_tcp(flags)
    syn = ipv & (proto == 6) & ((flags & (pc.TH_SYN | pc.TH_ACK)) == pc.TH_SYN)
    return flows | icmp | odd | syn | (cols.ethertype[:n] == 0x0806)
