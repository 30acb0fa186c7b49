"""Pipeline health for the whole system, as reporting sees it from outside the other services:
consumer lag per group and topic, dead-letter topic sizes, and each service's health and outbox
backlog read from its own `/healthz` answer."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from shared.kafka import LagReader, consumer_lag
from shared.settings import SERVICES, Settings
from shared.topics import TOPICS, consumer_subscriptions


@dataclass(frozen=True)
class ServiceCheck:
    """What one service says about itself; `None` where it could not be asked."""

    name: str
    up: bool
    outbox_backlog: int | None = None
    outbox_oldest_seconds: float | None = None


@dataclass(frozen=True)
class PipelineHealth:
    measured_at: datetime | None = None
    consumer_lag: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, topic) → records
    dead_letters: dict[str, int] = field(default_factory=dict)  # dead-letter topic → messages kept
    services: dict[str, ServiceCheck] = field(default_factory=dict)
    kafka_error: str | None = None

    @property
    def total_lag(self) -> int:
        return sum(self.consumer_lag.values())

    @property
    def total_dead_letters(self) -> int:
        return sum(self.dead_letters.values())


def _unprefixed(name: str, prefix: str) -> str:
    """Metric labels carry the stable names (`relief-reporting`, `eligibility.decided`)."""
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def measure_consumer_lag(settings: Settings, reader: LagReader | None = None) -> dict[tuple[str, str], int]:
    """(group, topic) → records the group has not committed yet, for every project group."""
    subscriptions: dict[str, Sequence[str]] = dict(consumer_subscriptions(settings.topic, settings.group_id))
    lag = reader.read(subscriptions) if reader is not None else consumer_lag(settings, subscriptions)
    prefix = settings.topic_prefix
    return {
        (_unprefixed(group, prefix), _unprefixed(topic, prefix)): value
        for (group, topic), value in sorted(lag.items())
    }


def measure_dead_letters(settings: Settings, reader: LagReader | None = None) -> dict[str, int]:
    """Dead-letter topic → messages it holds (end offset minus start offset, over partitions).
    Pass the kept `LagReader` when asking again and again (no client to connect each time)."""
    names = {settings.topic(topic.dead_letter): topic.dead_letter for topic in TOPICS}
    if reader is not None:
        sizes = reader.held(list(names))
    else:
        with LagReader(settings) as once:
            sizes = once.held(list(names))
    return {names[name]: count for name, count in sizes.items()}


# One TLS context for every check (building one loads the CA bundle each time).
_TLS = ssl.create_default_context()


async def check_service(client: httpx.AsyncClient, settings: Settings, name: str) -> ServiceCheck:
    """Up when `/healthz` answers 200; the outbox figures come from the same answer (a degraded
    service still gives them), so no `/metrics` page is fetched and parsed."""
    try:
        health = await client.get(f"{settings.service_url(name)}/healthz")
    except httpx.HTTPError:
        return ServiceCheck(name, up=False)
    up = health.status_code == 200
    try:
        outbox = health.json().get("outbox")
    except (ValueError, AttributeError):
        outbox = None
    if not isinstance(outbox, dict):
        return ServiceCheck(name, up=up)
    backlog, oldest = outbox.get("backlog"), outbox.get("oldest_age_seconds")
    return ServiceCheck(
        name,
        up=up,
        outbox_backlog=backlog if isinstance(backlog, int) else None,
        outbox_oldest_seconds=float(oldest) if isinstance(oldest, (int, float)) else None,
    )


async def check_services(
    settings: Settings, *, known: Sequence[ServiceCheck] = (), timeout: float = 2.0
) -> dict[str, ServiceCheck]:
    """Every service's check; `known` ones (reporting's own) are taken as given, not asked."""
    given = {check.name: check for check in known}
    async with httpx.AsyncClient(timeout=timeout, verify=_TLS) as client:
        asked = await asyncio.gather(
            *(check_service(client, settings, name) for name in SERVICES if name not in given)
        )
    checks = {check.name: check for check in asked} | given
    return {name: checks[name] for name in SERVICES}
