"""Intake's commands and message handlers: load, call the domain, save, stage events.

Everything here is synchronous and takes its engine, clock values and settings-derived values as
arguments; `api.py` runs these functions in worker threads, the consumers call them per batch.
"""

from __future__ import annotations

import uuid
from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.intake import domain, store
from services.intake.parser import Format, RawRow, read_rows
from shared.auth import (
    AuthError,
    Principal,
    Role,
    bearer_token,
    hash_secret,
    new_api_key,
    new_partner_id,
    new_salt,
    secret_matches,
    split_api_key,
)
from shared.db import make_reader, serialise_writers, transaction
from shared.events import EligibilityDecided, Event, PaymentStatusChanged, new_event_id
from shared.identity import IdentityHasher
from shared.logging import get_logger
from shared.outbox import add_to_outbox
from shared.sealing import Sealer

log = get_logger(__name__)

UNKNOWN_KEY = "unknown or revoked API key"
# Registration dates are checked against the latest calendar date anywhere on Earth (UTC+14),
# so a partner ahead of UTC can register a person on its own today.
LATEST_UTC_OFFSET = timedelta(hours=14)


# ---- wiring values --------------------------------------------------------------------------


@dataclass
class IntakeMetrics:
    rows: Counter
    row_errors: Counter
    batches: Counter


def intake_metrics(registry: CollectorRegistry) -> IntakeMetrics:
    return IntakeMetrics(
        rows=Counter(
            "relief_intake_rows_total",
            "Batch rows by outcome; a rejected row is labelled with the code of its first problem",
            ["outcome", "reason"],
            registry=registry,
        ),
        row_errors=Counter(
            "relief_intake_row_errors_total",
            "Problems found in rejected rows, by column and code",
            ["column", "reason"],
            registry=registry,
        ),
        batches=Counter(
            "relief_intake_batches_total",
            "Uploaded files by outcome (accepted, refused, replayed, conflict)",
            ["outcome"],
            registry=registry,
        ),
    )


@dataclass
class IntakeContext:
    engine: Engine
    hasher: IdentityHasher
    sealer: Sealer
    topic: str  # the prefixed beneficiary.registered topic
    max_rows: int
    metrics: IntakeMetrics
    chunk_rows: int = 1000
    reader: Engine = field(init=False)  # key checks and progress read without the write lock

    def __post_init__(self) -> None:
        self.reader = make_reader(self.engine)


@dataclass(frozen=True)
class Upload:
    """A received file: a seekable binary stream, its format, size and SHA-256 (for idempotency)."""

    body: IO[bytes]
    file_format: Format
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class BatchReceipt:
    batch_id: str
    accepted: int
    rejected: int
    errors: list[domain.RowError]
    created_at: datetime
    replayed: bool = False


@dataclass(frozen=True)
class BatchReport:
    batch_id: str
    created_at: datetime
    progress: domain.Progress
    errors: list[domain.RowError] = field(default_factory=list)


class IdempotencyConflict(Exception):
    """The same Idempotency-Key came back with a different body."""

    code = "idempotency_key_reused"
    message = (
        "this Idempotency-Key was already used with a different file; "
        "use a new key for a new file, or resend the same file to get the first result"
    )


class BatchNotFound(Exception):
    code = "batch_not_found"
    message = "no batch with this id belongs to your organisation"


def latest_calendar_date(now: datetime) -> date:
    return (now.astimezone(UTC) + LATEST_UTC_OFFSET).date()


def new_batch_id() -> str:
    return f"b{uuid.uuid4().hex[:20]}"


# ---- partners and keys ----------------------------------------------------------------------


def register_partner(session: Session, *, name: str, role: Role, now: datetime) -> tuple[store.Partner, str]:
    """Create a partner or finance user; return it with its API key, which is never stored."""
    partner_id = new_partner_id()
    api_key = new_api_key(partner_id)
    _, secret = split_api_key(api_key) or ("", "")
    salt = new_salt()
    partner = store.Partner(
        partner_id=partner_id,
        name=name,
        role=role,
        salt=salt,
        key_hash=hash_secret(secret, salt),
        created_at=store.as_utc(now),
    )
    store.add_partner(session, partner)
    log.info("partner_registered", partner_id=partner_id, role=role)
    return partner, api_key


