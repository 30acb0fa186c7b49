"""One function per consumed topic: skip events already applied, turn the rest into facts, save
them, then refresh the summaries of the persons they touched.

Each runs inside the batch's single transaction. Reporting publishes nothing, so nothing goes
to the outbox; what matters is that a replayed or redelivered event changes nothing and that the
facts kept make the report independent of the order in which events arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session

from services.reporting import store
from services.reporting.domain import (
    PaymentState,
    RowDecision,
    decision_version,
    latest_decisions,
    latest_payments,
)
from shared.events import (
    EligibilityDecided,
    Event,
    OverpaymentDetected,
    PaymentStatusChanged,
    PersonsMerged,
)


def row_decision(event: EligibilityDecided) -> RowDecision:
    return RowDecision(
        row_id=event.row_id,
        person_id=event.person_id,
        partner_name=event.partner_name,
        decision=event.decision,
        assistance=event.assistance,
        country=event.country,
        sex=event.sex,
        age_years=event.age_years,
        household_size=event.household_size,
        registered_on=event.registered_on,
        version=decision_version(event.occurred_at, event.event_id),
    )


def payment_state(event: PaymentStatusChanged) -> PaymentState:
    return PaymentState(
        payment_ref=event.payment_ref,
        row_id=event.row_id,
        person_id=event.person_id,
        country=event.country,
        amount_minor=event.amount_minor,
        currency=event.currency,
        status=event.status,
        sequence=event.sequence,
    )


def apply_decisions(session: Session, events: Sequence[Event]) -> None:
    """`eligibility.decided`: row decisions and person merges.

    No event ids are kept: a row takes a decision only with a greater version than the one it
    holds, and the merged groups are derived from the whole set of merges, so a replayed or
    duplicated event changes nothing.
    """
    store.lock_for_batch(session)
    decisions: list[RowDecision] = []
    details: dict[str, dict[str, Any]] = {}
    merges: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, EligibilityDecided):
            decision = row_decision(event)
            decisions.append(decision)
            details[decision.version] = {
                "batch_id": event.batch_id,
                "partner_id": event.partner_id,
                "amount_minor": event.amount_minor,
                "currency": event.currency,
            }
        elif isinstance(event, PersonsMerged):
            merges.append((event.survivor_person_id, event.merged_person_id))
    current = latest_decisions(decisions)
    touched = store.save_decisions(
        session, current.values(), {row_id: details[d.version] for row_id, d in current.items()}
    )
    touched |= store.save_merges(session, merges)
    store.refresh_persons(session, touched)


def apply_payments(session: Session, events: Sequence[Event]) -> None:
    """`disbursement.payments`: payment status changes and detected overpayments.

    No event ids are kept for this topic: a payment takes a state only with a higher sequence than
    the one it holds, an overpayment is inserted if absent, and the persons' summaries are
    recomputed from those facts, so a replayed or duplicated event changes nothing.
    """
    store.lock_for_batch(session)
    states: list[PaymentState] = []
    overpayments: dict[str, dict[str, Any]] = {}
    for event in events:
        if isinstance(event, PaymentStatusChanged):
            states.append(payment_state(event))
        elif isinstance(event, OverpaymentDetected):
            overpayments[event.payment_ref] = {
                "payment_ref": event.payment_ref,
                "kept_payment_ref": event.kept_payment_ref,
                "currency": event.currency,
                "amount_minor": event.amount_minor,
            }
    touched = store.save_payments(session, latest_payments(states).values())
    store.save_overpayments(session, [overpayments[ref] for ref in sorted(overpayments)])
    store.refresh_persons(session, touched)
