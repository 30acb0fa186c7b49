"""Helpers for disbursement's integration tests: publish decisions, read the service's database."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.disbursement import store
from shared.db import make_engine, transaction
from shared.events import EligibilityDecided, Event
from shared.kafka import BrokerPublisher, make_broker
from shared.sealing import Sealer
from shared.settings import Settings
from shared.topics import DISBURSEMENT_PAYMENTS, ELIGIBILITY_DECIDED

CURRENCIES = {"MY": "MYR", "TH": "THB", "VN": "VND", "JP": "JPY"}
AMOUNTS = {"MY": 48000, "TH": 360000, "VN": 2_800_000, "JP": 16_800}


def decision(
    settings: Settings, person_id: str, *, country: str = "MY", account: str = "ACC-1", **extra: Any
) -> EligibilityDecided:
    values: dict[str, Any] = {"row_id": f"row-{person_id}", **extra}
    return EligibilityDecided(
        batch_id="batch-1", partner_id="p-tenaganita", partner_name="Tenaganita",
        person_id=person_id, decision="eligible", reasons=[], policy_version="v1", cycle=settings.cycle,
        assistance="cash_relief", country=country, sex="F", age_years=34, household_size=3,
        registered_on=date(2026, 1, 5), amount_minor=AMOUNTS[country], currency=CURRENCIES[country],
        payout_method="e_wallet", payout_account_sealed=Sealer(settings.resolved_identity_secret()).seal(account),
        **values,
    )  # fmt: skip


async def publish(settings: Settings, records: Sequence[tuple[str | None, Event]]) -> None:
    """Publish (key, event) pairs on `eligibility.decided`, as eligibility would."""
    broker = make_broker(settings, client_id="relief-test-eligibility")
    await broker.connect()
    try:
        topic = settings.topic(ELIGIBILITY_DECIDED.name)
        await BrokerPublisher(broker).send_many([(topic, key, event.to_bytes()) for key, event in records])
    finally:
        await broker.stop()


def replica_settings(settings: Settings) -> Settings:
    """The same stack seen by a second replica: only its HTTP port differs."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return settings.model_copy(update={"disbursement_port": port})


def engine_for(settings: Settings) -> Engine:
    return make_engine(settings.database_url_for("disbursement"))


def payments(engine: Engine) -> list[store.PaymentRecord]:
    with transaction(engine) as session:
        return store.all_payments(session)


def provider_transfers(engine: Engine) -> Counter[str]:
    with transaction(engine) as session:
        return Counter(session.execute(select(store.PROVIDER_TRANSFER.c.idempotency_key)).scalars())


def balances(engine: Engine) -> dict[str, dict[str, int]]:
    with transaction(engine) as session:
        return store.balances(session)


async def wait_until(check: Callable[[], Any], *, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(check)
        except Exception as error:  # the service may not have created its tables yet
            last = error
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def payment_events(settings: Settings, quiet_ms: int = 4_000) -> list[dict[str, Any]]:
    """Everything on `disbursement.payments`, read until nothing new arrives for `quiet_ms`."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.topic(DISBURSEMENT_PAYMENTS.name), bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest", consumer_timeout_ms=quiet_ms, enable_auto_commit=False,
    )  # fmt: skip
    seen: list[dict[str, Any]] = []
    try:
        for message in consumer:
            seen.append(json.loads(message.value))
    finally:
        consumer.close()
    return seen