def revoke_partner(session: Session, partner_id: str, *, now: datetime) -> bool:
    revoked = store.revoke_partner(session, partner_id, now)
    if revoked:
        log.info("partner_revoked", partner_id=partner_id)
    return revoked


def authenticate(engine: Engine, authorization: str | None, *, role: Role | None = None) -> Principal:
    """401 for a missing, malformed, unknown or revoked key; 403 when the role does not fit."""
    token = bearer_token(authorization)
    parts = split_api_key(token)
    if parts is None:
        raise AuthError(401, UNKNOWN_KEY)
    partner_id, secret = parts
    with Session(engine) as session:
        partner = store.get_partner(session, partner_id)
    if partner is None:
        hash_secret(secret, "0" * 32)  # same work as a real check, so timing does not tell ids apart
        raise AuthError(401, UNKNOWN_KEY)
    if not secret_matches(secret, partner.salt, partner.key_hash) or partner.revoked_at is not None:
        raise AuthError(401, UNKNOWN_KEY)
    principal = Principal(partner.partner_id, partner.name, partner.role)  # type: ignore[arg-type]
    if role is not None and principal.role != role:
        raise AuthError(
            403, f"this action needs a {role} key, and this key belongs to a {principal.role} user"
        )
    return principal


# ---- batches --------------------------------------------------------------------------------


