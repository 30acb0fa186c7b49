"""Eligibility's own tables and queries. Identity lives here, so it survives restarts and is shared
by every replica; unique constraints and the writers' lock, not memory, decide races.

The identity graph is a union-find kept flat: every person row carries `survivor_id`, the person
it now belongs to (itself until merged), and `merged_into`, the person it was merged into directly.
Keys, approvals and near keys keep the person id they were recorded with; queries go through
`survivor_id`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Table,
    UniqueConstraint,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlmodel import Field, Session, SQLModel, col

from services.eligibility.domain import PersonStanding
from shared.db import WITHOUT_ROWID, append_rows, insert_many, one_of

# ---- tables ----------------------------------------------------------------------------------


class Person(SQLModel, table=True):
    __tablename__ = "eligibility_person"

    id: int | None = Field(default=None, primary_key=True)  # creation order
    person_id: str = Field(max_length=40, unique=True)
    survivor_id: str = Field(max_length=40, index=True)
    merged_into: str | None = Field(default=None, max_length=40)
    created_row_id: str = Field(max_length=64)
    created_at: datetime
    merged_at: datetime | None = None


class IdentityKey(SQLModel, table=True):
    """Rule 1 and rule 2 keys (keyed hashes) → the person that first carried them."""

    __tablename__ = "eligibility_identity_key"
    __table_args__ = (WITHOUT_ROWID,)

    key: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)  # document | name
    person_id: str = Field(max_length=40, index=True)
    row_id: str = Field(max_length=64)


class NearSet(SQLModel, table=True):
    """The near-miss keys a row brought to its person, filed under the row's block.

    A block is one nationality and date of birth (a keyed hash); near misses are only ever
    looked for inside one, so a row reads its block's few rows and compares their keys in
    memory. One row here per registration that brought new keys, instead of an index entry per
    key: a dozen fewer random writes per row.
    """

    __tablename__ = "eligibility_near_set"
    __table_args__ = (WITHOUT_ROWID,)

    block_key: str = Field(primary_key=True, max_length=64)
    row_id: str = Field(primary_key=True, max_length=64)
    person_id: str = Field(max_length=40)
    near_keys: str  # space-separated


class Approval(SQLModel, table=True):
    """One approval per person, cycle and assistance type: the database refuses a second."""

    __tablename__ = "eligibility_approval"
    __table_args__ = (
        UniqueConstraint("person_id", "cycle", "assistance", name="uq_eligibility_approval_person_cycle"),
    )

    id: int | None = Field(default=None, primary_key=True)  # approval order
    person_id: str = Field(max_length=40)
    cycle: str = Field(max_length=32)
    assistance: str = Field(max_length=32)
    row_id: str = Field(max_length=64, unique=True)
    country: str = Field(max_length=2)
    amount_minor: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    currency: str | None = Field(default=None, max_length=3)
    approved_at: datetime


class RowDecision(SQLModel, table=True):
    """The decision on each row, once: a row seen again is never decided a second time."""

    __tablename__ = "eligibility_decision"

    row_id: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(max_length=64)
    fingerprint: str = Field(max_length=64)
    batch_id: str = Field(max_length=64)
    partner_id: str = Field(max_length=64)
    partner_name: str = Field(max_length=200)
    country: str = Field(max_length=2)
    assistance: str = Field(max_length=32)
    person_id: str = Field(max_length=40)
    decision: str = Field(max_length=16)
    reasons: str = Field(default="", max_length=500)  # space-separated reason codes
    policy_version: str = Field(max_length=32)
    cycle: str = Field(max_length=32)
    amount_minor: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    currency: str | None = Field(default=None, max_length=3)
    duplicate_of: str | None = Field(default=None, max_length=64)
    decided_at: datetime


class Budget(SQLModel, table=True):
    """What has been reserved of a country's ceiling in a cycle, in minor units."""

    __tablename__ = "eligibility_budget"

    country: str = Field(primary_key=True, max_length=2)
    cycle: str = Field(primary_key=True, max_length=32)
    currency: str = Field(max_length=3)
    reserved_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    approvals: int = 0


