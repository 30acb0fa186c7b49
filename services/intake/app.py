"""Wiring only: settings → runtime (database, broker, outbox relay), consumers, routes."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from services.intake import api, handlers, store
from shared.identity import IdentityHasher
from shared.sealing import Sealer
from shared.service import ServiceRuntime, serve
from shared.settings import Settings, load_settings
from shared.topics import BENEFICIARY_REGISTERED, DISBURSEMENT_PAYMENTS, ELIGIBILITY_DECIDED


def create_app(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime("intake", settings, store.TABLES)
    secret = settings.resolved_identity_secret()
    context = handlers.IntakeContext(
        engine=runtime.engine,
        hasher=IdentityHasher(secret),
        sealer=Sealer(secret),
        topic=settings.topic(BENEFICIARY_REGISTERED.name),
        max_rows=settings.max_rows,
        metrics=handlers.intake_metrics(runtime.registry),
    )
    runtime.prepare(partial(store.count_progress_if_missing, runtime.engine))
    runtime.consume(ELIGIBILITY_DECIDED, partial(handlers.apply_decisions, runtime.engine))
    runtime.consume(DISBURSEMENT_PAYMENTS, partial(handlers.apply_payments, runtime.engine))
    router = api.build_router(
        context, max_upload_bytes=settings.max_upload_bytes, wake_relay=runtime.relay.wake
    )
    app = runtime.build_app("relief intake", routers=[router])
    api.install(app, runtime.registry)
    return app


def main() -> None:
    settings = load_settings()
    serve(create_app(settings), settings, "intake")
