"""One function per incoming message or command: check for a duplicate, load, decide, save, emit.

Every function works inside the caller's transaction (`session`) and is given the clock (`now`)
and the settings values it needs. State changes, ledger entries and outgoing events are written
in that same transaction, so a payment's row, its history and what the rest of the system hears
about it can never disagree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from services.disbursement import domain, store
from services.disbursement.domain import (
    FAILED,
    PAID,
    PENDING,
    PENDING_APPROVAL,
    REVERSED,
    SENT,
    DomainError,
    StatementLine,
    Transition,
)
from services.disbursement.provider import PaymentOrder, ProviderReply, TransientProviderError
from services.disbursement.store import PaymentRecord
from shared.auth import Principal
from shared.events import EligibilityDecided, Event, OverpaymentDetected, PaymentStatusChanged, PersonsMerged
from shared.logging import get_logger
from shared.outbox import add_to_outbox, claim_new_events

log = get_logger(__name__)

CONSUMER = "disbursement"
ACCOUNT_REQUIRED = frozenset({"bank_transfer", "e_wallet"})


@dataclass(frozen=True)
class Applied:
    """A committed-to-be transition, for metrics once the transaction is through."""

    status: str
    currency: str
    amount_minor: int


@dataclass
class Change:
    """A transition of one payment plus the bookkeeping columns that go with it."""

    payment: PaymentRecord
    transition: Transition
    due_at: datetime | None = None
    attempts_increment: int = 0
    provider_ref: str | None = None


def _status_event(
    payment: PaymentRecord, status: str, sequence: int, reason: str | None, now: datetime
) -> PaymentStatusChanged:
    return PaymentStatusChanged(
        payment_ref=payment.payment_ref,
        person_id=payment.person_id,
        row_id=payment.row_id,
        batch_id=payment.batch_id,
        partner_id=payment.partner_id,
        cycle=payment.cycle,
        country=payment.country,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        status=status,
        sequence=sequence,
        reason=reason,
        occurred_at=now,
    )


def _ledger_entry(
    payment: PaymentRecord, status: str, sequence: int, reason: str | None, now: datetime
) -> dict[str, Any]:
    return {
        "payment_ref": payment.payment_ref,
        "sequence": sequence,
        "status": status,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "at": now,
        "reason": reason,
    }


def apply_changes(session: Session, changes: Sequence[Change], *, now: datetime, topic: str) -> list[Applied]:
    """Save transitions: payment rows, ledger entries and outbox events, in bulk, in one go.

    Every transition is a ledger entry; those others act on (all but `domain.UNPUBLISHED`) are
    also a `PaymentStatusChanged` event, staged in the same transaction.

    The payments are updated by one statement, each row to its own values: the callers hold the
    rows (locked on PostgreSQL, the single writer on SQLite), so the values are computed from what
    is stored. The ledger's (payment_ref, sequence) uniqueness turns a lost race between two
    writers into an IntegrityError that rolls the whole transaction back, never into a forked history.
    """
    if not changes:
        return []
    rows: list[dict[str, Any]] = []
    entries = []
    messages: list[tuple[str, str | None, Event]] = []
    applied = []
    for change in changes:
        payment, step = change.payment, change.transition
        if step.sequence != payment.sequence + 1:
            raise DomainError(
                "invalid_transition", f"payment {payment.payment_ref}: ledger sequence out of order"
            )
        rows.append(
            {
                "payment_ref": payment.payment_ref,
                "status": step.status,
                "sequence": step.sequence,
                "reason": step.reason,
                "due_at": change.due_at,
                "attempts": payment.attempts + change.attempts_increment,
                "provider_ref": change.provider_ref or payment.provider_ref,
                "updated_at": now,
            }
        )
        entries.append(_ledger_entry(payment, step.status, step.sequence, step.reason, now))
        if step.status not in domain.UNPUBLISHED:
            event = _status_event(payment, step.status, step.sequence, step.reason, now)
            messages.append((topic, payment.person_id, event))
        applied.append(Applied(step.status, payment.currency, payment.amount_minor))
    store.update_payments(session, rows)
    store.add_ledger_entries(session, entries)
    add_to_outbox(session, messages)
    return applied


# ---- eligibility.decided -----------------------------------------------------------------


@dataclass
class DecisionsApplied:
    applied: list[Applied] = field(default_factory=list)
    created: int = 0
    already_existing: int = 0
    overpayments: int = 0


def apply_eligibility_events(
    session: Session, events: Sequence[Event], *, approval_required: bool, topic: str, now: datetime
) -> DecisionsApplied:
    """Apply one consumed batch: eligible cash decisions become payments, merges are resolved.

    A replayed event is skipped (processed-event ids); a second decision for a (person, cycle)
    that already has a payment creates nothing (insert-if-absent on the unique key). Events are
    applied in order; runs of decisions between merges are saved in bulk.
    """
    result = DecisionsApplied()
    fresh = claim_new_events(session, CONSUMER, [event.event_id for event in events])
    run: list[EligibilityDecided] = []
    for event in events:
        if event.event_id not in fresh:
            continue
        if isinstance(event, EligibilityDecided):
            run.append(event)
        elif isinstance(event, PersonsMerged):
            _create_payments(session, run, result, approval_required=approval_required, topic=topic, now=now)
            run = []
            _apply_merge(session, event, result, topic=topic, now=now)
    _create_payments(session, run, result, approval_required=approval_required, topic=topic, now=now)
    return result


def _create_payments(
    session: Session, decisions: Sequence[EligibilityDecided], result: DecisionsApplied, *,
    approval_required: bool, topic: str, now: datetime,
) -> None:  # fmt: skip
    wanted: dict[str, tuple[EligibilityDecided, domain.NewPayment]] = {}
    for decision in decisions:
        new = domain.payment_for_decision(
            decision=decision.decision, assistance=decision.assistance, person_id=decision.person_id,
            cycle=decision.cycle, amount_minor=decision.amount_minor, currency=decision.currency,
            approval_required=approval_required,
        )  # fmt: skip
        if new is None:
            continue
        if new.payment_ref in wanted:
            result.already_existing += 1
            continue
        wanted[new.payment_ref] = (decision, new)
    if not wanted:
        return
    # A person who was merged with another may already be paid under the other's id.
    held = store.live_in_family(session, [new.person_id for _, new in wanted.values()])
    rows: list[dict[str, Any]] = []
    for reference, (decision, new) in wanted.items():
        status, reason = new.status, None
        holder = held.get((new.person_id, new.cycle))
        if holder is not None and holder != reference:
            # The merge overtook this decision (they travel on different partitions). Had they come
            # in order, the payment would have been made and then cancelled by the merge: record
            # that end state at once, so the row is final everywhere and nobody is paid twice.
            log.info("payment_exists_for_merged_person", payment_ref=holder, cycle=new.cycle)
            status, reason = FAILED, domain.MERGED_DUPLICATE
        rows.append(
            {
                "payment_ref": reference,
                "person_id": new.person_id,
                "cycle": new.cycle,
                "row_id": decision.row_id,
                "batch_id": decision.batch_id,
                "partner_id": decision.partner_id,
                "country": decision.country,
                "amount_minor": new.amount_minor,
                "currency": new.currency,
                "payout_method": decision.payout_method,
                "payout_account_sealed": decision.payout_account_sealed,
                "status": status,
                "sequence": 1,
                "reason": reason,
                "attempts": 0,
                "provider_ref": None,
                "decision_event_id": decision.event_id,
                "due_at": now if status == PENDING else None,
                "created_at": now,
                "updated_at": now,
            }
        )
    inserted = store.insert_payments_if_absent(session, rows)
    result.already_existing += len(rows) - len(inserted)
    entries = []
    messages: list[tuple[str, str | None, Event]] = []
    for row in rows:
        if row["payment_ref"] not in inserted:
            continue
        record = PaymentRecord(**row)
        entries.append(_ledger_entry(record, record.status, 1, record.reason, now))
        messages.append(
            (topic, record.person_id, _status_event(record, record.status, 1, record.reason, now))
        )
        result.applied.append(Applied(record.status, record.currency, record.amount_minor))
        if record.reason == domain.MERGED_DUPLICATE:
            result.already_existing += 1  # the person's payment is the other one
        else:
            result.created += 1
    store.add_ledger_entries(session, entries)
    add_to_outbox(session, messages)


def _apply_merge(
    session: Session, event: PersonsMerged, result: DecisionsApplied, *, topic: str, now: datetime
) -> None:
    """Two person ids are one person: cancel unsent duplicates, flag paid ones for recovery."""
    root = store.record_merge(session, event.survivor_person_id, event.merged_person_id)
    payments = store.live_payments_of_persons(session, store.family_of(session, root), lock=True)
    by_cycle: dict[str, list[PaymentRecord]] = {}
    for payment in payments:
        by_cycle.setdefault(payment.cycle, []).append(payment)
    changes: list[Change] = []
    overpaid_rows = []
    for cycle, held in by_cycle.items():
        resolution = domain.resolve_merged_payments(
            [
                domain.HeldPayment(p.payment_ref, p.person_id, p.status, p.amount_minor, p.currency, order)
                for order, p in enumerate(held)
            ]
        )
        lookup = {p.payment_ref: p for p in held}
        for reference in resolution.cancel:
            payment = lookup[reference]
            step = domain.transition(
                reference, payment.status, payment.sequence, FAILED, domain.MERGED_DUPLICATE
            )
            changes.append(Change(payment, step, due_at=None))
        for overpayment in resolution.overpaid:
            overpaid_rows.append(
                {
                    "payment_ref": overpayment.payment_ref,
                    "kept_payment_ref": overpayment.kept_payment_ref,
                    "person_id": event.survivor_person_id,
                    "cycle": cycle,
                    "amount_minor": overpayment.amount_minor,
                    "currency": overpayment.currency,
                    "merge_event_id": event.event_id,
                    "detected_at": now,
                }
            )
    result.applied.extend(apply_changes(session, changes, now=now, topic=topic))
    new_overpayments = store.add_overpayments_if_absent(session, overpaid_rows)
    messages: list[tuple[str, str | None, Event]] = []
    for row in overpaid_rows:
        if row["payment_ref"] not in new_overpayments:
            continue
        log.warning(
            "overpayment_detected", payment_ref=row["payment_ref"], kept_payment_ref=row["kept_payment_ref"]
        )
        messages.append(
            (
                topic,
                event.survivor_person_id,
                OverpaymentDetected(
                    payment_ref=row["payment_ref"],
                    kept_payment_ref=row["kept_payment_ref"],
                    person_id=event.survivor_person_id,
                    cycle=row["cycle"],
                    amount_minor=row["amount_minor"],
                    currency=row["currency"],
                    occurred_at=now,
                ),  # fmt: skip
            )
        )
    add_to_outbox(session, messages)
    result.overpayments += len(messages)


# ---- sending -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A payment handed to one sender for one attempt; the order carries the opened account."""

    payment_ref: str
    attempt: int
    order: PaymentOrder