class Merge(SQLModel, table=True):
    __tablename__ = "eligibility_merge"

    id: int | None = Field(default=None, primary_key=True)
    survivor_person_id: str = Field(max_length=40)
    merged_person_id: str = Field(max_length=40, unique=True)
    cause: str = Field(max_length=16)
    row_id: str | None = Field(default=None, max_length=64)
    review_id: str | None = Field(default=None, max_length=40)
    merged_at: datetime


class Review(SQLModel, table=True):
    """A possible duplicate: a row one edit away from another person. `a` was there first."""

    __tablename__ = "eligibility_review"

    review_id: str = Field(primary_key=True, max_length=40)
    person_a: str = Field(max_length=40, index=True)
    row_a: str = Field(max_length=64)
    person_b: str = Field(max_length=40, index=True)
    row_b: str = Field(max_length=64)
    country: str = Field(max_length=2)  # where the flagged (newer) row was assisted
    status: str = Field(default="open", max_length=32, index=True)
    reason: str | None = Field(default=None, max_length=1000)
    resolved_by: str | None = Field(default=None, max_length=64)
    resolved_by_name: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = None
    created_at: datetime


class ReviewDecision(SQLModel, table=True):
    """Every decision a reviewer recorded, with who and when; the latest one holds."""

    __tablename__ = "eligibility_review_decision"

    id: int | None = Field(default=None, primary_key=True)
    review_id: str = Field(max_length=40, index=True)
    resolution: str = Field(max_length=16)
    reason: str = Field(max_length=1000)
    decided_by: str = Field(max_length=64)
    decided_by_name: str = Field(max_length=200)
    decided_at: datetime
    merged: bool = False


class Tally(SQLModel, table=True):
    """Counts kept in the transactions that change what they count, so a gauge reads one row
    instead of scanning a table that grows with the programme."""

    __tablename__ = "eligibility_tally"

    name: str = Field(primary_key=True, max_length=32)
    value: int


PERSONS = "persons"  # persons not merged into another

TABLES: list[Table] = [
    model.__table__  # type: ignore[union-attr]
    for model in (
        Person,
        IdentityKey,
        NearSet,
        Approval,
        RowDecision,
        Budget,
        Merge,
        Review,
        ReviewDecision,
        Tally,
    )
]


def _insert_rows(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], *, ignore_duplicates: bool = False
) -> None:
    if not rows:
        return
    if not ignore_duplicates:
        append_rows(session, table, rows)
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {dialect}")
    insert_many(session, statement.on_conflict_do_nothing(), rows)


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- what a batch needs, loaded at once -------------------------------------------------------


@dataclass
class Snapshot:
    """The stored state a batch of rows touches, read once at the start of its transaction.

    Person ids here are survivors (roots of the identity graph) as of the read.
    """

    decided: dict[str, tuple[str, str]] = field(default_factory=dict)  # row_id → (fingerprint, event id)
    key_owners: dict[str, str] = field(default_factory=dict)  # identity key → person
    near: dict[str, dict[str, list[tuple[str, str]]]] = field(
        default_factory=dict
    )  # block → near key → [(person, row_id)]
    created_order: dict[str, int] = field(default_factory=dict)  # person → creation order
    approvals: dict[str, dict[str, tuple[int, str]]] = field(
        default_factory=dict
    )  # person → type → (order, row)
    reviewed_pairs: list[tuple[str, str]] = field(default_factory=list)
    reserved: dict[str, int] = field(default_factory=dict)  # country → minor units reserved this cycle


