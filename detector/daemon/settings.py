"""The ``[daemon]`` section of the configuration: where ``detector run`` reads traffic, where
its alerts go, where it keeps its state, and its limits. Every key has a default; flags of
``detector run`` override the file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from detector.alerts import SEVERITY_RANK
from detector.errors import ConfigError

ADDR = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


@dataclass(frozen=True)
class DaemonConfig:
    # sources (at least one)
    iface: str = ""  # live capture interface (AF_PACKET, TPACKET_V3 ring)
    snaplen: int = 9216  # bytes kept per packet: a jumbo frame whole, so the L7 inspectors see payload
    bpf: str = ""  # capture filter, tcpdump syntax (compiled with libpcap)
    promisc: bool = True
    ring_mb: int = 64  # kernel ring for the live capture
    pcap_dir: str = ""  # a folder of rotating captures (tcpdump -G/-C, dumpcap ring buffers)
    pcap_glob: str = "*.pcap*"
    settle_s: float = 0.0  # >0: the newest file is also complete once unchanged this long
    poll_s: float = 1.0  # how often the folder and Zeek logs are looked at
    zeek_conn: str = ""  # Zeek conn.log to follow (TSV or JSON)
    zeek_dns: str = ""  # Zeek dns.log to follow
    gpu_telemetry: bool = False  # sample this node's GPUs through NVML (the 'telemetry' extra)
    dcgm_url: str = ""  # scrape a DCGM exporter (http://127.0.0.1:9400/metrics)
    gpu_sample_s: float = 1.0
    gpu_keep_s: float = 3600.0  # GPU samples and Slurm snapshots kept for judging
    gpu_log: str = ""  # append every GPU and process sample here (JSON lines, for detector analyze --gpu-log)
    gpu_host: str = ""  # this node's name as Slurm and [site] host_names know it (default: the short hostname)
    slurm_poll_s: float = 30.0  # poll Slurm's allocations (scontrol/squeue --json) when on the PATH; 0: never
    flow_listen: tuple[str, ...] = ()  # collect flow exports: "udp://0.0.0.0:4739" (NetFlow v5/v9, IPFIX), "tcp://..." (IPFIX)
    flow_queue_mb: int = 64  # exports waiting to be decoded; beyond, they are dropped (counted)
    ipfix_export: str = ""  # send every flow record as IPFIX to a collector: "udp://collector:4739" (or tcp://)
    ipfix_template_s: float = 60.0  # over UDP, templates are sent again this often
    # streaming
    batch_packets: int = 65536  # a micro-batch closes at this many packets ...
    batch_s: float = 1.0  # ... or after this long, whichever comes first
    queue_batches: int = 8  # batches waiting for the pipeline; the capture drops beyond (counted)
    report_s: float = 2.0  # how often detectors are asked for new alerts
    renotify_s: float = 3600.0  # an ongoing incident is reported again after this long (if it grew)
    epoch_s: float = 21600.0  # detector state is summarised and started afresh this often
    # outputs
    alerts: str = ""  # JSONL file
    alerts_max_mb: float = 100.0  # rotated beyond this size (0: never; logrotate with SIGHUP instead)
    alerts_keep: int = 5
    stdout: bool = False
    syslog: str = ""  # udp://HOST:PORT, tcp://HOST:PORT or unix:///dev/log (RFC 5424)
    webhook: str = ""  # http(s) URL; each alert is POSTed as JSON
    webhook_retries: int = 5
    min_severity: str = "low"
    metrics: str = "127.0.0.1:9108"  # prometheus endpoint; "" turns it off
    # state
    state: str = ""  # SQLite database; default: $STATE_DIRECTORY/state.db, else ./detector-state.db
    model: str = ""  # a site model (detector train) to start from
    window_flows_max: int = 2_000_000  # flows kept per epoch for a site model's host windows (~60 B each)

    def validate(self, path: str | None = None) -> DaemonConfig:
        def bad(key: str, msg: str):
            raise ConfigError(msg, path, f"daemon.{key}")

        if not 64 <= self.snaplen <= 262144:
            bad("snaplen", "must be between 64 and 262144")
        if not 1 <= self.ring_mb <= 4096:
            bad("ring_mb", "must be between 1 and 4096")
        for key in ("poll_s", "batch_s", "report_s", "renotify_s", "epoch_s"):
            if not getattr(self, key) > 0:
                bad(key, "must be a positive number of seconds")
        if self.settle_s < 0:
            bad("settle_s", "must be 0 (off) or a number of seconds")
        if not 256 <= self.batch_packets <= 4_194_304:
            bad("batch_packets", "must be between 256 and 4194304")
        if not 1 <= self.queue_batches <= 1024:
            bad("queue_batches", "must be between 1 and 1024")
        if self.alerts_max_mb < 0 or not 1 <= self.alerts_keep <= 1000:
            bad("alerts_max_mb" if self.alerts_max_mb < 0 else "alerts_keep", "out of range")
        if self.syslog and not re.match(r"^(udp|tcp)://.+:\d+$|^unix://.+", self.syslog):
            bad("syslog", "must be udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH")
        if self.webhook and not re.match(r"^https?://", self.webhook):
            bad("webhook", "must be an http:// or https:// URL")
        if not 0 <= self.webhook_retries <= 100:
            bad("webhook_retries", "must be between 0 and 100")
        if self.min_severity not in SEVERITY_RANK:
            bad("min_severity", f"must be one of {', '.join(SEVERITY_RANK)}")
        if self.metrics and not ADDR.match(self.metrics):
            bad("metrics", "must be HOST:PORT (e.g. 127.0.0.1:9108), or empty to turn metrics off")
        if self.metrics and not 0 < int(ADDR.match(self.metrics).group(2)) < 65536:
            bad("metrics", "port out of range")
        for key in ("gpu_sample_s", "gpu_keep_s"):
            if not getattr(self, key) > 0:
                bad(key, "must be a positive number of seconds")
        if self.slurm_poll_s < 0:
            bad("slurm_poll_s", "must be 0 (never) or a number of seconds")
        if self.gpu_keep_s < 2 * self.gpu_sample_s:
            bad("gpu_keep_s", "must hold at least two samples (2 x gpu_sample_s)")
        if self.dcgm_url and not re.match(r"^https?://", self.dcgm_url):
            bad("dcgm_url", "must be an http:// or https:// URL (http://127.0.0.1:9400/metrics)")
        for url in self.flow_listen:
            from detector.exports.collector import parse_listen

            try:
                parse_listen(url)
            except ValueError as exc:
                bad("flow_listen", str(exc))
        if self.ipfix_export:
            from detector.exports.collector import parse_listen

            try:
                parse_listen(self.ipfix_export)
            except ValueError as exc:
                bad("ipfix_export", str(exc).replace("udp://0.0.0.0:4739", "udp://collector:4739"))
        if not self.ipfix_template_s > 0:
            bad("ipfix_template_s", "must be a positive number of seconds")
        if not 1 <= self.flow_queue_mb <= 4096:
            bad("flow_queue_mb", "must be between 1 and 4096")
        if self.window_flows_max < 1000:
            bad("window_flows_max", "must be at least 1000")
        if self.pcap_dir and not os.path.isdir(self.pcap_dir):
            bad("pcap_dir", f"{self.pcap_dir}: not a folder")
        return self

    @property
    def sources(self) -> list[str]:
        return [name for name, on in (("iface", self.iface), ("pcap_dir", self.pcap_dir),
                                      ("zeek_conn", self.zeek_conn), ("zeek_dns", self.zeek_dns),
                                      ("gpu_telemetry", self.gpu_telemetry), ("dcgm_url", self.dcgm_url),
                                      ("flow_listen", self.flow_listen)) if on]

    def state_path(self) -> str:
        if self.state:
            return self.state
        base = os.environ.get("STATE_DIRECTORY", "").split(":")[0]  # systemd's StateDirectory=
        return os.path.join(base, "state.db") if base else "detector-state.db"
