"""Layout of one flow's state: columns of the ``int64`` and ``float64`` state rows.

A flow's state is one row of a 2-D array (array of structs), so updating a flow touches a few
adjacent cache lines instead of one line per field. Per-direction fields start at ``ORIG`` or
``RESP`` and use the ``D_*`` offsets.
"""

from __future__ import annotations

# whole-flow fields
FIRST_TS = 0  # ns, first packet of this record
LAST_TS = 1  # ns, last packet that counts towards the duration (Zeek: not after both sides closed)
LAST_SEEN = 2  # ns, last packet of any kind (idle expiry, eviction order)
EXPIRE_AT = 3  # ns, when the flow ends unless another packet comes first
FLAGS = 4  # F_* bits
O_STATE = 5  # TCP endpoint state of the originator (TCP_*), low byte; previous state in the next byte
R_STATE = 6  # ... of the responder
HIST_N = 7  # letters in the history buffer
CLOSE_TS = 8  # ns, when the close completed (both FIN, or RST)
ICMP_CODE = 9  # code of the first ICMP packet (Community ID of one-way ICMP types needs it)
N_FLOW = 10

# per-direction fields, offsets from ORIG or RESP
D_PKTS = 0
D_BYTES = 1  # transport payload bytes (TCP: retransmitted bytes excluded)
D_IP_BYTES = 2  # sum of IP total lengths
D_SZ_MIN = 3  # IP packet size statistics
D_SZ_MAX = 4
D_SZ_SUM = 5
D_SZ_SUMSQ = 6
D_LAST_PKT = 7  # ns, previous packet in this direction (inter-arrival times)
D_IAT_MIN = 8  # ns
D_IAT_MAX = 9
D_IAT_SUM = 10
D_TTL_MIN = 11
D_TTL_MAX = 12
D_SYN = 13  # TCP flag counts
D_ACK = 14
D_FIN = 15
D_RST = 16
D_PSH = 17
D_URG = 18
D_ECE = 19
D_CWR = 20
D_SEQ_LAST = 21  # TCP: one past the highest sequence number sent
D_RXMIT = 22  # TCP: retransmitted segments
D_ZWIN = 23  # TCP: zero-window advertisements
D_HSEEN = 24  # history letters already recorded (H_* bits)
D_H_SYN = 25  # sequence number of the last SYN / FIN / RST recorded in the history
D_H_FIN = 26
D_H_RST = 27
D_T_NEXT = 28  # next retransmission count that adds a 'T' (1, 10, 100, ...)
D_W_NEXT = 29  # next zero-window count that adds a 'W'
N_DIR = 30

ORIG = N_FLOW
RESP = N_FLOW + N_DIR
NI = N_FLOW + 2 * N_DIR

# float64 row
FO_IAT_M2 = 0  # sum of squared deviations of the gaps from their running mean, seconds squared (Welford)
FR_IAT_M2 = 1
NF = 2

HIST_LEN = 32  # history letters kept per flow

# FLAGS bits
F_A_IS_ORIG = 1  # key endpoint A is the originator
F_FLIPPED = 2  # the originator is the receiver of the first packet (Zeek's '^')
F_CLOSED = 4  # the TCP close completed; the flow lingers until CLOSE_TS + close delay
F_O_DID_CLOSE = 8
F_R_DID_CLOSE = 16
F_INTERIM = 32  # continues a record ended by the active timeout

# history letters, as byte values (upper case for the originator; +LOWER for the responder)
LOWER = 32
L_S, L_H, L_A, L_D, L_F, L_R, L_T, L_W, L_I, L_Q, L_G = (ord(c) for c in "SHADFRTWIQG")
L_FLIP = ord("^")

# history letters seen (per direction bit masks)
H_SYN = 1
H_SYNACK = 2
H_ACK = 4
H_DATA = 8
H_FIN = 16
H_RST = 32
H_FINRST = 64
H_MULTI = 128

# TCP endpoint states, as Zeek's TCP analyzer
TCP_INACTIVE = 0
TCP_SYN_SENT = 1
TCP_SYN_ACK_SENT = 2
TCP_PARTIAL = 3
TCP_ESTABLISHED = 4
TCP_CLOSED = 5
TCP_RESET = 6

# end reasons, in the order of DESIGN.md
END_FIN = 0
END_RST = 1
END_IDLE = 2
END_ACTIVE = 3
END_EVICTED = 4
END_EOF = 5
END_REASONS = ("fin", "rst", "idle", "active", "evicted", "eof")

# flow-table configuration vector (int64), filled from FlowConfig
C_IDLE_TCP = 0
C_IDLE_UDP = 1
C_IDLE_ICMP = 2
C_IDLE_OTHER = 3
C_ACTIVE = 4  # 0 disables
C_ATTEMPT = 5
C_CLOSE_DELAY = 6
N_CFG = 7

# table meta vector (int64)
M_NFREE = 0
M_ACTIVE = 1
M_OUT_N = 2
M_CREATED = 3
M_EVICTED = 4
M_PROBE_MAX = 5
M_HWM = 6  # rows [0, M_HWM) have ever been used: expiry scans stop there
N_META = 7
