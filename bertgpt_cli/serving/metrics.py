"""`GET /metrics` of `bgcli serve`: Prometheus text format through prometheus_client, in a
registry of the server's own (no process-wide globals: tests start several servers)."""

from __future__ import annotations

# Seconds: from a fast classify request (ms) to a long completion (minutes on a CPU).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bgcli_requests", "HTTP requests answered.", ["endpoint", "model", "status"], registry=r
        )
        self.latency = Histogram(
            "bgcli_request_latency_seconds",
            "Time from a request's arrival to the end of its answer (streams: the last event).",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge(
            "bgcli_queue_length",
            "Records (tasks) or sequences (generation) waiting to run.",
            ["model"],
            registry=r,
        )
        self.running = Gauge(
            "bgcli_running_sequences", "Sequences in the running generation batch.", ["model"], registry=r
        )
        self.generated_tokens = Counter("bgcli_generated_tokens", "Tokens generated.", ["model"], registry=r)
        self.finished = Counter(
            "bgcli_finished_sequences",
            "Generated sequences by how they ended: eos, stop, length, or cancelled (client gone).",
            ["model", "reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "bgcli_time_to_first_token_seconds",
            "Time from a generation request's arrival to its first generated token.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "bgcli_batch_size",
            "Rows per forward pass: prefill and decode steps of generation, and task batches.",
            ["model", "kind"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