@dataclass
class Claimed:
    claims: list[Claim] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    unreadable: int = 0


def claim_due_payments(
    session: Session, *, now: datetime, limit: int, lease_seconds: float,
    open_account: Callable[[str], str], topic: str,
) -> Claimed:  # fmt: skip
    """Take due payments (new ones, and retries whose time has come) and mark them `sent`.

    The claim holds a lease (`due_at` moves `lease_seconds` ahead): if this sender dies mid-call,
    another picks the payment up after the lease, and the provider's idempotency key makes the
    second send return the first result instead of paying twice.
    """
    result = Claimed()
    changes: list[Change] = []
    retries: list[dict[str, Any]] = []
    lease = now + timedelta(seconds=lease_seconds)
    for payment in store.lock_due_payments(session, now, limit):
        if payment.status not in (PENDING, SENT):  # defensive: nothing else should be due
            retries.append(
                {
                    "payment_ref": payment.payment_ref,
                    "due_at": None,
                    "attempts": payment.attempts,
                    "updated_at": now,
                }
            )
            continue
        account = None
        if payment.payout_account_sealed:
            try:
                account = open_account(payment.payout_account_sealed)
            except ValueError:
                # Usually a wrong identity secret: a configuration fault, not the person's. Keep
                # the payment waiting (and shout) rather than failing people for it.
                log.error("payout_account_unreadable", payment_ref=payment.payment_ref)
                retries.append(
                    {
                        "payment_ref": payment.payment_ref,
                        "due_at": now + timedelta(seconds=60),
                        "attempts": payment.attempts,
                        "updated_at": now,
                    }
                )
                result.unreadable += 1
                continue
        elif payment.payout_method in ACCOUNT_REQUIRED and payment.status == PENDING:
            step = domain.transition(
                payment.payment_ref, payment.status, payment.sequence, FAILED, "missing_payout_account"
            )
            changes.append(Change(payment, step, due_at=None))
            continue
        attempt = payment.attempts + 1
        order = PaymentOrder(
            payment.payment_ref, payment.amount_minor, payment.currency, payment.payout_method, account
        )
        result.claims.append(Claim(payment.payment_ref, attempt, order))
        if payment.status == PENDING:
            step = domain.transition(payment.payment_ref, payment.status, payment.sequence, SENT)
            changes.append(Change(payment, step, due_at=lease, attempts_increment=1))
        else:
            retries.append(
                {"payment_ref": payment.payment_ref, "due_at": lease, "attempts": attempt, "updated_at": now}
            )
    result.applied = apply_changes(session, changes, now=now, topic=topic)
    store.update_payments(session, retries)
    return result


