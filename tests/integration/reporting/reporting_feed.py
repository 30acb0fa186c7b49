"""A realistic programme as events, published to the real broker the way eligibility and
disbursement publish them, plus the reach the reference computation expects from them."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import httpx

from services.reporting.domain import Reach, compute_reach, latest_decisions, latest_payments
from services.reporting.handlers import payment_state, row_decision
from shared.events import (
    EligibilityDecided,
    Event,
    OverpaymentDetected,
    PaymentStatusChanged,
    PersonsMerged,
)
from shared.kafka import BrokerPublisher, make_broker
from shared.settings import Settings
from shared.topics import DISBURSEMENT_PAYMENTS, ELIGIBILITY_DECIDED
from tests.unit.reporting.reporting_builders import decided, later, merged, paid, payment

PARTNERS = {
    "MY": ("Tenaganita", "North South Initiative"),
    "HK": ("Mission for Migrant Workers", "HELP for Domestic Workers"),
    "TH": ("MAP Foundation", "Raks Thai"),
    "PH": ("Migrante", "Tenaganita"),
    "VN": ("Viet Nam Migrant Network",),
}
ASSISTANCE = ("cash_relief",) * 6 + ("food_kit", "food_kit", "hygiene_kit", "safe_migration_info")


def anna_in_two_countries() -> list[Event]:
    """One person helped by two partners in two countries: cash in Malaysia, a food kit in Hong Kong."""
    return [
        decided("anna-r1", "person-anna", partner="Tenaganita", country="MY", household=3),
        *paid("anna-r1", "person-anna"),
        decided(
            "anna-r2",
            "person-anna",
            partner="Mission for Migrant Workers",
            country="HK",
            assistance="food_kit",
            household=5,
            registered_on=date(2026, 1, 9),
        ),  # fmt: skip
    ]


def programme(persons: int = 240, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events = anna_in_two_countries()
    for number in range(persons):
        person = f"person-{number:04d}"
        country = rng.choice(list(PARTNERS))
        for visit in range(rng.choice((1, 1, 1, 2))):
            row_id = f"row-{number:04d}-{visit}"
            assistance = rng.choice(ASSISTANCE)
            decision = rng.choices(("eligible", "ineligible", "duplicate"), (85, 10, 5))[0]
            if visit:
                country = rng.choice((country, rng.choice(list(PARTNERS))))
            events.append(
                decided(
                    row_id, person, partner=rng.choice(PARTNERS[country]), country=country, decision=decision,
                    assistance=assistance, sex=rng.choice("FFFMMX"), age=rng.choice((16, 22, 27, 34, 41, 50, 63)),
                    household=rng.randint(1, 7), registered_on=date(2026, 1, 5) + timedelta(days=rng.randint(0, 40)),
                    at=later(number),
                )
            )  # fmt: skip
            if assistance == "cash_relief" and decision == "eligible":
                outcome = rng.choices(("paid", "reversed", "failed", "sent"), (85, 5, 5, 5))[0]
                statuses = {"paid": ("pending", "sent", "paid"), "reversed": ("pending", "sent", "paid", "reversed"),
                            "failed": ("pending", "failed"), "sent": ("pending", "sent")}[outcome]  # fmt: skip
                events += [
                    payment(row_id, person, status, n, country=country)
                    for n, status in enumerate(statuses, 1)
                ]
    # Identity resolution found that two pairs of ids were one person each.
    events += [merged("person-0001", "person-0002"), merged("person-0003", "person-0001")]
    return events


def expected_reach(events: list[Event]) -> Reach:
    decisions = latest_decisions(row_decision(e) for e in events if isinstance(e, EligibilityDecided))
    payments = latest_payments(payment_state(e) for e in events if isinstance(e, PaymentStatusChanged))
    merges = [(e.survivor_person_id, e.merged_person_id) for e in events if isinstance(e, PersonsMerged)]
    overpayments = [e.payment_ref for e in events if isinstance(e, OverpaymentDetected)]
    return compute_reach(decisions.values(), payments.values(), merges, overpayments)


def _record(settings: Settings, event: Event) -> tuple[str, str | None, bytes]:
    if isinstance(event, (PaymentStatusChanged, OverpaymentDetected)):
        return settings.topic(DISBURSEMENT_PAYMENTS.name), event.person_id, event.to_bytes()
    if isinstance(event, PersonsMerged):
        return settings.topic(ELIGIBILITY_DECIDED.name), event.survivor_person_id, event.to_bytes()
    assert isinstance(event, EligibilityDecided)
    return settings.topic(ELIGIBILITY_DECIDED.name), event.person_id, event.to_bytes()


async def publish(settings: Settings, events: list[Event]) -> None:
    broker = make_broker(settings, client_id="relief-test-feed")
    await broker.connect()
    try:
        await BrokerPublisher(broker).send_many([_record(settings, event) for event in events])
    finally:
        await broker.stop()


async def wait_until(check: Callable[[], Any], timeout: float = 45.0, interval: float = 0.3) -> Any:
    """Poll `check` until it returns something truthy; return it, or fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as error:
            last = error
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met after {timeout}s; last value: {last!r}")


def reach_of(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/reach", timeout=10.0)
    response.raise_for_status()
    return dict(response.json())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def without_as_of(body: bytes) -> bytes:
    """The /v1/reach bytes with the timestamp's value blanked (it is the only thing allowed to differ)."""
    import re

    return re.sub(rb'"as_of":"[^"]*"', b'"as_of":""', body)