def load_snapshot(
    session: Session,
    *,
    row_ids: Sequence[str],
    identity_keys: Sequence[str],
    block_keys: Sequence[str],
    countries: Sequence[str],
    cycle: str,
) -> Snapshot:
    snapshot = Snapshot()
    for chunk in _chunks(sorted(set(row_ids))):
        snapshot.decided.update(
            (row_id, (row_fingerprint, event_id))
            for row_id, row_fingerprint, event_id in session.execute(
                select(RowDecision.row_id, RowDecision.fingerprint, RowDecision.event_id).where(
                    one_of(session, RowDecision.row_id, chunk)
                )  # type: ignore[call-overload, attr-defined]
            )
        )
    for chunk in _chunks(sorted(set(identity_keys))):
        snapshot.key_owners.update(
            session.execute(
                select(IdentityKey.key, Person.survivor_id)  # type: ignore[call-overload]
                .join(Person, Person.person_id == IdentityKey.person_id)
                .where(one_of(session, IdentityKey.key, chunk))  # type: ignore[attr-defined]
            ).all()
        )
    for chunk in _chunks(sorted(set(block_keys))):
        rows = session.execute(
            select(NearSet.block_key, NearSet.near_keys, Person.survivor_id, NearSet.row_id)  # type: ignore[call-overload]
            .join(Person, Person.person_id == NearSet.person_id)
            .where(one_of(session, NearSet.block_key, chunk))  # type: ignore[attr-defined]
        ).all()
        for block_key, keys, survivor, row_id in rows:
            block = snapshot.near.setdefault(block_key, {})
            for near_key in keys.split():
                block.setdefault(near_key, []).append((survivor, row_id))
    # Standings, approvals and reviewed pairs are needed for the persons a row can resolve to: the
    # owners of its keys (persons made in the batch have none stored yet). A near match only
    # opens a review against the row's person, whose pairs are loaded with it; the persons of a
    # row's block (often hundreds) are not read further.
    persons = sorted(set(snapshot.key_owners.values()))
    member = aliased(Person)
    side_a = aliased(Person)
    side_b = aliased(Person)
    for chunk in _chunks(persons):
        snapshot.created_order.update(
            session.execute(
                select(Person.person_id, Person.id).where(one_of(session, Person.person_id, chunk))  # type: ignore[call-overload, attr-defined]
            ).all()
        )
        approvals = session.execute(
            select(member.survivor_id, Approval.assistance, Approval.id, Approval.row_id)  # type: ignore[call-overload]
            .join(member, member.person_id == Approval.person_id)
            .where(one_of(session, col(member.survivor_id), chunk), Approval.cycle == cycle)
        ).all()
        for person, assistance, order, row_id in approvals:
            earliest = snapshot.approvals.setdefault(person, {})
            if assistance not in earliest or order < earliest[assistance][0]:
                earliest[assistance] = (order, row_id)
        snapshot.reviewed_pairs.extend(
            session.execute(
                select(side_a.survivor_id, side_b.survivor_id)  # type: ignore[call-overload]
                .select_from(Review)
                .join(side_a, side_a.person_id == Review.person_a)
                .join(side_b, side_b.person_id == Review.person_b)
                .where(
                    or_(
                        one_of(session, col(side_a.survivor_id), chunk),
                        one_of(session, col(side_b.survivor_id), chunk),
                    )
                )
            ).all()
        )
    if countries:
        snapshot.reserved.update(
            session.execute(
                select(Budget.country, Budget.reserved_minor).where(  # type: ignore[call-overload]
                    Budget.cycle == cycle,
                    Budget.country.in_(sorted(set(countries))),  # type: ignore[attr-defined]
                )
            ).all()
        )
    snapshot.reviewed_pairs = list(dict.fromkeys(snapshot.reviewed_pairs))
    return snapshot


@dataclass
class BatchChanges:
    """Everything a batch decided, written at once at the end of its transaction."""

    persons: list[dict[str, Any]] = field(default_factory=list)
    identity_keys: list[dict[str, Any]] = field(default_factory=list)
    near_sets: list[dict[str, Any]] = field(default_factory=list)
    merges: list[dict[str, Any]] = field(default_factory=list)  # in the order they happened
    approvals: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    # (country, currency) → (minor units, approvals) reserved by the batch
    reservations: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


class BudgetOverrun(RuntimeError):
    """The stored reservations moved under a batch that held the writers' lock: never expected."""