@dataclass
class Recorded:
    applied: list[Applied] = field(default_factory=list)
    retries: int = 0
    stale: int = 0


def record_provider_replies(
    session: Session, replies: Sequence[tuple[Claim, ProviderReply | TransientProviderError]], *,
    now: datetime, jitter: Callable[[], float], topic: str,
    retry_base_seconds: float = 0.1, retry_cap_seconds: float = 60.0,
) -> Recorded:  # fmt: skip
    """Record what the provider answered: `paid`, `failed`, or a retry after a backoff."""
    result = Recorded()
    current = {
        p.payment_ref: p
        for p in store.payments_by_refs(session, [claim.payment_ref for claim, _ in replies], lock=True)
    }
    changes: list[Change] = []
    later: list[dict[str, Any]] = []
    for claim, reply in replies:
        payment = current.get(claim.payment_ref)
        if payment is None or payment.status != SENT or payment.attempts != claim.attempt:
            result.stale += 1  # another sender took over after our lease ran out, or it is settled
            continue
        if isinstance(reply, ProviderReply) and reply.status == "paid":
            step = domain.transition(payment.payment_ref, SENT, payment.sequence, PAID)
            changes.append(Change(payment, step, due_at=None, provider_ref=reply.provider_ref))
        elif isinstance(reply, ProviderReply) and reply.status == "refused":
            step = domain.transition(
                payment.payment_ref, SENT, payment.sequence, FAILED, reply.reason or "refused"
            )
            changes.append(Change(payment, step, due_at=None, provider_ref=reply.provider_ref))
        else:
            # Transient error, or accepted and not settled yet: ask again later with the same key.
            delay = domain.retry_delay(
                payment.attempts, jitter(), base_seconds=retry_base_seconds, cap_seconds=retry_cap_seconds
            )
            provider_ref = reply.provider_ref if isinstance(reply, ProviderReply) else None
            later.append(
                {
                    "payment_ref": payment.payment_ref,
                    "due_at": now + timedelta(seconds=delay),
                    "provider_ref": provider_ref or payment.provider_ref,
                    "updated_at": now,
                }
            )
            if isinstance(reply, TransientProviderError):
                result.retries += 1
    result.applied = apply_changes(session, changes, now=now, topic=topic)
    store.update_payments(session, later)
    return result


