"""Live capture from a network interface through an AF_PACKET socket with a TPACKET_V3 ring.

The kernel writes packets into a ring of blocks shared with this process (no copy per packet,
no system call per packet) and hands a block over when it is full or after
``BLOCK_TIMEOUT_MS``; each handed-over block is copied into the batch buffer, walked by a
compiled function (:mod:`kernels.tpacket`) and given back to the kernel. When the pipeline
falls behind, blocks are not given back, the ring fills, and the kernel drops packets and
counts them: those counts (``PACKET_STATISTICS``) are the kernel drops the daemon exports.

The capture filter is compiled from tcpdump syntax by libpcap (loaded with ctypes, only when a
filter is set) and attached to the socket, so filtered-out packets never reach the ring.
Needs ``CAP_NET_RAW``; promiscuous mode is set through a packet membership, which the kernel
drops when the socket closes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Iterator

import numpy as np

from detector.errors import ConfigError, DetectorError
from detector.sources.batch import RawBatch
from kernels import tpacket

log = logging.getLogger("detector.daemon")

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
TP_STATUS_USER = 1
BLOCK_SIZE = 1 << 22  # 4 MiB: many jumbo frames per block
BLOCK_TIMEOUT_MS = 100  # a block is handed over after this long even if not full: low latency at low rates
MIN_SLOT = 96  # bytes a packet takes in a block at least: its 48-byte header, sockaddr_ll, a 20-byte packet
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
# /sys/class/net/IFACE/type (ARPHRD_*) -> the link type of what AF_PACKET hands over
ARPHRD_LINK = {1: LINKTYPE_ETHERNET, 772: LINKTYPE_ETHERNET, 65534: LINKTYPE_RAW}
DLT_FOR_LINK = {LINKTYPE_ETHERNET: 1, LINKTYPE_RAW: 12}  # libpcap's DLT_EN10MB, DLT_RAW


class CaptureSetupError(DetectorError):
    pass


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def compile_filter(expression: str, link: int, snaplen: int) -> tuple[bytes, object]:
    """A tcpdump filter expression compiled to classic BPF: the ``sock_fprog`` to attach and the
    buffer it points into (keep it alive until attached). Raises ConfigError naming the problem."""
    name = ctypes.util.find_library("pcap")
    if name is None:
        raise ConfigError("a capture filter needs libpcap (libpcap0.8 / libpcap), which is not installed",
                          None, "daemon.bpf")
    lib = ctypes.CDLL(name)
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_uint32]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    handle = lib.pcap_open_dead(DLT_FOR_LINK[link], snaplen)
    prog = _BpfProgram()
    try:
        if lib.pcap_compile(handle, ctypes.byref(prog), expression.encode(), 1, 0xFFFFFFFF) != 0:
            raise ConfigError(f"bad capture filter {expression!r}: {lib.pcap_geterr(handle).decode()}",
                              None, "daemon.bpf")
        count = prog.bf_len
        code = ctypes.create_string_buffer(ctypes.string_at(prog.bf_insns, count * 8), count * 8)
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.pcap_freecode(ctypes.byref(prog))
    finally:
        lib.pcap_close(handle)
    fprog = _SockFprog(count, ctypes.addressof(code))
    return bytes(fprog), code


def _arphrd(iface: str) -> int:
    try:
        with open(f"/sys/class/net/{iface}/type") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        raise CaptureSetupError(f"interface {iface!r}: no such interface") from None


def _accept_all(snaplen: int) -> tuple[bytes, object]:
    """A one-instruction filter (BPF_RET | BPF_K, snaplen): every packet, cut to ``snaplen``."""
    code = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, snaplen), 8)
    return bytes(_SockFprog(1, ctypes.addressof(code))), code


def interface_link(iface: str) -> int:
    arphrd = _arphrd(iface)
    if arphrd not in ARPHRD_LINK:
        raise CaptureSetupError(f"interface {iface!r}: hardware type {arphrd} is not supported "
                                "(Ethernet, loopback and IP tunnels are)")
    return ARPHRD_LINK[arphrd]


class LiveCapture:
    def __init__(self, iface: str, snaplen: int = 9216, bpf: str = "", promisc: bool = True, ring_mb: int = 64,
                 batch_packets: int = 65536, batch_s: float = 1.0):
        self.iface, self.snaplen = iface, snaplen
        self.link = interface_link(iface)
        self.loopback = _arphrd(iface) == 772
        self.batch_packets, self.batch_s = batch_packets, batch_s
        self.blocks = max(2, (ring_mb << 20) // BLOCK_SIZE)
        self.kernel_packets = 0
        self.kernel_drops = 0
        try:
            # protocol 0: no packet is queued before bind() names the interface
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise CaptureSetupError(f"interface {iface!r}: live capture needs CAP_NET_RAW (run as root, or grant "
                                    "the capability as deploy/detector.service does)") from None
        try:
            # the filter's accept value is the snap length: the kernel truncates what it keeps
            fprog, self._filter_code = compile_filter(bpf, self.link, snaplen) if bpf else _accept_all(snaplen)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame = 1 << 11
            req = struct.pack("IIIIIII", BLOCK_SIZE, self.blocks, frame, BLOCK_SIZE * self.blocks // frame,
                              BLOCK_TIMEOUT_MS, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.ring = mmap.mmap(self.sock.fileno(), BLOCK_SIZE * self.blocks, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
            self.view = np.frombuffer(self.ring, dtype=np.uint8)
            self.sock.bind((iface, ETH_P_ALL))
            if promisc:
                mreq = struct.pack("iHH8s", socket.if_nametoindex(iface), PACKET_MR_PROMISC, 0, b"")
                self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            self.sock.close()
            raise CaptureSetupError(f"interface {iface!r}: cannot set up the capture ring: {exc.strerror}") from None
        self.block = 0
        self.path = f"iface:{iface}"
        # room for a batch plus one whole block of minimum-size packets (a block is never split)
        cap = batch_packets + BLOCK_SIZE // MIN_SLOT
        self._buf = np.empty(BLOCK_SIZE * 4, dtype=np.uint8)
        self._off = np.empty(cap, np.int64)
        self._caplen = np.empty(cap, np.uint32)
        self._wirelen = np.empty(cap, np.uint32)
        self._ts = np.empty(cap, np.int64)
        # load the compiled walker now: the first block must not wait for it
        tpacket.walk_block(np.zeros(64, np.uint8), 0, 64, self._off, self._caplen, self._wirelen, self._ts, 0, False)

    def statistics(self) -> tuple[int, int]:
        """Packets and drops the kernel counted since the last call (reading resets them)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, _ = struct.unpack("III", raw)
        self.kernel_packets += packets
        self.kernel_drops += drops
        return packets, drops

    def _ready(self, block: int) -> bool:
        base = block * BLOCK_SIZE
        return bool(int(self.view[base + tpacket.BLOCK_STATUS]) & TP_STATUS_USER)

    def _take_block(self, used_so_far: int, n: int) -> tuple[int, int] | None:
        """Copies the current block into the batch buffer and returns it to the kernel:
        ``(bytes used, packets)``, or None when it would not fit this batch."""
        base = self.block * BLOCK_SIZE
        v = self.view
        blk_len = int(v[base + 20]) | int(v[base + 21]) << 8 | int(v[base + 22]) << 16 | int(v[base + 23]) << 24
        used = blk_len if 0 < blk_len <= BLOCK_SIZE else BLOCK_SIZE
        num = int(v[base + 12]) | int(v[base + 13]) << 8 | int(v[base + 14]) << 16 | int(v[base + 15]) << 24
        if n and (used_so_far + used > len(self._buf) or n + num > len(self._off)):
            return None
        if used_so_far + used > len(self._buf):
            self._buf = np.empty(used_so_far + used, np.uint8)
        self._buf[used_so_far:used_so_far + used] = v[base:base + used]
        got = tpacket.walk_block(self._buf, used_so_far, used, self._off, self._caplen, self._wirelen, self._ts, n,
                                  self.loopback)
        v[base + tpacket.BLOCK_STATUS:base + tpacket.BLOCK_STATUS + 4] = 0  # TP_STATUS_KERNEL: the kernel's again
        self.block = (self.block + 1) % self.blocks
        return used, got

    def batches(self, stop) -> Iterator[RawBatch]:
        """Micro-batches until ``stop`` (a threading.Event) is set: each closes at
        ``batch_packets`` packets or ``batch_s`` seconds after it opened. Empty batches are
        yielded too, every ``batch_s`` of silence, so the caller's clocks keep ticking. After
        ``stop``, what the kernel already handed over comes out in a last batch."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLERR)
        final_blocks = self.blocks  # after stop: at most one turn of the ring, however fast it refills
        while True:
            final = stop.is_set()
            used, n, started = 0, 0, time.monotonic()
            while final or (time.monotonic() - started < self.batch_s and not stop.is_set()):
                if not self._ready(self.block) or (final and final_blocks <= 0):
                    if final:
                        break
                    for _, event in poller.poll(BLOCK_TIMEOUT_MS):
                        if event & select.POLLERR:
                            self._socket_error()
                    continue
                taken = self._take_block(used, n)
                if taken is None:
                    break
                used, n = used + taken[0], n + taken[1]
                final_blocks -= final
                if n >= self.batch_packets:
                    break
            # copies: the batch waits in a queue while the next one is filled
            yield RawBatch(self._buf[:used].copy(), self._off[:n].copy(), self._caplen[:n].copy(),
                           self._wirelen[:n].copy(), self._ts[:n].copy(), np.full(n, self.link, np.uint16),
                           self.path, 0)
            if final and (final_blocks <= 0 or not self._ready(self.block)):
                return

    def _socket_error(self) -> None:
        """The socket reported an error: the interface went down (wait for it to come back) or
        disappeared (the capture ends, with a message)."""
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == errno.ENODEV or not os.path.exists(f"/sys/class/net/{self.iface}"):
            raise CaptureSetupError(f"interface {self.iface!r} disappeared")
        if code:
            log.warning("interface %s: %s; waiting for it", self.iface, os.strerror(code))
        time.sleep(1.0)  # POLLERR stays set while the link is down: do not spin on it

    def close(self) -> None:
        try:
            self.statistics()
        except OSError:
            pass
        self.view = None
        try:
            self.ring.close()
        except (BufferError, ValueError):
            pass
        self.sock.close()