def save_changes(
    session: Session, changes: BatchChanges, *, cycle: str, ceilings: Mapping[str, int], now: datetime
) -> None:
    """Write a batch's decisions; unique constraints still refuse a second approval or decision."""
    for country, currency in sorted(changes.reservations):
        amount, count = changes.reservations[(country, currency)]
        if not reserve_budget(
            session, country, cycle, currency, amount, ceilings.get(country), approvals=count
        ):
            raise BudgetOverrun(f"the {country} budget of cycle {cycle} cannot take {amount} more")
    for model, rows in (
        (Person, changes.persons),
        (IdentityKey, changes.identity_keys),
        (NearSet, changes.near_sets),
        (Approval, changes.approvals),
        (RowDecision, changes.decisions),
        (Review, changes.reviews),
    ):
        _insert_rows(session, model.__table__, rows)  # type: ignore[union-attr]
    _add_to_tally(session, PERSONS, len(changes.persons))
    survivors: list[str] = []
    for merge in changes.merges:
        merge_persons(session, now=now, **merge)
        survivors.append(merge["survivor_id"])
    for survivor in dict.fromkeys(survivors):
        close_reviews_made_moot(session, survivor, now)


# ---- identity --------------------------------------------------------------------------------


def standings(session: Session, person_ids: Iterable[str], cycle: str) -> dict[str, PersonStanding]:
    """Creation order and earliest approval (over every person merged into each) of surviving persons."""
    ids = list(dict.fromkeys(person_ids))
    if not ids:
        return {}
    created: dict[str, int] = dict(
        session.execute(
            select(Person.person_id, Person.id).where(one_of(session, Person.person_id, ids))  # type: ignore[call-overload, attr-defined]
        ).all()
    )
    member = aliased(Person)
    first_approvals: dict[str, int] = dict(
        session.execute(
            select(member.survivor_id, func.min(Approval.id))  # type: ignore[call-overload]
            .join(member, member.person_id == Approval.person_id)
            .where(one_of(session, col(member.survivor_id), ids), Approval.cycle == cycle)
            .group_by(member.survivor_id)
        ).all()
    )
    return {
        person_id: PersonStanding(person_id, int(created[person_id]), first_approvals.get(person_id))
        for person_id in ids
    }


def merge_persons(
    session: Session,
    survivor_id: str,
    merged_id: str,
    *,
    cause: str,
    now: datetime,
    row_id: str | None = None,
    review_id: str | None = None,
) -> None:
    """Fold `merged_id` (and everything already merged into it) into `survivor_id`."""
    session.execute(
        update(Person)
        .where(Person.survivor_id == merged_id)  # type: ignore[arg-type]
        .values(survivor_id=survivor_id)
    )
    folded = session.execute(
        update(Person)
        .where(Person.person_id == merged_id, Person.merged_into.is_(None))  # type: ignore[arg-type, union-attr]
        .values(merged_into=survivor_id, merged_at=now)
    )
    _add_to_tally(session, PERSONS, -folded.rowcount)  # type: ignore[attr-defined]
    session.execute(
        insert(Merge).values(
            survivor_person_id=survivor_id,
            merged_person_id=merged_id,
            cause=cause,
            row_id=row_id,
            review_id=review_id,
            merged_at=now,
        )
    )


def survivor_of(session: Session, person_id: str) -> str | None:
    return session.execute(
        select(Person.survivor_id).where(Person.person_id == person_id)  # type: ignore[call-overload]
    ).scalar_one_or_none()


def count_persons(session: Session) -> int:
    """Persons not merged into another: the kept count (a scan on a database that has none yet)."""
    kept = session.execute(select(Tally.value).where(Tally.name == PERSONS)).scalar_one_or_none()  # type: ignore[arg-type]
    return int(kept) if kept is not None else _scan_persons(session)


def _scan_persons(session: Session) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(Person).where(Person.merged_into.is_(None))  # type: ignore[union-attr]
        ).scalar_one()
    )


def _add_to_tally(session: Session, name: str, delta: int) -> None:
    if delta:
        session.execute(update(Tally).where(Tally.name == name).values(value=Tally.value + delta))  # type: ignore[arg-type]


def count_persons_if_missing(session: Session) -> bool:
    """Start the kept count of persons from a scan when there is none (a new database, or one from
    before the count was kept). The caller holds the writers' lock, so no batch adds persons
    between the scan and the insert. Returns whether it did."""
    if session.execute(select(Tally.value).where(Tally.name == PERSONS)).first() is not None:  # type: ignore[arg-type]
        return False
    table = Tally.__table__  # type: ignore[attr-defined]
    _insert_rows(session, table, [{"name": PERSONS, "value": _scan_persons(session)}], ignore_duplicates=True)
    return True