# ---- approvals (maker-checker) -------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalResult:
    record: dict[str, Any]
    applied: list[Applied]


def approve_pending(
    session: Session, *, principal: Principal, country: str, cycle: str, count: int, total_minor: int,
    now: datetime, topic: str,
) -> ApprovalResult:  # fmt: skip
    """Release a country's pending set for sending when the control totals match it exactly.

    The set is locked while it is checked and released, so payments arriving meanwhile are not
    swept in unseen: they wait for the next approval. A mismatch raises DomainError and the
    caller's transaction changes nothing.
    """
    pending = store.pending_approval(session, country, cycle, lock=True)
    totals = domain.check_control_totals(
        [(p.amount_minor, p.currency) for p in pending],
        country=country,
        cycle=cycle,
        count=count,
        total_minor=total_minor,
    )
    approval_id = f"APR{uuid.uuid4().hex[:20].upper()}"
    reason = f"approved:{approval_id}"
    changes = [
        Change(p, domain.transition(p.payment_ref, PENDING_APPROVAL, p.sequence, PENDING, reason), due_at=now)
        for p in pending
    ]
    applied = apply_changes(session, changes, now=now, topic=topic)
    record = {
        "approval_id": approval_id, "country": country, "cycle": cycle, "currency": totals.currency,
        "count": totals.count, "total_minor": totals.total_minor, "outcome": "approved", "refusal_code": None,
        "approved_by": principal.partner_id, "approver_name": principal.name, "at": now,
    }  # fmt: skip
    store.add_approval(session, record)
    log.info(
        "approval_granted",
        approval_id=approval_id,
        country=country,
        cycle=cycle,
        count=totals.count,
        approved_by=principal.partner_id,
    )
    return ApprovalResult(record, applied)