def _chunks(rows: Iterator[RawRow], size: int) -> Iterator[list[RawRow]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def submit_batch(
    ctx: IntakeContext, principal: Principal, upload: Upload, *, idempotency_key: str | None, now: datetime
) -> BatchReceipt:
    """Validate a file row by row and store it in one transaction with its outgoing events.

    A refused file (`domain.FileRefused`) leaves nothing behind. A replayed Idempotency-Key with the
    same body returns the first receipt; with another body it raises IdempotencyConflict.
    """
    today = latest_calendar_date(now)
    outcomes: Tally[tuple[str, str]] = Tally()
    problems: Tally[tuple[str, str]] = Tally()
    try:
        with transaction(ctx.engine) as session:
            # One upload per partner at a time: partner_ref uniqueness and the key check stay exact.
            serialise_writers(session, f"intake.partner.{principal.partner_id}")
            if idempotency_key is not None:
                record = store.find_idempotency_record(session, principal.partner_id, idempotency_key)
                if record is not None:
                    if record.body_sha256 != upload.sha256:
                        raise IdempotencyConflict()
                    receipt = _receipt(session, record.batch_id, replayed=True)
                    ctx.metrics.batches.labels("replayed").inc()
                    return receipt
            batch_id = new_batch_id()
            batch = store.Batch(
                batch_id=batch_id,
                partner_id=principal.partner_id,
                file_format=upload.file_format,
                size_bytes=upload.size_bytes,
                created_at=store.as_utc(now),
            )
            store.add_batch(session, batch)
            errors: list[domain.RowError] = []
            first_use: dict[str, int] = {}  # partner_ref → the row of this file that took it
            accepted = 0
            for chunk in _chunks(
                read_rows(upload.body, upload.file_format, max_rows=ctx.max_rows), ctx.chunk_rows
            ):
                chunk_errors, chunk_accepted = _store_chunk(
                    ctx, session, principal, batch_id, chunk, first_use, today=today, now=now
                )
                errors.extend(chunk_errors)
                accepted += chunk_accepted
            rejected = len({error.row for error in errors})
            batch.accepted, batch.rejected = accepted, rejected
            session.add(batch)
            if idempotency_key is not None:
                store.add_idempotency_record(
                    session,
                    store.IdempotencyRecord(
                        partner_id=principal.partner_id,
                        idempotency_key=idempotency_key,
                        body_sha256=upload.sha256,
                        batch_id=batch_id,
                        created_at=store.as_utc(now),
                    ),
                )
            for error in errors:
                problems[(error.column or "row", error.code)] += 1
            outcomes[("accepted", "none")] += accepted
            for row_errors in _by_row(errors):
                outcomes[("rejected", domain.rejection_reason(row_errors))] += 1
    except domain.FileRefused as refusal:
        ctx.metrics.batches.labels("refused").inc()
        log.info(
            "batch_refused", partner_id=principal.partner_id, code=refusal.code, size_bytes=upload.size_bytes
        )
        raise
    except IdempotencyConflict:
        ctx.metrics.batches.labels("conflict").inc()
        raise
    ctx.metrics.batches.labels("accepted").inc()
    for (outcome, reason), count in outcomes.items():
        if count:
            ctx.metrics.rows.labels(outcome, reason).inc(count)
    for (column, reason), count in problems.items():
        ctx.metrics.row_errors.labels(column, reason).inc(count)
    log.info(
        "batch_accepted",
        batch_id=batch_id,
        partner_id=principal.partner_id,
        accepted=accepted,
        rejected=rejected,
        size_bytes=upload.size_bytes,
    )
    return BatchReceipt(batch_id, accepted, rejected, errors, batch.created_at)


def _by_row(errors: Sequence[domain.RowError]) -> Iterator[list[domain.RowError]]:
    current: list[domain.RowError] = []
    for error in errors:
        if current and current[0].row != error.row:
            yield current
            current = []
        current.append(error)
    if current:
        yield current


def _store_chunk(
    ctx: IntakeContext,
    session: Session,
    principal: Principal,
    batch_id: str,
    chunk: list[RawRow],
    first_use: dict[str, int],
    *,
    today: date,
    now: datetime,
) -> tuple[list[domain.RowError], int]:
    checked = [(raw, domain.validate_row(raw.number, raw.cells, today=today)) for raw in chunk]
    refs = [outcome.partner_ref for _, outcome in checked if isinstance(outcome, domain.ValidRow)]
    taken = store.partner_refs_taken(session, principal.partner_id, refs)
    errors: list[domain.RowError] = []
    rows: list[dict[str, Any]] = []
    messages: list[tuple[str, str | None, Event]] = []
    for raw, outcome in checked:
        row_errors = list(raw.errors)
        if isinstance(outcome, list):
            row_errors = sorted(row_errors + outcome, key=lambda error: error.column is not None)
        elif (
            outcome.partner_ref in first_use
        ):  # before `taken`: earlier chunks of this file are stored already
            row_errors.append(
                domain.duplicate_partner_ref(raw.number, earlier_row=first_use[outcome.partner_ref])
            )
        elif outcome.partner_ref in taken:
            row_errors.append(domain.duplicate_partner_ref(raw.number, earlier_row=None))
        if row_errors:
            errors.extend(row_errors)
            continue
        assert isinstance(outcome, domain.ValidRow)
        first_use[outcome.partner_ref] = raw.number
        row, message = _accept(ctx, principal, batch_id, outcome, now=now)
        rows.append(row)
        messages.append(message)
    store.insert_beneficiaries(session, rows)
    add_to_outbox(session, messages)
    store.insert_rejections(session, batch_id, errors)
    return errors, len(rows)


def _accept(
    ctx: IntakeContext, principal: Principal, batch_id: str, row: domain.ValidRow, *, now: datetime
) -> tuple[dict[str, Any], tuple[str, str | None, Event]]:
    row_id = f"{batch_id}-{row.row}"
    keys = ctx.hasher.keys_for(
        nationality=row.nationality,
        date_of_birth=row.date_of_birth,
        given_name=row.given_name,
        family_name=row.family_name,
        id_type=row.id_type,
        id_number=row.id_number,
    )
    sealed = ctx.sealer.seal(row.payout_account) if row.payout_account else None
    event = domain.registration_event(
        row,
        event_id=new_event_id(),
        occurred_at=now,
        row_id=row_id,
        batch_id=batch_id,
        partner_id=principal.partner_id,
        partner_name=principal.name,
        keys=keys,
        payout_account_sealed=sealed,
    )
    stored = {
        "row_id": row_id,
        "batch_id": batch_id,
        "partner_id": principal.partner_id,
        "row_number": row.row,
        "partner_ref": row.partner_ref,
        "given_name": row.given_name,
        "family_name": row.family_name,
        "sex": row.sex,
        "date_of_birth": row.date_of_birth,
        "nationality": row.nationality,
        "country": row.country,
        "id_type": row.id_type,
        "id_number": row.id_number,
        "phone": row.phone,
        "household_size": row.household_size,
        "vulnerabilities": ";".join(row.vulnerabilities) or None,
        "assistance": row.assistance,
        "payout_method": row.payout_method,
        "payout_account_sealed": sealed,
        "registered_on": row.registered_on,
        "age_years": row.age_years,
        "document_key": keys.document_key,
        "name_key": keys.name_key,
        "created_at": store.as_utc(now),
        "decision": None,
        "person_id": None,
        "decided_at": None,
        "payment_ref": None,
        "payment_status": None,
        "payment_sequence": None,
    }
    return stored, (ctx.topic, keys.partition_key, event)


def _receipt(session: Session, batch_id: str, *, replayed: bool) -> BatchReceipt:
    batch = store.get_batch(session, batch_id)
    assert batch is not None, "an idempotency record always points at a stored batch"
    return BatchReceipt(
        batch.batch_id,
        batch.accepted,
        batch.rejected,
        store.rejections_of(session, batch_id),
        batch.created_at,
        replayed,
    )


def batch_report(engine: Engine, principal: Principal, batch_id: str) -> BatchReport:
    """A batch's progress for the partner that sent it; any other caller sees BatchNotFound."""
    with Session(engine) as session:
        batch = store.get_batch(session, batch_id)
        if batch is None or batch.partner_id != principal.partner_id:
            raise BatchNotFound()
        progress = domain.summarise_progress(
            accepted=batch.accepted, rejected=batch.rejected, groups=store.progress_groups(session, batch_id)
        )
        return BatchReport(batch.batch_id, batch.created_at, progress, store.rejections_of(session, batch_id))


def programme_progress(engine: Engine) -> domain.Progress:
    """Counts over every batch: what `relief wait` watches."""
    with Session(engine) as session:
        accepted, rejected = store.batch_totals(session)
        return domain.summarise_progress(
            accepted=accepted, rejected=rejected, groups=store.progress_groups(session)
        )


# ---- progress read back from downstream topics ----------------------------------------------


def apply_decisions(engine: Engine, events: Sequence[Event]) -> None:
    """eligibility.decided: record each row's decision (PersonsMerged does not change a row's counts).

    No event ids are kept: a row takes a decision no older than the one it holds, so a replayed
    decision is either older (nothing happens) or the same (the row and its count stay as they are).
    """
    with transaction(engine) as session:
        latest: dict[str, dict[str, Any]] = {}
        for event in events:
            if isinstance(event, EligibilityDecided):
                decided_at = store.as_utc(event.occurred_at)
                current = latest.get(event.row_id)
                if current is None or current["decided_at"] <= decided_at:
                    latest[event.row_id] = {
                        "row_id": event.row_id,
                        "decision": event.decision,
                        "person_id": event.person_id,
                        "decided_at": decided_at,
                    }
        store.record_decisions(session, list(latest.values()))


def apply_payments(engine: Engine, events: Sequence[Event]) -> None:
    """disbursement.payments: keep each row's newest payment status (OverpaymentDetected is not a row's).

    Only statuses that change a row's progress are kept (`domain.shows_in_progress`): a payment
    that is merely being sent says nothing new, and skipping it halves this consumer's writes.
    No event ids are kept for this topic: a row takes a status only with a higher sequence than
    the one it holds, so a replayed or duplicated status changes nothing (nor any count).
    """
    events = [
        event
        for event in events
        if isinstance(event, PaymentStatusChanged) and domain.shows_in_progress(event.status, event.sequence)
    ]
    if not events:
        return
    with transaction(engine) as session:
        latest: dict[str, dict[str, Any]] = {}
        for event in events:
            if isinstance(event, PaymentStatusChanged):
                current = latest.get(event.row_id)
                if current is None or current["sequence"] < event.sequence:
                    latest[event.row_id] = {
                        "row_id": event.row_id,
                        "payment_ref": event.payment_ref,
                        "status": event.status,
                        "sequence": event.sequence,
                    }
        store.record_payment_statuses(session, list(latest.values()))