# ---- reviews ---------------------------------------------------------------------------------


def close_reviews_made_moot(session: Session, survivor_id: str, now: datetime) -> int:
    """Open reviews whose two persons are now one (an identity rule or another review merged them)."""
    side_a = aliased(Person)
    side_b = aliased(Person)
    moot = list(
        session.execute(
            select(Review.review_id)  # type: ignore[call-overload]
            .join(side_a, side_a.person_id == Review.person_a)
            .join(side_b, side_b.person_id == Review.person_b)
            .where(
                Review.status == "open",
                side_a.survivor_id == survivor_id,
                side_b.survivor_id == survivor_id,
            )
        ).scalars()
    )
    if moot:
        session.execute(
            update(Review)
            .where(one_of(session, Review.review_id, moot))  # type: ignore[attr-defined]
            .values(status="already_one_person", resolved_at=now)
        )
    return len(moot)


def get_review(session: Session, review_id: str) -> Review | None:
    return session.get(Review, review_id)


def list_reviews(session: Session, status: str | None, limit: int | None = None) -> list[Review]:
    query = select(Review).order_by(Review.created_at, Review.review_id).limit(limit)  # type: ignore[arg-type]
    if status is not None:
        query = query.where(Review.status == status)  # type: ignore[arg-type]
    return list(session.execute(query).scalars())


def review_history(session: Session, review_ids: Sequence[str]) -> dict[str, list[ReviewDecision]]:
    history: dict[str, list[ReviewDecision]] = {review_id: [] for review_id in review_ids}
    for chunk in _chunks(list(review_ids)):
        rows = session.execute(
            select(ReviewDecision)
            .where(one_of(session, ReviewDecision.review_id, chunk))  # type: ignore[attr-defined]
            .order_by(ReviewDecision.id)  # type: ignore[arg-type]
        ).scalars()
        for decision in rows:
            history[decision.review_id].append(decision)
    return history


def decisions_for_rows(session: Session, row_ids: Sequence[str]) -> dict[str, RowDecision]:
    found: dict[str, RowDecision] = {}
    for chunk in _chunks(sorted(set(row_ids))):
        for decision in session.execute(
            select(RowDecision).where(one_of(session, RowDecision.row_id, chunk))  # type: ignore[attr-defined]
        ).scalars():
            found[decision.row_id] = decision
    return found


def survivors_of(session: Session, person_ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(person_ids))):
        found.update(
            session.execute(
                select(Person.person_id, Person.survivor_id).where(one_of(session, Person.person_id, chunk))  # type: ignore[call-overload, attr-defined]
            ).all()
        )
    return found


def count_open_reviews(session: Session) -> int:
    return int(
        session.execute(select(func.count()).select_from(Review).where(Review.status == "open")).scalar_one()  # type: ignore[arg-type]
    )


# ---- budget ----------------------------------------------------------------------------------


def budget_reserved(session: Session, country: str, cycle: str) -> int:
    reserved = session.execute(
        select(Budget.reserved_minor).where(Budget.country == country, Budget.cycle == cycle)  # type: ignore[call-overload]
    ).scalar_one_or_none()
    return int(reserved or 0)


def reserve_budget(
    session: Session,
    country: str,
    cycle: str,
    currency: str,
    amount_minor: int,
    ceiling_minor: int | None,
    *,
    approvals: int = 1,
) -> bool:
    """Add approved amounts to the country's reservations unless they would pass the ceiling."""
    _insert_rows(
        session,
        Budget.__table__,  # type: ignore[attr-defined]
        [{"country": country, "cycle": cycle, "currency": currency, "reserved_minor": 0, "approvals": 0}],
        ignore_duplicates=True,
    )
    statement = (
        update(Budget)
        .where(Budget.country == country, Budget.cycle == cycle)  # type: ignore[arg-type]
        .values(reserved_minor=Budget.reserved_minor + amount_minor, approvals=Budget.approvals + approvals)
    )
    if ceiling_minor is not None:
        statement = statement.where(col(Budget.reserved_minor) + amount_minor <= ceiling_minor)
    result = session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]
