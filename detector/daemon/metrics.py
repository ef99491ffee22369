"""Prometheus metrics of the daemon, served on a loopback address by default."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from detector.errors import ConfigError


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.packets = Counter("detector_packets", "Packets processed", registry=r)
        self.bytes = Counter("detector_bytes", "Bytes on the wire of the packets processed", registry=r)
        self.flows_active = Gauge("detector_flows_active", "Flows open in the flow table", registry=r)
        self.flows_expired = Counter("detector_flows_expired", "Flows ended (idle, closed, evicted, flushed)",
                                     registry=r)
        self.evictions = Gauge("detector_flow_evictions", "Flows evicted because the table was full", registry=r)
        self.drops = Counter("detector_drops", "Packets dropped before analysis: by the kernel (the capture ring "
                             "was full because analysis fell behind) or unreadable", ["where"], registry=r)
        for where in ("kernel", "unreadable"):
            self.drops.labels(where)
        self.window_drops = Gauge("detector_window_flows_dropped", "Flows not kept for the site model's host windows "
                                  "this epoch (daemon.window_flows_max reached)", registry=r)
        self.detector_evictions = Counter("detector_detector_evictions", "Entries detectors dropped at the caps on "
                                          "their state (findings may be missed)", ["detector"], registry=r)
        self.queue = Gauge("detector_queue_batches", "Captured batches waiting for analysis", registry=r)
        self.batch_latency = Histogram("detector_batch_latency_seconds", "Time to process one micro-batch",
                                       buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10), registry=r)
        self.alerts = Counter("detector_alerts", "Alerts sent", ["category", "severity"], registry=r)
        self.backend = Gauge("detector_backend_info", "The backend in use (value 1)", ["backend", "device"],
                             registry=r)
        self.files = Counter("detector_files", "Rotating capture files processed", registry=r)
        self.zeek_records = Counter("detector_zeek_records", "Zeek log records read", ["log"], registry=r)
        self.sink_errors = Counter("detector_sink_errors", "Failed deliveries to a sink", ["sink"], registry=r)
        self.input_errors = Counter("detector_input_errors", "Inputs that could not be read (fully)", registry=r)
        self.state_errors = Counter("detector_state_errors", "Failed writes to the state database", registry=r)
        self.outbox = Gauge("detector_outbox_alerts", "Alerts waiting for delivery", registry=r)
        self.up = Gauge("detector_start_time_seconds", "When the daemon started", registry=r)
        self.gpu_util = Gauge("detector_gpu_utilization", "SM utilisation of a GPU, percent (last sample)",
                              ["host", "gpu"], registry=r)
        self.gpu_power = Gauge("detector_gpu_power_watts", "Power drawn by a GPU (last sample)", ["host", "gpu"],
                               registry=r)
        self.gpu_unallocated = Counter("detector_gpu_unallocated_seconds", "Seconds a GPU was busy while no job "
                                       "held it", ["host", "gpu"], registry=r)
        self.export_records = Counter("detector_export_records", "Flow records received as exports (NetFlow, IPFIX)",
                                      registry=r)
        self.export_drops = Counter("detector_export_dropped", "Flow export messages, sets or records dropped, by why",
                                    ["why"], registry=r)
        self.telemetry_errors = Counter("detector_telemetry_errors", "GPU telemetry or Slurm reads that failed",
                                        ["source"], registry=r)

    def serve(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        try:
            start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {addr}: {exc.strerror}", None, "daemon.metrics") from None
