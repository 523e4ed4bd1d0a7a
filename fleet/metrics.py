"""Central's Prometheus metrics, served at ``/metrics`` by the API."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CentralMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ingested = Counter("central_events_ingested", "Events stored", registry=r)
        self.duplicates = Counter(
            "central_events_duplicate", "Events delivered again and ignored", registry=r
        )
        self.quarantined = Counter(
            "central_events_quarantined", "Events stored aside, by reason", ["reason"], registry=r
        )
        self.held = Counter(
            "central_events_held", "Events of unregistered devices left unacknowledged", registry=r
        )
        self.refused = Counter(
            "central_messages_refused", "MQTT messages refused, by reason", ["reason"], registry=r
        )
        self.security_refused = Counter(
            "central_security_refused",
            "Messages a device's role or registry entry does not allow, by reason",
            ["reason"],
            registry=r,
        )
        self.security_cases = Counter(
            "central_security_cases", "Security attention cases raised", registry=r
        )
        self.acks = Counter("central_acks_published", "Acks published", registry=r)
        self.connected = Gauge("central_broker_connected", "1 when connected", registry=r)
        self.ingest_seconds = Histogram(
            "central_ingest_transaction_seconds",
            "Time to store one coalesced run of messages",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.quota_refused = Counter(
            "central_quota_refused",
            "MQTT messages refused unacknowledged before storing, by device and reason "
            "(batch_size, events_rate, messages_rate, stored_volume, device_queue_full, "
            "central_busy)",
            ["device", "reason"],
            registry=r,
        )
        self.over_quota = Counter(
            "central_over_quota",
            "Times a device stayed over its quota for quotas.alert_after_s",
            ["device"],
            registry=r,
        )
        self.queue = Gauge("central_ingest_queue", "Messages waiting to be stored", registry=r)
        self.gallery_deltas = Counter(
            "central_gallery_deltas", "Gallery deltas published to sites", registry=r
        )
        self.enrollments = Counter(
            "central_enrollments",
            "Enrollments, renewals and revocations, and refusals by reason",
            ["outcome"],
            registry=r,
        )
        self.api_denied = Counter(
            "central_api_denied",
            "API requests refused before their body was read",
            ["reason"],
            registry=r,
        )
