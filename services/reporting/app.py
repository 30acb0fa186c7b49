"""Reporting service wiring: consumers of decisions and payments, reach routes, gauges, refresh jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial

from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.reporting import handlers, store
from services.reporting.api import DatabaseUnavailable, database_unavailable, make_router
from services.reporting.metrics import ReportingCollector
from services.reporting.state import ReportingState
from shared.db import transaction
from shared.events import Event
from shared.service import ServiceRuntime, serve
from shared.settings import Settings, load_settings
from shared.topics import DISBURSEMENT_PAYMENTS, ELIGIBILITY_DECIDED

REACH_REFRESH_SECONDS = 5.0
HEALTH_REFRESH_SECONDS = 5.0


def in_transaction(
    engine: Engine, handler: Callable[[Session, Sequence[Event]], None]
) -> Callable[[Sequence[Event]], None]:
    """One database transaction per consumed batch."""

    def apply(events: Sequence[Event]) -> None:
        with transaction(engine) as session:
            handler(session, events)

    return apply


def create_app(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime("reporting", settings, store.TABLES)
    state = ReportingState(settings, runtime.engine)
    runtime.prepare(partial(store.count_reach_if_missing, runtime.engine))
    runtime.consume(ELIGIBILITY_DECIDED, in_transaction(runtime.engine, handlers.apply_decisions))
    runtime.consume(DISBURSEMENT_PAYMENTS, in_transaction(runtime.engine, handlers.apply_payments))
    runtime.registry.register(ReportingCollector(state))

    async def start_refreshing() -> None:
        # The health checks run every few seconds: without this every request they make, and every
        # short-lived lag consumer (it has no group, and says so), would fill the log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("kafka.coordinator.consumer").setLevel(logging.ERROR)
        runtime.every(REACH_REFRESH_SECONDS, state.refresh_reach)
        runtime.every(HEALTH_REFRESH_SECONDS, state.refresh_health)

    async def stop_refreshing() -> None:
        # The kept lag reader's Kafka clients and the read-only engine.
        await asyncio.to_thread(state.close)

    app = runtime.build_app(
        "relief reporting",
        routers=[make_router(state)],
        extra_startup=start_refreshing,
        extra_shutdown=stop_refreshing,
    )
    app.add_exception_handler(DatabaseUnavailable, database_unavailable)
    app.state.reporting = state
    return app


def main() -> None:
    settings = load_settings()
    serve(create_app(settings), settings, "reporting")
