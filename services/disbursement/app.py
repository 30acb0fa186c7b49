"""Wiring only: settings → runtime (database, broker, outbox) → consumer, sender, routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlmodel import Session

from services.disbursement import api, handlers, store
from services.disbursement.metrics import disbursement_metrics
from services.disbursement.provider import PaymentProvider, SimulatedProvider
from services.disbursement.sender import PaymentSender
from shared.auth import RemoteAuthenticator
from shared.db import transaction
from shared.events import Event, utc_now
from shared.logging import get_logger
from shared.sealing import Sealer
from shared.service import ServiceRuntime, serve
from shared.settings import Settings, load_settings
from shared.topics import DISBURSEMENT_PAYMENTS, ELIGIBILITY_DECIDED

log = get_logger(__name__)


def create_app(
    settings: Settings, *, authenticator: Any = None, provider: PaymentProvider | None = None
) -> FastAPI:
    runtime = ServiceRuntime("disbursement", settings, store.TABLES)
    metrics = disbursement_metrics(runtime.registry)
    payments_topic = settings.topic(DISBURSEMENT_PAYMENTS.name)
    secret = settings.resolved_identity_secret()
    sealer = Sealer(secret)
    if provider is None:
        provider = SimulatedProvider(
            runtime.engine, secret=secret, failure_rate=settings.fsp_transient_failure_rate,
            latency_ms=settings.fsp_latency_ms,
        )  # fmt: skip

    def apply(events: Sequence[Event]) -> None:
        with transaction(runtime.engine) as session:
            result = handlers.apply_eligibility_events(
                session,
                events,
                approval_required=settings.approval_required,
                topic=payments_topic,
                now=utc_now(),
            )
        metrics.observe(result.applied)
        if result.already_existing:
            log.info("decisions_for_existing_payments", count=result.already_existing)

    runtime.consume(ELIGIBILITY_DECIDED, apply)
    sender = PaymentSender(
        runtime.engine, provider, open_account=sealer.open, metrics=metrics, topic=payments_topic,
        after_commit=runtime.relay.wake,
    )  # fmt: skip

    async def refresh_gauges() -> None:
        def read() -> dict[str, int]:
            with Session(runtime.reader) as session:
                return store.pending_approval_counts(session)

        metrics.set_pending_approvals(await asyncio.to_thread(read))

    async def start_background() -> None:
        sender.start()
        runtime.every(5.0, refresh_gauges)

    app = runtime.build_app("relief disbursement", routers=[api.router], extra_startup=start_background)
    app.state.disbursement = api.Context(
        engine=runtime.engine,
        authenticator=authenticator or RemoteAuthenticator(settings.service_url("intake")),
        cycle=settings.cycle,
        payments_topic=payments_topic,
        max_upload_bytes=settings.max_upload_bytes,
        metrics=metrics,
        provider=provider,
        after_commit=runtime.relay.wake,
    )
    app.state.sender = sender
    api.install_error_handlers(app)

    # The sender finishes its batch in hand before the runtime stops the broker and the relay.
    runtime_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        async with runtime_lifespan(application):
            try:
                yield
            finally:
                await sender.stop()

    app.router.lifespan_context = lifespan
    return app


def main() -> None:
    settings = load_settings()
    serve(create_app(settings), settings, "disbursement")
