"""Cryptocurrency mining and blockchain protocols in payloads, on any port.

- Stratum (v1) and its Monero/XMRig dialect: JSON-RPC methods such as ``mining.subscribe``,
  ``mining.authorize``, ``mining.submit``, ``mining.notify``, ``login`` (with a miner agent),
  ``job``, ``keepalived``;
- bitcoind's ``getwork``/``getblocktemplate`` and Ethereum's ``eth_getWork``/``eth_submitWork``;
- peer-to-peer node protocols: the Bitcoin family's network magic and command name, Monero's
  levin header.
"""

from __future__ import annotations

import re
import struct

METHOD_RE = re.compile(rb'"method"\s*:\s*"([A-Za-z0-9_.]{1,40})"')
AGENT_RE = re.compile(rb'"agent"\s*:\s*"([^"]{1,80})"')
MINING_METHODS = {
    "mining.subscribe", "mining.authorize", "mining.submit", "mining.notify", "mining.set_difficulty",
    "mining.extranonce.subscribe", "mining.get_transactions", "mining.configure", "mining.set_extranonce",
    "getwork", "getblocktemplate", "submitblock", "eth_submitlogin", "eth_getwork", "eth_submitwork",
    "eth_submithashrate",
}
# Monero stratum methods are common words: they count only with miner-shaped parameters
MONERO_METHODS = {"login", "submit", "job", "keepalived", "getjob"}
MONERO_PARAMS = (b'"blob"', b'"target"', b'"nonce"', b'"agent"', b'"job_id"', b'"algo"', b'"rigid"')
BITCOIN_MAGICS = {0xF9BEB4D9: "bitcoin", 0x0B110907: "bitcoin-testnet", 0xFABFB5DA: "bitcoin-regtest",
                  0x0A03CF40: "bitcoin-signet", 0xFBC0B6DB: "litecoin", 0xC0C0C0C0: "dogecoin"}
BITCOIN_COMMANDS = {b"version", b"verack", b"addr", b"inv", b"getdata", b"getblocks", b"getheaders", b"tx",
                    b"block", b"headers", b"ping", b"pong", b"sendheaders", b"feefilter", b"sendcmpct",
                    b"getaddr", b"mempool", b"wtxidrelay", b"sendaddrv2"}
LEVIN_SIGNATURE = b"\x01\x21\x01\x01\x01\x01\x01\x01"


def mining_methods(payload: bytes) -> tuple[list[str], str | None]:
    """Mining JSON-RPC methods in a payload, and the miner's agent string when it says one."""
    found = []
    for m in METHOD_RE.findall(payload):
        name = m.decode("ascii").lower()
        if name in MINING_METHODS:
            found.append(name)
        elif name in MONERO_METHODS and any(p in payload for p in MONERO_PARAMS):
            found.append(name)
    if not found and b"getblocktemplate" in payload:
        found.append("getblocktemplate")
    agent = AGENT_RE.search(payload)
    return found, (agent.group(1).decode("utf-8", "replace") if agent else None)


def p2p_protocol(payload: bytes) -> tuple[str, str] | None:
    """``(network, message)`` when a payload starts with a blockchain node protocol header."""
    if len(payload) >= 16:
        magic = struct.unpack(">I", payload[:4])[0]
        if magic in BITCOIN_MAGICS:
            command = payload[4:16].rstrip(b"\0")
            if command in BITCOIN_COMMANDS:
                return BITCOIN_MAGICS[magic], command.decode()
    if payload.startswith(LEVIN_SIGNATURE) and len(payload) >= 33:
        return "monero", "levin"
    return None
