"""Intake's own tables (prefixed `intake_`) and the queries on them.

Raw personal data lives only here: `intake_beneficiary` keeps accepted rows (the payout account
sealed); rejected rows keep only their row number, column and message. Timestamps are aware UTC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Index,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Column, Field, Session, SQLModel

from services.intake.domain import RowError
from shared.db import WITHOUT_ROWID, append_rows, insert_many, one_of, transaction, update_many


def as_utc(moment: datetime) -> datetime:
    """Timestamps are stored and compared as aware UTC values."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Partner(SQLModel, table=True):
    """A CSO partner or a finance user; only a salted hash of its API key's secret is kept."""

    __tablename__ = "intake_partner"

    partner_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    salt: str = Field(max_length=64)
    key_hash: str = Field(max_length=128)
    revoked_at: datetime | None = None
    created_at: datetime


class Batch(SQLModel, table=True):
    __tablename__ = "intake_batch"

    batch_id: str = Field(primary_key=True, max_length=40)
    partner_id: str = Field(index=True, max_length=32, foreign_key="intake_partner.partner_id")
    file_format: str = Field(max_length=8)
    size_bytes: int
    accepted: int = 0
    rejected: int = 0
    created_at: datetime


class IdempotencyRecord(SQLModel, table=True):
    """An `Idempotency-Key` with the hash of the body it came with and the batch it produced."""

    __tablename__ = "intake_idempotency"

    partner_id: str = Field(primary_key=True, max_length=32)
    idempotency_key: str = Field(primary_key=True, max_length=200)
    body_sha256: str = Field(max_length=64)
    batch_id: str = Field(max_length=40)
    created_at: datetime


class RowRejection(SQLModel, table=True):
    __tablename__ = "intake_row_error"

    id: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(index=True, max_length=40)
    row_number: int
    column_name: str | None = Field(default=None, max_length=64)
    code: str = Field(max_length=40)
    message: str = Field(sa_column=Column(Text, nullable=False))


class Beneficiary(SQLModel, table=True):
    """An accepted row, and the progress intake reads back from the downstream topics."""

    __tablename__ = "intake_beneficiary"
    __table_args__ = (
        UniqueConstraint("partner_id", "partner_ref", name="uq_intake_beneficiary_partner_ref"),
        Index("ix_intake_beneficiary_batch", "batch_id"),
        # Each row is updated twice (its decision, then its payment), never in an indexed column:
        # room left in each page lets PostgreSQL write the new version beside the old one without
        # touching the three indexes (a "HOT" update). Full pages made 61 % of them go elsewhere.
        {"postgresql_with": {"fillfactor": 70}},
    )

    row_id: str = Field(primary_key=True, max_length=64)
    batch_id: str = Field(max_length=40)
    partner_id: str = Field(max_length=32)
    row_number: int
    partner_ref: str = Field(max_length=64)
    given_name: str = Field(max_length=100)
    family_name: str | None = Field(default=None, max_length=100)
    sex: str = Field(max_length=1)
    date_of_birth: date
    nationality: str = Field(max_length=3)
    country: str = Field(max_length=2)
    id_type: str = Field(max_length=16)
    id_number: str | None = Field(default=None, max_length=40)
    phone: str | None = Field(default=None, max_length=16)
    household_size: int
    vulnerabilities: str | None = Field(default=None, max_length=200)
    assistance: str = Field(max_length=32)
    payout_method: str | None = Field(default=None, max_length=16)
    payout_account_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    registered_on: date
    age_years: int
    document_key: str | None = Field(default=None, max_length=64)
    name_key: str = Field(max_length=64)
    created_at: datetime
    decision: str | None = Field(default=None, max_length=16)
    person_id: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = None
    payment_ref: str | None = Field(default=None, max_length=64)
    payment_status: str | None = Field(default=None, max_length=20)
    payment_sequence: int | None = None


class ProgressCount(SQLModel, table=True):
    """How many accepted rows of a batch are in each (decision, assistance, payment status) state.

    Kept in the transactions that change a row's state, so progress is read from a few rows
    per batch instead of a scan of every accepted row. "" stands for "none yet".
    """

    __tablename__ = "intake_progress_count"
    __table_args__ = (WITHOUT_ROWID,)

    batch_id: str = Field(primary_key=True, max_length=40)
    decision: str = Field(primary_key=True, max_length=16)
    assistance: str = Field(primary_key=True, max_length=32)
    payment_status: str = Field(primary_key=True, max_length=20)
    rows: int


TABLES = [
    Partner.__table__,  # type: ignore[attr-defined]
    Batch.__table__,  # type: ignore[attr-defined]
    IdempotencyRecord.__table__,  # type: ignore[attr-defined]
    RowRejection.__table__,  # type: ignore[attr-defined]
    Beneficiary.__table__,  # type: ignore[attr-defined]
    ProgressCount.__table__,  # type: ignore[attr-defined]
]
_beneficiaries = Beneficiary.__table__  # type: ignore[attr-defined]
_progress = ProgressCount.__table__  # type: ignore[attr-defined]
# (batch_id, decision, assistance, payment_status) → change in rows; None for "none yet"
StateKey = tuple[str, str | None, str, str | None]
_rejections = RowRejection.__table__  # type: ignore[attr-defined]


