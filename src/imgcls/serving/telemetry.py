"""The server's Prometheus metrics (prometheus_client, in a registry of its own)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Telemetry:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("imgcls_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("imgcls_request_latency_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_sizes = Histogram("imgcls_batch_size", "Images per forward pass (dynamic batching)",
                                     buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("imgcls_queue_depth", "Images waiting for a forward pass", registry=self.registry)

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ("/", "/predict", "/predict/batch", "/health", "/metadata", "/metrics") \
            else "other"  # bounded label values: an attacker's URLs do not grow the series
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
