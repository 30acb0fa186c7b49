"""What reporting knows right now: the latest reach figures and the latest pipeline health.

Routes compute reach fresh on every request; the periodic jobs keep a recent copy for the
Prometheus collector and the dashboard, so a scrape never waits for a database or a broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from services.reporting import store
from services.reporting.domain import Reach
from services.reporting.health import (
    PipelineHealth,
    ServiceCheck,
    check_services,
    measure_consumer_lag,
    measure_dead_letters,
)
from shared.db import make_reader
from shared.events import utc_now
from shared.kafka import LagReader
from shared.logging import get_logger
from shared.outbox import outbox_backlog
from shared.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class ReachSnapshot:
    reach: Reach
    as_of: datetime
    query_seconds: float


class ReportingState:
    def __init__(self, settings: Settings, engine: Engine, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.reader = make_reader(engine)
        self.clock = clock
        self.lag_reader = LagReader(settings)  # kept open between refreshes
        self.snapshot: ReachSnapshot | None = None
        self.health = PipelineHealth()

    def current_reach(self) -> ReachSnapshot:
        """Reach computed now from the database (blocking: call it from a worker thread)."""
        started = time.perf_counter()
        with store.read_session(self.reader) as session:
            reach = store.query_reach(session)
        snapshot = ReachSnapshot(reach, self.clock(), time.perf_counter() - started)
        self.snapshot = snapshot
        return snapshot

    def payment_statuses(self) -> dict[str, int]:
        with store.read_session(self.reader) as session:
            return store.payment_status_counts(session)

    async def refresh_reach(self) -> None:
        await asyncio.to_thread(self.current_reach)

    def own_check(self) -> ServiceCheck:
        """Reporting is up (it is the one asking); its outbox backlog comes from its own table."""
        with store.read_session(self.reader) as session:
            backlog, oldest = outbox_backlog(session)
        return ServiceCheck("reporting", up=True, outbox_backlog=backlog, outbox_oldest_seconds=oldest)

    async def refresh_health(self) -> None:
        own = await asyncio.to_thread(self.own_check)
        services = await check_services(self.settings, known=[own])
        previous = self.health
        try:
            lag = await asyncio.to_thread(measure_consumer_lag, self.settings, self.lag_reader)
            dead = await asyncio.to_thread(measure_dead_letters, self.settings, self.lag_reader)
            error = None
        except Exception as problem:  # the broker away: keep the last figures, say so
            lag, dead = previous.consumer_lag, previous.dead_letters
            error = f"{type(problem).__name__}: {problem}"[:300]
            log.warning("pipeline_health_failed", error=type(problem).__name__)
        self.health = PipelineHealth(
            measured_at=self.clock(),
            consumer_lag=lag,
            dead_letters=dead,
            services=services,
            kafka_error=error,
        )

    def close(self) -> None:
        self.lag_reader.close()
        self.reader.dispose()