# ---- partners -------------------------------------------------------------------------------


def get_partner(session: Session, partner_id: str) -> Partner | None:
    return session.get(Partner, partner_id)


def add_partner(session: Session, partner: Partner) -> None:
    session.add(partner)


def revoke_partner(session: Session, partner_id: str, at: datetime) -> bool:
    """Revoke a key; revoking twice keeps the first time. False when the partner is unknown."""
    partner = session.get(Partner, partner_id)
    if partner is None:
        return False
    if partner.revoked_at is None:
        partner.revoked_at = as_utc(at)
        session.add(partner)
    return True


# ---- batches --------------------------------------------------------------------------------


def find_idempotency_record(session: Session, partner_id: str, key: str) -> IdempotencyRecord | None:
    return session.get(IdempotencyRecord, (partner_id, key))


def add_idempotency_record(session: Session, record: IdempotencyRecord) -> None:
    session.add(record)


def add_batch(session: Session, batch: Batch) -> None:
    session.add(batch)
    session.flush()


def get_batch(session: Session, batch_id: str) -> Batch | None:
    return session.get(Batch, batch_id)


def partner_refs_taken(session: Session, partner_id: str, refs: Sequence[str]) -> set[str]:
    """Which of these partner_refs the partner already used in an earlier batch."""
    if not refs:
        return set()
    wanted = sorted(set(refs))
    column = _beneficiaries.c.partner_ref
    # `one_of` is `= ANY(array)` on PostgreSQL: within an upload's transaction the table grows by
    # rows the planner has no statistics for, and an `IN (1000 params)` list then turned into a
    # sequential scan comparing every row with every parameter (minutes for 50,000 rows).
    match = one_of(session, column, wanted)
    query = select(column).where(_beneficiaries.c.partner_id == partner_id, match)
    return set(session.execute(query).scalars())


def insert_beneficiaries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        append_rows(session, _beneficiaries, rows)
        _count(session, Counter((row["batch_id"], None, row["assistance"], None) for row in rows))


def insert_rejections(session: Session, batch_id: str, errors: Iterable[RowError]) -> None:
    rows = [
        {
            "batch_id": batch_id,
            "row_number": e.row,
            "column_name": e.column,
            "code": e.code,
            "message": e.message,
        }
        for e in errors
    ]
    append_rows(session, _rejections, rows)


def rejections_of(session: Session, batch_id: str) -> list[RowError]:
    query = (
        select(_rejections.c.row_number, _rejections.c.column_name, _rejections.c.code, _rejections.c.message)
        .where(_rejections.c.batch_id == batch_id)
        .order_by(_rejections.c.id)
    )
    return [RowError(row, column, code, message) for row, column, code, message in session.execute(query)]


def progress_groups(
    session: Session, batch_id: str | None = None
) -> list[tuple[str | None, str, str | None, int]]:
    """Accepted rows counted by (decision, assistance, payment_status), for one batch or all."""
    columns = (_progress.c.decision, _progress.c.assistance, _progress.c.payment_status)
    query = select(*columns, func.sum(_progress.c.rows)).group_by(*columns)
    if batch_id is not None:
        query = query.where(_progress.c.batch_id == batch_id)
    return [
        (decision or None, assistance, status or None, int(rows))
        for decision, assistance, status, rows in session.execute(query)
        if rows
    ]


def counted_progress_groups(
    session: Session, batch_id: str | None = None
) -> list[tuple[str | None, str, str | None, int]]:
    """The same groups counted from the rows themselves (a scan): what the kept counts must equal."""
    columns = (_beneficiaries.c.decision, _beneficiaries.c.assistance, _beneficiaries.c.payment_status)
    query = select(*columns, func.count()).group_by(*columns)
    if batch_id is not None:
        query = query.where(_beneficiaries.c.batch_id == batch_id)
    return [
        (decision, assistance, status, int(rows))
        for decision, assistance, status, rows in session.execute(query)
    ]


def count_progress_if_missing(engine: Engine) -> bool:
    """Fill the kept counts from the rows when there are rows but no counts (a database from before
    the counts were kept). Returns whether it did."""
    with transaction(engine) as session:
        return _count_progress_if_missing(session)


def _count_progress_if_missing(session: Session) -> bool:
    if session.execute(select(_progress.c.batch_id).limit(1)).first() is not None:
        return False
    if session.execute(select(_beneficiaries.c.row_id).limit(1)).first() is None:
        return False
    columns = (
        _beneficiaries.c.batch_id,
        _beneficiaries.c.decision,
        _beneficiaries.c.assistance,
        _beneficiaries.c.payment_status,
    )
    counts = Counter[StateKey]()
    for batch_id, decision, assistance, status, rows in session.execute(
        select(*columns, func.count()).group_by(*columns)
    ):
        counts[(batch_id, decision, assistance, status)] += int(rows)
    _count(session, counts)
    return True


