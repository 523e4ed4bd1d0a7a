"""The agent's Prometheus metrics, on a registry of its own (one agent per process in
production, several per process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events_recorded = Counter(
            "agent_events_recorded", "Events committed to the outbox", ["type"], registry=r
        )
        self.events_refused = Counter(
            "agent_events_refused",
            "Events not recorded: outbox_full (at the bound) or disk_full",
            ["reason"],
            registry=r,
        )
        self.storage_full = Gauge(
            "agent_storage_full", "1 while the data dir's disk is below its reserve", registry=r
        )
        self.storage_free = Gauge(
            "agent_storage_free_bytes", "Free space on the data dir's disk", registry=r
        )
        self.events_acked = Counter(
            "agent_events_acked", "Events acknowledged by central and removed", registry=r
        )
        self.events_replayed = Counter(
            "agent_events_replayed",
            "Acknowledged events sent again because central was restored from a backup",
            registry=r,
        )
        self.events_kept = Gauge(
            "agent_events_kept", "Acknowledged events kept for a restored central", registry=r
        )
        self.events_rejected = Counter(
            "agent_events_rejected_by_central", "Events central quarantined", registry=r
        )
        self.batches_sent = Counter("agent_batches_sent", "Event batches published", registry=r)
        self.batches_resent = Counter(
            "agent_batch_timeouts", "Times unacknowledged batches were resent", registry=r
        )
        self.outbox_depth = Gauge("agent_outbox_depth", "Events waiting for an ack", registry=r)
        self.outbox_fill = Gauge("agent_outbox_fill_ratio", "Outbox depth / bound", registry=r)
        self.connected = Gauge(
            "agent_broker_connected", "1 when connected to the broker", registry=r
        )
        self.reconnects = Counter("agent_broker_connects", "Successful broker connects", registry=r)
        self.bad_messages = Counter(
            "agent_bad_messages", "Messages from central that were refused", ["reason"], registry=r
        )
        self.desired_version = Gauge(
            "agent_desired_version", "Version of the applied desired state", registry=r
        )
        self.component_restarts = Counter(
            "agent_component_restarts", "Component restarts", ["component", "reason"], registry=r
        )
        self.component_up = Gauge(
            "agent_component_up", "1 while the component runs", ["component"], registry=r
        )
        self.loop_lag = Histogram(
            "agent_loop_lag_seconds",
            "Event-loop scheduling delay",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.ack_latency = Histogram(
            "agent_ack_latency_seconds",
            "Publish to ack, per batch",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
