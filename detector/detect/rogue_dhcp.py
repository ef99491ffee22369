"""A second DHCP server (mitm / rogue_dhcp).

Method: DHCP OFFERs and ACKs name their server (option 54, else the source address). A network
segment has one DHCP service (or configured ones in ``site.dhcp_servers``); another server that
answers clients hands out its own gateway and DNS servers and so sits in the middle of their
traffic. Medium when a second server answers; high when two servers answer the same request
(a race) or when servers are configured and this one is not among them.
"""

from __future__ import annotations

from collections import defaultdict

from detector.alerts import Alert
from detector.detect.base import Detector, mac_text, widen
from detector.l7.events import Events


class RogueDhcp(Detector):
    name = "rogue_dhcp"
    version = "1"

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.servers: dict[str, dict] = {}
        self.by_xid: dict[int, set[str]] = defaultdict(set)

    def observe_events(self, events: Events) -> None:
        for ev in events.dhcp:
            m = ev.msg
            if m.op != 2 or m.msg_type not in (2, 5):  # OFFER, ACK
                continue
            server = m.server_id or ev.ctx.src
            s = self.servers.setdefault(server, {"first": ev.ctx.ts_ns, "last": 0, "answers": 0, "clients": set(),
                                                 "routers": set(), "dns": set(), "mac": mac_text(ev.src_mac)})
            widen(s, ev.ctx.ts_ns)
            s["answers"] += 1
            s["clients"].add(m.client_mac)
            s["routers"].update(m.routers)
            s["dns"].update(m.dns_servers)
            self.by_xid[m.xid].add(server)

    def finish(self) -> list[Alert]:
        configured = bool(self.site.dhcp_servers)
        raced = {srv for servers in self.by_xid.values() if len(servers) > 1 for srv in servers}
        if configured:
            rogue = [s for s in self.servers if s not in self.site.dhcp_servers]
        elif len(self.servers) > 1:
            # without configuration the server that answered first is taken as the site's own
            first = min(self.servers, key=lambda s: self.servers[s]["first"])
            rogue = [s for s in self.servers if s != first]
        else:
            rogue = []
        out = []
        for srv in rogue:
            s = self.servers[srv]
            high = configured or srv in raced
            others = sorted(x for x in self.servers if x != srv)
            out.append(Alert(s["first"], s["last"], "mitm", "rogue_dhcp", "high" if high else "medium",
                             0.85 if high else 0.65,
                             f"{srv} ({s['mac']}) answered {s['answers']} DHCP request(s)"
                             + (" racing the site's server for the same request" if srv in raced else "")
                             + f", handing out gateway {', '.join(sorted(s['routers'])) or '?'} and DNS "
                             f"{', '.join(sorted(s['dns'])) or '?'}: a rogue DHCP server", self.label, srv, srv, None,
                             67, 68, "udp",
                             {"server": srv, "server_mac": s["mac"], "answers": s["answers"],
                              "clients": sorted(s["clients"])[:16], "offered_routers": sorted(s["routers"]),
                              "offered_dns": sorted(s["dns"]), "other_servers": others,
                              "same_request_race": srv in raced, "configured_servers": list(self.site.cfg.dhcp_servers)}))
        return out