def _count(session: Session, deltas: Counter[StateKey]) -> None:
    """Add row-count changes to the kept counts (insert a group the first time it is seen)."""
    rows = [
        {
            "batch_id": batch_id,
            "decision": decision or "",
            "assistance": assistance,
            "payment_status": status or "",
            "rows": change,
        }
        for (batch_id, decision, assistance, status), change in sorted(
            deltas.items(), key=lambda item: tuple(part or "" for part in item[0])
        )
        if change
    ]
    if not rows:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_progress)
    statement = statement.on_conflict_do_update(
        index_elements=["batch_id", "decision", "assistance", "payment_status"],
        set_={"rows": _progress.c.rows + statement.excluded.rows},
    )
    insert_many(session, statement, rows)


def _current_states(session: Session, row_ids: Sequence[str], *, version: Any) -> dict[str, tuple[Any, ...]]:
    """Each row's (batch_id, decision, assistance, payment_status, version column), locked on
    PostgreSQL so the state changes computed from it are the ones the update makes."""
    found: dict[str, tuple[Any, ...]] = {}
    columns = (
        _beneficiaries.c.row_id,
        _beneficiaries.c.batch_id,
        _beneficiaries.c.decision,
        _beneficiaries.c.assistance,
        _beneficiaries.c.payment_status,
        version,
    )
    ids = sorted(set(row_ids))
    for start in range(0, len(ids), 500):
        query = select(*columns).where(one_of(session, _beneficiaries.c.row_id, ids[start : start + 500]))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        for row_id, *state in session.execute(query):
            found[row_id] = tuple(state)
    return found


def batch_totals(session: Session) -> tuple[int, int]:
    """Accepted and rejected rows over every batch."""
    accepted, rejected = session.execute(
        select(func.coalesce(func.sum(Batch.accepted), 0), func.coalesce(func.sum(Batch.rejected), 0))
    ).one()
    return int(accepted), int(rejected)


# ---- progress read back from downstream -----------------------------------------------------


def record_decisions(session: Session, decisions: Sequence[dict[str, Any]]) -> None:
    """Set each row's decision; an older decision arriving late never overwrites a newer one.

    Each item: row_id, decision, person_id, decided_at (aware UTC).
    """
    _advance_rows(
        session,
        decisions,
        columns={"decision": "decision", "person_id": "person_id", "decided_at": "decided_at"},
        version="decided_at",
        newer=lambda stored, item: stored is None or as_utc(stored) <= item["decided_at"],
        state=lambda decision, status, item: (item["decision"], status),
    )


def record_payment_statuses(session: Session, statuses: Sequence[dict[str, Any]]) -> None:
    """Keep the newest status per row by the payment's `sequence`.

    Each item: row_id, payment_ref, status, sequence.
    """
    _advance_rows(
        session,
        statuses,
        columns={"payment_ref": "payment_ref", "payment_status": "status", "payment_sequence": "sequence"},
        version="payment_sequence",
        newer=lambda stored, item: stored is None or stored < item["sequence"],
        state=lambda decision, status, item: (decision, item["status"]),
    )


def _advance_rows(
    session: Session,
    items: Sequence[dict[str, Any]],
    *,
    columns: dict[str, str],
    version: str,
    newer: Callable[[Any, dict[str, Any]], bool],
    state: Callable[[str | None, str | None, dict[str, Any]], tuple[str | None, str | None]],
) -> None:
    """Apply the items that are newer than what each row holds (by its `version` column), and move
    those rows between progress counts, in the caller's transaction.

    `columns` maps each row column set to the item's key; `state(decision, payment_status, item)`
    is the row's (decision, payment_status) once the item is applied. The rows are read first
    (locked on PostgreSQL; SQLite has one writer), so the counts move exactly as the rows do.
    """
    if not items:
        return
    current = _current_states(session, [item["row_id"] for item in items], version=_beneficiaries.c[version])
    deltas = Counter[StateKey]()
    changed: list[dict[str, Any]] = []
    for item in items:
        found = current.get(item["row_id"])
        if found is None or not newer(found[4], item):
            continue
        batch_id, decision, assistance, status, _ = found
        new_decision, new_status = state(decision, status, item)
        deltas[(batch_id, decision, assistance, status)] -= 1
        deltas[(batch_id, new_decision, assistance, new_status)] += 1
        current[item["row_id"]] = (batch_id, new_decision, assistance, new_status, item[columns[version]])
        changed.append(item)
    _count(session, deltas)
    update_many(
        session,
        _beneficiaries,
        "row_id",
        [
            {"row_id": item["row_id"], **{column: item[key] for column, key in columns.items()}}
            for item in changed
        ],
    )
