"""Prometheus helpers: one explicit registry per service, its metrics and the `/metrics` route."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response


@dataclass
class PipelineMetrics:
    """Metrics every consuming service has, with bounded labels only."""

    events_consumed: Counter
    events_published: Counter
    dead_letters: Counter
    batch_seconds: Histogram
    outbox_backlog: Gauge
    outbox_oldest_seconds: Gauge


def make_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def pipeline_metrics(registry: CollectorRegistry) -> PipelineMetrics:
    return PipelineMetrics(
        events_consumed=Counter(
            "relief_events_consumed_total",
            "Events consumed, by topic and outcome",
            ["topic", "outcome"],
            registry=registry,
        ),
        events_published=Counter(
            "relief_events_published_total",
            "Events the outbox relay published and the broker acknowledged, by topic",
            ["topic"],
            registry=registry,
        ),
        dead_letters=Counter(
            "relief_dead_letters_total",
            "Messages sent to a dead-letter topic, by source topic",
            ["topic"],
            registry=registry,
        ),
        batch_seconds=Histogram(
            "relief_consumer_batch_seconds",
            "Time to apply one consumed batch",
            ["topic"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ),
        outbox_backlog=Gauge("relief_outbox_backlog", "Outbox messages not yet published", registry=registry),
        outbox_oldest_seconds=Gauge(
            "relief_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox message",
            registry=registry,
        ),
    )


def metrics_endpoint(registry: CollectorRegistry):  # type: ignore[no-untyped-def]
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
