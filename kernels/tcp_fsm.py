"""The TCP endpoint state machine of :mod:`kernels.tcp_state` as a finite transition table.

The data-parallel flow engine cannot walk a connection packet by packet. It needs the state
before every packet, computed with scans. A finite-state machine's per-packet transitions
compose associatively, so they can be scanned; the table here is built by running the CPU's
own ``update_state`` (and the ``F_CLOSED`` latch of ``update_flow``) on every reachable
state and every symbol, so the two engines cannot drift apart: a change to ``update_state``
changes the table.

The machine's state is what ``update_state`` reads and writes, packed in one int64 *code*:
both endpoint words (``O_STATE``, ``R_STATE``: current state and the previous one in the next
byte) and the ``F_CLOSED``, ``F_O_DID_CLOSE`` and ``F_R_DID_CLOSE`` flag bits. A *symbol* is
what the transition reads of a packet: its direction, SYN, ACK, FIN, RST, and whether it carries
payload. ``IDENTITY`` is the symbol of a TCP packet whose header could not be read (its state
is left as it is).

States are numbered in breadth-first order from the state of a new flow (id 0).
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel
from kernels.flowstate import (
    F_CLOSED,
    F_O_DID_CLOSE,
    F_R_DID_CLOSE,
    FLAGS,
    NI,
    O_STATE,
    R_STATE,
    TCP_CLOSED,
    TCP_INACTIVE,
    TCP_RESET,
    TCP_SYN_ACK_SENT,
    TCP_SYN_SENT,
)
from kernels.packet_columns import TH_ACK, TH_FIN, TH_RST, TH_SYN
from kernels.tcp_state import close_complete, update_state

CLOSE_BITS = F_CLOSED | F_O_DID_CLOSE | F_R_DID_CLOSE

# symbol bits
S_PAYLOAD = 1
S_RST = 2
S_FIN = 4
S_ACK = 8
S_SYN = 16
S_ORIG = 32
N_SYMBOLS = 64
IDENTITY = 64  # a TCP packet without a readable header: no transition


def pack(o_state, r_state, flags):
    """The state code of endpoint words ``o_state``, ``r_state`` and flow ``flags`` (any ints or
    arrays; only the close bits of ``flags`` count)."""
    return (o_state & 0xFFFF) | ((r_state & 0xFFFF) << 16) | ((flags & CLOSE_BITS) << 32)


def symbol_of(xp, is_orig, tcp_flags, payload_len):
    """Symbols of packets (arrays): direction, SYN/ACK/FIN/RST and payload or not."""
    f = tcp_flags.astype(xp.int64)
    return ((is_orig.astype(xp.int64) * S_ORIG)
            | xp.where(f & TH_SYN, S_SYN, 0) | xp.where(f & TH_ACK, S_ACK, 0)
            | xp.where(f & TH_FIN, S_FIN, 0) | xp.where(f & TH_RST, S_RST, 0)
            | xp.where(payload_len > 0, S_PAYLOAD, 0))


@cpu_kernel
def step_codes(codes, symbols, row, out):
    """``out[k]``: the state after a packet of ``symbols[k]`` in state ``codes[k]``, by
    ``update_state`` and ``update_flow``'s close latch. ``row``: int64 scratch of shape (1, NI)."""
    for k in range(codes.shape[0]):
        c = codes[k]
        s = symbols[k]
        for j in range(row.shape[1]):
            row[0, j] = 0
        row[0, O_STATE] = c & 0xFFFF
        row[0, R_STATE] = (c >> 16) & 0xFFFF
        row[0, FLAGS] = (c >> 32) & CLOSE_BITS
        flags = 0
        if s & S_SYN:
            flags |= TH_SYN
        if s & S_ACK:
            flags |= TH_ACK
        if s & S_FIN:
            flags |= TH_FIN
        if s & S_RST:
            flags |= TH_RST
        update_state(row, 0, (s & S_ORIG) != 0, flags, s & S_PAYLOAD)
        if not (row[0, FLAGS] & F_CLOSED) and close_complete(row, 0):
            row[0, FLAGS] |= F_CLOSED
        out[k] = (row[0, O_STATE] & 0xFFFF) | ((row[0, R_STATE] & 0xFFFF) << 16) | ((row[0, FLAGS] & CLOSE_BITS) << 32)


