"""Well-known service ports that more than one detector reasons about."""

from __future__ import annotations

# UDP services that answer a small request with a large reply: the reflectors of
# amplification attacks (US-CERT TA14-017A and later additions)
AMPLIFIER_PORTS = {53: "DNS", 123: "NTP", 161: "SNMP", 1900: "SSDP", 11211: "memcached", 389: "CLDAP",
                   19: "chargen", 17: "QOTD", 3702: "WS-Discovery", 5353: "mDNS", 27015: "Steam", 3283: "ARD",
                   10001: "Ubiquiti", 37810: "DVR", 520: "RIP", 111: "portmap", 137: "NetBIOS"}
