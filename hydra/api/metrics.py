"""Prometheus metrics of one node, in a registry of its own (several nodes may share a
process in tests and benchmarks)."""

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hydra.coordinator.generation import Completion

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HOP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        """``gauges``: name -> (help, current value), read at every scrape."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hydra_http_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
            registry=r,
        )
        self.tokens = Counter("hydra_tokens_generated", "Tokens generated", ["model"], registry=r)
        self.ttft = Histogram(
            "hydra_time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "hydra_inter_token_seconds", "Time between tokens", buckets=LATENCY_BUCKETS, registry=r
        )
        self.hop = Histogram(
            "hydra_hop_latency_seconds", "Pipeline round trip per hop and step", buckets=HOP_BUCKETS,
            registry=r,
        )
        self.drafted = Counter(
            "hydra_draft_tokens", "Tokens drafted for speculative decoding", ["outcome"], registry=r
        )
        for name, (text, read) in gauges.items():
            Gauge(name, text, registry=r).set_function(read)

    def observe(self, completion: Completion) -> None:
        self.tokens.labels(completion.model).inc(completion.completion_tokens)
        if completion.completion_tokens:
            self.ttft.observe(completion.ttft_s)
        for seconds in completion.token_seconds:
            self.inter_token.observe(seconds)
        for seconds in completion.hop_seconds:
            self.hop.observe(seconds)
        self.drafted.labels("accepted").inc(completion.accepted)
        self.drafted.labels("rejected").inc(completion.drafted - completion.accepted)

    def render(self) -> bytes:
        return generate_latest(self.registry)