def record_refused_approval(
    session: Session, *, principal: Principal, country: str, cycle: str, count: int, total_minor: int,
    code: str, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """A refused approval is kept too: the audit trail shows every attempt, not only successes."""
    record = {
        "approval_id": f"APR{uuid.uuid4().hex[:20].upper()}", "country": country, "cycle": cycle, "currency": None,
        "count": count, "total_minor": total_minor, "outcome": "refused", "refusal_code": code,
        "approved_by": principal.partner_id, "approver_name": principal.name, "at": now,
    }  # fmt: skip
    store.add_approval(session, record)
    log.warning(
        "approval_refused",
        approval_id=record["approval_id"],
        country=country,
        cycle=cycle,
        code=code,
        approved_by=principal.partner_id,
    )
    return record


# ---- reconciliation ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationResult:
    reconciliation_id: str
    report: domain.ReconciliationReport
    applied: list[Applied]
    lines: int


def reconcile_statement(
    session: Session, lines: Sequence[StatementLine], *, principal: Principal, now: datetime, topic: str
) -> ReconciliationResult:
    """Match a statement against the ledger; apply the reversals it reports on paid payments."""
    report = domain.reconcile(store.ledger_positions(session), lines)
    changes: list[Change] = []
    if report.reversals:
        locked = {
            p.payment_ref: p
            for p in store.payments_by_refs(session, [r.payment_ref for r in report.reversals], lock=True)
        }
        for reversal in report.reversals:
            payment = locked[reversal.payment_ref]
            if payment.status != PAID:  # changed since the positions were read: leave it to the next run
                continue
            step = domain.transition(
                payment.payment_ref,
                PAID,
                payment.sequence,
                REVERSED,
                f"statement:{reversal.settled_on.isoformat()}",
            )
            changes.append(Change(payment, step, due_at=None))
    applied = apply_changes(session, changes, now=now, topic=topic)
    reconciliation_id = f"REC{uuid.uuid4().hex[:20].upper()}"
    store.add_reconciliation(
        session,
        {
            "reconciliation_id": reconciliation_id, "run_by": principal.partner_id, "at": now, "lines": len(lines),
            "matched": report.matched, "missing_from_statement": report.count("missing_from_statement"),
            "unknown_to_ledger": report.count("unknown_to_ledger"), "amount_mismatch": report.count("amount_mismatch"),
            "status_mismatch": report.count("status_mismatch"), "reversals": len(changes),
        },
    )  # fmt: skip
    log.info(
        "reconciliation_done",
        reconciliation_id=reconciliation_id,
        lines=len(lines),
        findings=len(report.findings),
        reversals=len(changes),
    )
    return ReconciliationResult(reconciliation_id, report, applied, len(lines))