class TcpMachine:
    """The reachable states (``codes``, id order) and the transition table ``table[symbol, id]``
    (``IDENTITY`` included), with the per-state facts the flow engine asks about, as arrays."""

    def __init__(self):
        row = np.zeros((1, NI), dtype=np.int64)
        ids = {0: 0}
        codes = [0]
        frontier = np.zeros(1, dtype=np.int64)
        steps = []
        while len(frontier):
            c = np.repeat(frontier, N_SYMBOLS)
            s = np.tile(np.arange(N_SYMBOLS, dtype=np.int64), len(frontier))
            out = np.empty_like(c)
            step_codes(c, s, row, out)
            steps.append((c, s, out))
            fresh = []
            for code in np.unique(out).tolist():
                if code not in ids:
                    ids[code] = len(codes)
                    codes.append(code)
                    fresh.append(code)
            frontier = np.asarray(fresh, dtype=np.int64)
        self.codes = np.asarray(codes, dtype=np.int64)
        n = len(codes)
        table = np.empty((N_SYMBOLS + 1, n), dtype=np.int32)
        table[IDENTITY] = np.arange(n)
        lookup = np.vectorize(ids.__getitem__, otypes=[np.int64])
        for c, s, out in steps:
            table[s, lookup(c)] = lookup(out)
        self.table = table
        self.ids = ids
        o = self.codes & 0xFF
        r = (self.codes >> 16) & 0xFF
        fl = (self.codes >> 32) & CLOSE_BITS
        self.o_state = o
        self.r_state = r
        self.closed = (fl & F_CLOSED) != 0
        self.both_did_close = ((fl & F_O_DID_CLOSE) != 0) & ((fl & F_R_DID_CLOSE) != 0)
        # is_attempt and is_closed_or_reset of kernels.tcp_state, per state
        self.attempt = ((o == TCP_SYN_SENT) | (o == TCP_SYN_ACK_SENT)) & (r == TCP_INACTIVE)
        self.closed_or_reset = (self.closed | (o == TCP_CLOSED) | (o == TCP_RESET) | (r == TCP_CLOSED)
                                | (r == TCP_RESET))
        self.reset = (o == TCP_RESET) | (r == TCP_RESET)
        self.code_order = np.argsort(self.codes).astype(np.int32)
        self.sorted_codes = self.codes[self.code_order]
        self._copies = {}

    def on(self, xp) -> TcpMachine:
        """The machine with its arrays in ``xp`` (kept per library, so a GPU copies them once)."""
        if xp is np:
            return self
        cached = self._copies.get(xp.__name__)
        if cached is None:
            cached = TcpMachine.__new__(TcpMachine)
            cached.__dict__.update({k: xp.asarray(v) if isinstance(v, np.ndarray) else v
                                    for k, v in self.__dict__.items() if k != "_copies"})
            cached._copies = {}
            self._copies[xp.__name__] = cached
        return cached

    @property
    def n_states(self) -> int:
        return len(self.codes)

    def id_of(self, codes: np.ndarray) -> np.ndarray:
        """State ids of codes (host arrays); -1 for a code the machine never reaches."""
        order = np.argsort(self.codes)
        pos = np.clip(np.searchsorted(self.codes[order], codes), 0, len(order) - 1)
        found = self.codes[order][pos] == codes
        return np.where(found, order[pos], -1)


_MACHINE: TcpMachine | None = None


def machine() -> TcpMachine:
    global _MACHINE
    if _MACHINE is None:
        _MACHINE = TcpMachine()
    return _MACHINE
