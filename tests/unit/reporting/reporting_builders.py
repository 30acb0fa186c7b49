"""Builders for the events reporting consumes, and helpers to apply them to a reporting database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from services.reporting import handlers, store
from services.reporting.domain import Reach, compute_reach, latest_decisions, latest_payments
from services.reporting.handlers import payment_state, row_decision
from shared.db import create_tables, make_engine, make_reader, transaction
from shared.events import EligibilityDecided, Event, OverpaymentDetected, PaymentStatusChanged, PersonsMerged
from shared.outbox import OUTBOX_TABLES

CURRENCIES = {"MY": "MYR", "TH": "THB", "HK": "HKD", "PH": "PHP", "VN": "VND"}
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def decided(
    row_id: str,
    person_id: str,
    *,
    partner: str = "Tenaganita",
    country: str = "MY",
    decision: str = "eligible",
    assistance: str = "cash_relief",
    sex: str = "F",
    age: int = 30,
    household: int = 1,
    registered_on: date = date(2026, 1, 5),
    at: datetime = T0,
) -> EligibilityDecided:
    cash = assistance == "cash_relief" and decision == "eligible"
    return EligibilityDecided(
        row_id=row_id, batch_id="batch-1", partner_id=f"p-{partner[:8]}", partner_name=partner, person_id=person_id,
        decision=decision, reasons=[] if decision == "eligible" else ["already_assisted"], policy_version="v1",
        cycle="C1", assistance=assistance, country=country, sex=sex, age_years=age, household_size=household,
        registered_on=registered_on, amount_minor=40000 if cash else None, currency=CURRENCIES.get(country) if cash else None,
        occurred_at=at,
    )  # fmt: skip


def payment(
    row_id: str,
    person_id: str,
    status: str,
    sequence: int,
    *,
    ref: str | None = None,
    country: str = "MY",
    amount_minor: int = 40000,
    currency: str | None = None,
) -> PaymentStatusChanged:
    return PaymentStatusChanged(
        payment_ref=ref or f"pay-{row_id}", person_id=person_id, row_id=row_id, batch_id="batch-1", partner_id="p",
        cycle="C1", country=country, amount_minor=amount_minor, currency=currency or CURRENCIES.get(country, "MYR"),
        status=status, sequence=sequence,
    )  # fmt: skip


def paid(row_id: str, person_id: str, **options: object) -> list[PaymentStatusChanged]:
    """A payment's whole life to `paid`: pending, sent, paid."""
    return [
        payment(row_id, person_id, status, n, **options)
        for n, status in enumerate(("pending", "sent", "paid"), 1)
    ]  # type: ignore[arg-type]


def merged(survivor: str, merged_id: str) -> PersonsMerged:
    return PersonsMerged(survivor_person_id=survivor, merged_person_id=merged_id, cause="identity_rule")


def overpaid(ref: str, kept: str, person_id: str) -> OverpaymentDetected:
    return OverpaymentDetected(payment_ref=ref, kept_payment_ref=kept, person_id=person_id, cycle="C1",
                               amount_minor=40000, currency="MYR")  # fmt: skip


def later(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def reporting_engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    create_tables(engine, [*store.TABLES, *OUTBOX_TABLES])
    return engine


def apply(engine: Engine, events: Sequence[Event]) -> None:
    """Apply events the way the two consumers would: each topic's events in one batch."""
    decisions = [e for e in events if isinstance(e, (EligibilityDecided, PersonsMerged))]
    payments = [e for e in events if isinstance(e, (PaymentStatusChanged, OverpaymentDetected))]
    if decisions:
        with transaction(engine) as session:
            handlers.apply_decisions(session, decisions)
    if payments:
        with transaction(engine) as session:
            handlers.apply_payments(session, payments)


def apply_one_by_one(engine: Engine, events: Sequence[Event]) -> None:
    for event in events:
        apply(engine, [event])


def query(engine: Engine) -> Reach:
    reader = make_reader(engine)
    try:
        with store.read_session(reader) as session:
            return store.query_reach(session)
    finally:
        if reader is not engine:
            reader.dispose()


# ---- random programmes, for property tests --------------------------------------------------

PARTNERS = ("Tenaganita", "HELP", "=Mission", "Migrant Forum")
COUNTRIES = ("MY", "HK", "TH", "PH")
ASSISTANCE = ("cash_relief", "cash_relief", "food_kit", "hygiene_kit")


@st.composite
def programmes(draw: st.DrawFn) -> list[Event]:
    persons = [f"p{n}" for n in range(draw(st.integers(1, 8)))]
    events: list[Event] = []
    for number in range(draw(st.integers(0, 14))):
        row_id = f"r{number:02d}"
        person = draw(st.sampled_from(persons))
        assistance = draw(st.sampled_from(ASSISTANCE))
        versions = draw(st.integers(1, 2))  # sometimes a row is decided again later
        for version in range(versions):
            if version and draw(st.booleans()):  # identity was resolved again: another person
                person = draw(st.sampled_from(persons))
            events.append(
                decided(
                    row_id, person,
                    partner=draw(st.sampled_from(PARTNERS)), country=draw(st.sampled_from(COUNTRIES)),
                    decision=draw(st.sampled_from(("eligible", "eligible", "ineligible", "duplicate"))),
                    assistance=assistance, sex=draw(st.sampled_from("FMX")), age=draw(st.integers(0, 90)),
                    household=draw(st.integers(1, 8)),
                    registered_on=date(2026, 1, 1) + timedelta(days=draw(st.integers(0, 3))),
                    at=later(version * 5 + draw(st.integers(0, 4))),
                )
            )  # fmt: skip
        if assistance == "cash_relief" and draw(st.booleans()):
            statuses = draw(st.lists(st.sampled_from(("pending", "sent", "paid", "failed", "reversed")),
                                     min_size=1, max_size=4))  # fmt: skip
            for sequence, status in enumerate(statuses, 1):
                events.append(
                    payment(row_id, person, status, sequence, country=draw(st.sampled_from(COUNTRIES)))
                )
    for _ in range(draw(st.integers(0, 4))):
        events.append(merged(draw(st.sampled_from(persons)), draw(st.sampled_from(persons))))
    for number in range(draw(st.integers(0, 2))):
        events.append(overpaid(f"pay-over-{number}", "pay-r00", draw(st.sampled_from(persons))))
    return events


def reference(events: list[Event]) -> Reach:
    """What the reach must be after `events`, whatever their order: the pure reference."""
    decisions = latest_decisions(row_decision(e) for e in events if isinstance(e, EligibilityDecided))
    payments = latest_payments(payment_state(e) for e in events if isinstance(e, PaymentStatusChanged))
    merges = [(e.survivor_person_id, e.merged_person_id) for e in events if isinstance(e, PersonsMerged)]
    overpayments = [e.payment_ref for e in events if isinstance(e, OverpaymentDetected)]
    return compute_reach(decisions.values(), payments.values(), merges, overpayments)
