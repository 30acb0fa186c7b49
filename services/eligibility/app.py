"""Eligibility wiring: settings and policy in, consumer and review routes out."""

from __future__ import annotations

import asyncio
import sys

from fastapi import FastAPI

from services.eligibility.api import Authenticator, build_router
from services.eligibility.handlers import DecisionContext, Eligibility, EligibilityMetrics
from services.eligibility.policy import PolicyError, load_policy
from services.eligibility.store import TABLES
from shared.auth import RemoteAuthenticator
from shared.service import ServiceRuntime, serve
from shared.settings import Settings, SettingsError, load_settings
from shared.topics import BENEFICIARY_REGISTERED, ELIGIBILITY_DECIDED

SERVICE = "eligibility"


def create_app(settings: Settings, *, authenticator: Authenticator | None = None) -> FastAPI:
    """The eligibility service. A malformed policy raises PolicyError before anything starts."""
    policy = load_policy(settings)
    runtime = ServiceRuntime(SERVICE, settings, TABLES)
    context = DecisionContext(
        policy=policy,
        cycle=settings.cycle,
        budget_ceilings=dict(settings.budget_ceilings),
        decided_topic=settings.topic(ELIGIBILITY_DECIDED.name),
    )
    eligibility = Eligibility(
        runtime.engine, context, EligibilityMetrics(runtime.registry), reader=runtime.reader
    )
    runtime.prepare(eligibility.start_counts)
    runtime.consume(BENEFICIARY_REGISTERED, eligibility.apply)
    router = build_router(
        eligibility,
        authenticator or RemoteAuthenticator(settings.service_url("intake")),
        after_commit=runtime.relay.wake,
    )

    async def refresh_gauges() -> None:
        await asyncio.to_thread(eligibility.refresh_gauges)

    async def after_startup() -> None:
        runtime.every(15.0, refresh_gauges)

    app = runtime.build_app("relief eligibility", routers=[router], extra_startup=after_startup)
    app.state.eligibility = eligibility
    return app


def main() -> None:
    try:
        settings = load_settings()
        app = create_app(settings)
    except (SettingsError, PolicyError) as error:
        print(f"eligibility: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(app, settings, SERVICE)
