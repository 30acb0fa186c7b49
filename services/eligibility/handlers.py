"""Eligibility handlers: one per incoming message or command.

Each loads what the domain needs from the store, calls the domain, saves the outcome and returns
the events to publish; `Eligibility` wraps them in one transaction with the writers' lock, the
processed-event record and the outbox, and counts what happened once the transaction committed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.eligibility import domain, store
from shared.auth import Principal
from shared.db import serialise_writers, transaction
from shared.events import BeneficiaryRegistered, EligibilityDecided, Event, PersonsMerged, utc_now
from shared.logging import get_logger
from shared.outbox import add_to_outbox

log = get_logger(__name__)

CONSUMER = "eligibility"
IDENTITY_LOCK = "eligibility-identity"
# Ids derived from what they name, so a rebuilt database replaying the topic issues the same ids.
_NAMESPACE = uuid.UUID("6f0d7a3e-3c1b-4a53-9a57-2f3f1c2b9e41")
_NAMESPACE_BYTES = _NAMESPACE.bytes

Message = tuple[str, str | None, Event]


def derived_id(*parts: str) -> str:
    """`str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))`, the same text at half the cost (two per
    row): SHA-1 of namespace and name, version and variant bits set, formatted without a UUID."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class RowConflict(Exception):
    """A row id arrived again with different content: never decided twice, so it is dead-lettered."""


@dataclass(frozen=True)
class DecisionContext:
    """Settings values the decisions depend on, passed in once from the app."""

    policy: domain.Policy
    cycle: str
    budget_ceilings: Mapping[str, int]
    decided_topic: str


@dataclass
class BatchOutcome:
    messages: list[Message] = field(default_factory=list)
    decisions: Tally[tuple[str, str]] = field(default_factory=Tally)
    merges: Tally[str] = field(default_factory=Tally)
    flags: int = 0
    rows_seen_again: int = 0


# What a fingerprint leaves out: the event's own id and time; the sealed payout account (sealing
# is randomised, so the same account sealed twice differs); the block key, which version 1 rows
# lack (a row decided from version 1 and delivered again after the upgrade keeps its fingerprint).
FINGERPRINT_EXCLUDES = frozenset({"event_id", "occurred_at", "payout_account_sealed", "block_key"})
_FINGERPRINTED = tuple(sorted(set(BeneficiaryRegistered.model_fields) - FINGERPRINT_EXCLUDES))


def fingerprint(event: BeneficiaryRegistered) -> str:
    """A digest of what the decision depends on, to tell a redelivered row from a modified one.

    SHA-256 of the row's other fields as sorted-key JSON, lists sorted: the bytes of
    `orjson.dumps(event.model_dump(mode="json", exclude=FINGERPRINT_EXCLUDES), OPT_SORT_KEYS)`
    (every field is text, a number, a list of text or a date, which orjson writes as pydantic
    does), without building the dump (half the cost; stored fingerprints stay valid).
    """
    fields = vars(event)
    body = {name: fields[name] for name in _FINGERPRINTED}
    body["near_keys"] = sorted(event.near_keys)
    body["vulnerabilities"] = sorted(event.vulnerabilities)
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---- beneficiary.registered ------------------------------------------------------------------

# Orders given to persons and approvals made inside a batch sort after everything stored before.
_IN_BATCH = 1 << 62


def decide_registrations(
    session: Session,
    events: Sequence[BeneficiaryRegistered],
    context: DecisionContext,
    now: datetime,
) -> BatchOutcome:
    """Resolve identity and decide each new row, in order; the caller holds the writers' lock.

    The stored state the rows touch is read once, kept up to date in memory while the rows are
    decided one after the other, and written once: the same decisions as row-by-row queries,
    with a handful of statements per batch instead of a dozen per row.
    """
    outcome = BatchOutcome()
    # Each row is decided once (its decision is keyed by row id), so the decision table is the
    # record of what was processed: an event delivered again, even within this batch, finds its
    # own event id there (`_Batch.decide`).
    if not events:
        return outcome
    snapshot = store.load_snapshot(
        session,
        row_ids=[r.row_id for r in events],
        identity_keys=[key for r in events for key in (r.document_key, r.name_key) if key],
        block_keys=[r.block_key for r in events if r.block_key],
        countries=[r.country for r in events if r.assistance == context.policy.cash_assistance],
        cycle=context.cycle,
    )
    batch = _Batch(snapshot, context, now, outcome)
    for event in events:
        batch.decide(event)
    store.save_changes(session, batch.changes, cycle=context.cycle, ceilings=context.budget_ceilings, now=now)
    return outcome


class _Batch:
    """The identity graph, approvals and budgets a batch touches, kept current as rows are decided."""

    def __init__(
        self, snapshot: store.Snapshot, context: DecisionContext, now: datetime, outcome: BatchOutcome
    ) -> None:
        self.snapshot = snapshot
        self.context = context
        self.now = now
        self.outcome = outcome
        self.changes = store.BatchChanges()
        self.merged_into: dict[str, str] = {}  # merges made by this batch
        self.counter = 0

    def _next_order(self) -> int:
        self.counter += 1
        return _IN_BATCH + self.counter

    def find(self, person_id: str) -> str:
        while person_id in self.merged_into:
            person_id = self.merged_into[person_id]
        return person_id

    def _standing(self, person_id: str) -> domain.PersonStanding:
        approvals = self.snapshot.approvals.get(person_id, {})
        first = min((order for order, _ in approvals.values()), default=None)
        return domain.PersonStanding(person_id, self.snapshot.created_order[person_id], first)

    def decide(self, event: BeneficiaryRegistered) -> None:
        earlier = self.snapshot.decided.get(event.row_id)
        if earlier is not None and earlier[1] == event.event_id:
            return  # the same event delivered again: decided already, nothing to count
        row_fingerprint = fingerprint(event)
        if earlier is not None:
            if earlier[0] != row_fingerprint:
                raise RowConflict(f"row {event.row_id} was decided before with different content")
            self.outcome.rows_seen_again += 1
            log.info("row_seen_again", row_id=event.row_id, event_id=event.event_id)
            return
        self.snapshot.decided[event.row_id] = (row_fingerprint, event.event_id)
        person_id = self._resolve_person(event)
        self._flag_near_misses(event, person_id)
        verdict = self._evaluate(event, person_id)
        self._record(event, person_id, verdict, row_fingerprint)

    def _resolve_person(self, event: BeneficiaryRegistered) -> str:
        row = domain.RowIdentity(event.document_key, event.name_key, tuple(event.near_keys))
        owners = self.snapshot.key_owners
        known = {key: self.find(owners[key]) for key in row.identity_keys if key in owners}
        persons = {person_id: self._standing(person_id) for person_id in set(known.values())}
        plan = domain.resolve_identity(row, known, persons, derived_id("person", event.row_id))
        if plan.is_new_person:
            self.snapshot.created_order[plan.person_id] = self._next_order()
            self.changes.persons.append(
                {
                    "person_id": plan.person_id,
                    "survivor_id": plan.person_id,
                    "merged_into": None,
                    "created_row_id": event.row_id,
                    "created_at": self.now,
                }
            )
        for merge in plan.merges:
            self._merge(merge, event.row_id)
        kinds = {event.document_key: "document", event.name_key: "name"}
        for key in plan.keys_to_attach:
            owners[key] = plan.person_id
            self.changes.identity_keys.append(
                {"key": key, "kind": kinds[key], "person_id": plan.person_id, "row_id": event.row_id}
            )
        return plan.person_id

    def _merge(self, merge: domain.Merge, row_id: str) -> None:
        survivor, merged = merge.survivor_person_id, merge.merged_person_id
        self.merged_into[merged] = survivor
        # The survivor keeps the earliest approval of each type: never a second one.
        kept = self.snapshot.approvals.setdefault(survivor, {})
        for assistance, approval in self.snapshot.approvals.pop(merged, {}).items():
            if assistance not in kept or approval[0] < kept[assistance][0]:
                kept[assistance] = approval
        self.changes.merges.append(
            {
                "survivor_id": survivor,
                "merged_id": merged,
                "cause": "identity_rule",
                "row_id": row_id,
                "review_id": None,
            }
        )
        self.outcome.messages.append(
            (self.context.decided_topic, survivor, _persons_merged(merge, "identity_rule", None, self.now))
        )
        self.outcome.merges["identity_rule"] += 1
        log.info(
            "persons_merged", cause="identity_rule", row_id=row_id,
            survivor_person_id=survivor, merged_person_id=merged,
        )  # fmt: skip

    def _flag_near_misses(self, event: BeneficiaryRegistered, person_id: str) -> None:
        """Flag other persons of the row's block sharing a near key with it, then file its keys.

        A version 1 row has no block: it is neither compared nor filed.
        """
        if event.block_key is None:
            return
        block = self.snapshot.near.setdefault(event.block_key, {})
        near_keys = list(dict.fromkeys(event.near_keys))
        # One pass over the filed entries: keys the person already holds, and the other persons
        # met (rare: most entries are the person's own earlier spellings).
        find = self.find
        held: set[str] = set()
        others: list[domain.NearMatch] = []
        for near_key in near_keys:
            for other, row_id in block.get(near_key, ()):
                owner = find(other)
                if owner == person_id:
                    held.add(near_key)
                else:
                    others.append(domain.NearMatch(owner, row_id))
        if others:
            self._flag(event, person_id, others)
        # Keys the person already holds in this block add nothing: the same name registered again
        # (the usual duplicate) writes no near-key row.
        new_keys = [near_key for near_key in near_keys if near_key not in held]
        if not new_keys:
            return
        for near_key in new_keys:
            block.setdefault(near_key, []).append((person_id, event.row_id))
        self.changes.near_sets.append(
            {
                "block_key": event.block_key,
                "row_id": event.row_id,
                "person_id": person_id,
                "near_keys": " ".join(new_keys),
            }
        )

    def _flag(self, event: BeneficiaryRegistered, person_id: str, matches: list[domain.NearMatch]) -> None:
        """Open a review for each other person matched, unless the two were paired before.

        Only called for a row that matched another person (rare): the pairs are scanned then.
        """
        reviewed: set[str] = set()
        for side_a, side_b in self.snapshot.reviewed_pairs:
            found_a, found_b = self.find(side_a), self.find(side_b)
            if found_a == person_id:
                reviewed.add(found_b)
            elif found_b == person_id:
                reviewed.add(found_a)
        for match in domain.possible_duplicates(person_id, matches, reviewed):
            review_id = derived_id("review", match.person_id, event.row_id)
            self.changes.reviews.append(
                {
                    "review_id": review_id,
                    "person_a": match.person_id,
                    "row_a": match.row_id,
                    "person_b": person_id,
                    "row_b": event.row_id,
                    "country": event.country,
                    "status": "open",
                    "created_at": self.now,
                }
            )
            self.snapshot.reviewed_pairs.append((match.person_id, person_id))
            self.outcome.flags += 1
            log.info(
                "possible_duplicate_flagged",
                review_id=review_id,
                row_id=event.row_id,
                other_row_id=match.row_id,
            )

    def _evaluate(self, event: BeneficiaryRegistered, person_id: str) -> domain.Verdict:
        policy, cycle = self.context.policy, self.context.cycle
        is_cash = event.assistance == policy.cash_assistance
        approvals = self.snapshot.approvals.setdefault(person_id, {})
        prior = approvals.get(event.assistance)
        ceiling = self.context.budget_ceilings.get(event.country) if is_cash else None
        reserved = self.snapshot.reserved.get(event.country, 0)
        verdict = domain.evaluate(
            domain.Applicant(
                assistance=event.assistance,
                age_years=event.age_years,
                vulnerabilities=tuple(event.vulnerabilities),
                country=event.country,
                household_size=event.household_size,
            ),
            policy,
            prior_approval=prior[1] if prior else None,
            budget_remaining_minor=None if ceiling is None else ceiling - reserved,
        )
        if not verdict.approves:
            return verdict
        amount = verdict.amount
        if amount is not None:
            self.snapshot.reserved[event.country] = reserved + amount.amount_minor
            key = (event.country, amount.currency)
            total, count = self.changes.reservations.get(key, (0, 0))
            self.changes.reservations[key] = (total + amount.amount_minor, count + 1)
        approvals[event.assistance] = (self._next_order(), event.row_id)
        self.changes.approvals.append(
            {
                "person_id": person_id,
                "cycle": cycle,
                "assistance": event.assistance,
                "row_id": event.row_id,
                "country": event.country,
                "amount_minor": amount.amount_minor if amount else None,
                "currency": amount.currency if amount else None,
                "approved_at": self.now,
            }
        )
        return verdict

    def _record(
        self, event: BeneficiaryRegistered, person_id: str, verdict: domain.Verdict, row_fingerprint: str
    ) -> None:
        context = self.context
        amount_minor = verdict.amount.amount_minor if verdict.amount else None
        currency = verdict.amount.currency if verdict.amount else None
        self.changes.decisions.append(
            {
                "row_id": event.row_id,
                "event_id": event.event_id,
                "fingerprint": row_fingerprint,
                "batch_id": event.batch_id,
                "partner_id": event.partner_id,
                "partner_name": event.partner_name,
                "country": event.country,
                "assistance": event.assistance,
                "person_id": person_id,
                "decision": verdict.decision,
                "reasons": " ".join(verdict.reasons),
                "policy_version": context.policy.version,
                "cycle": context.cycle,
                "amount_minor": amount_minor,
                "currency": currency,
                "duplicate_of": verdict.duplicate_of,
                "decided_at": self.now,
            }
        )
        decided = EligibilityDecided(
            event_id=derived_id("decided", event.row_id),
            occurred_at=self.now,
            row_id=event.row_id,
            batch_id=event.batch_id,
            partner_id=event.partner_id,
            partner_name=event.partner_name,
            person_id=person_id,
            decision=verdict.decision,
            reasons=list(verdict.reasons),
            policy_version=context.policy.version,
            cycle=context.cycle,
            assistance=event.assistance,
            country=event.country,
            sex=event.sex,
            age_years=event.age_years,
            household_size=event.household_size,
            registered_on=event.registered_on,
            amount_minor=amount_minor,
            currency=currency,
            payout_method=event.payout_method,
            payout_account_sealed=event.payout_account_sealed,
            duplicate_of=verdict.duplicate_of,
        )
        self.outcome.messages.append((context.decided_topic, person_id, decided))
        for reason in verdict.reasons or ("none",):
            self.outcome.decisions[(verdict.decision, reason)] += 1


def _persons_merged(
    merge: domain.Merge, cause: domain.MergeCause, review_id: str | None, now: datetime
) -> PersonsMerged:
    return PersonsMerged(
        event_id=derived_id("merged", merge.survivor_person_id, merge.merged_person_id),
        occurred_at=now,
        survivor_person_id=merge.survivor_person_id,
        merged_person_id=merge.merged_person_id,
        cause=cause,
        review_id=review_id,
    )


# ---- review commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewResolved:
    review: dict[str, Any]
    merge: PersonsMerged | None
    messages: list[Message]


class ReviewNotFound(domain.ReviewError):
    def __init__(self, review_id: str) -> None:
        super().__init__("review_not_found", f"no review {review_id!r}")


def resolve_review(
    session: Session,
    review_id: str,
    resolution: str,
    reason: str,
    principal: Principal,
    context: DecisionContext,
    now: datetime,
) -> ReviewResolved:
    """A reviewer's decision on a flag; `same_person` merges exactly like an identity rule would."""
    review = store.get_review(session, review_id)
    if review is None:
        raise ReviewNotFound(review_id)
    survivor_a = store.survivor_of(session, review.person_a) or review.person_a
    survivor_b = store.survivor_of(session, review.person_b) or review.person_b
    decision = domain.resolve_review(resolution, reason, already_one_person=survivor_a == survivor_b)
    messages: list[Message] = []
    merged_event: PersonsMerged | None = None
    if decision.merge:
        persons = store.standings(session, [survivor_a, survivor_b], context.cycle)
        survivor = domain.choose_survivor(persons.values())
        merged = survivor_b if survivor.person_id == survivor_a else survivor_a
        merge = domain.Merge(survivor.person_id, merged)
        store.merge_persons(
            session, merge.survivor_person_id, merged, cause="review", now=now, review_id=review_id
        )
        merged_event = _persons_merged(merge, "review", review_id, now)
        messages = [(context.decided_topic, merge.survivor_person_id, merged_event)]
        log.info(
            "persons_merged", cause="review", review_id=review_id,
            survivor_person_id=survivor.person_id, merged_person_id=merged,
        )  # fmt: skip
    review.status = decision.status
    review.reason = reason.strip()
    review.resolved_by = principal.partner_id
    review.resolved_by_name = principal.name
    review.resolved_at = now
    session.add(review)
    session.flush()
    if merged_event is not None:
        store.close_reviews_made_moot(session, merged_event.survivor_person_id, now)
    session.add(
        store.ReviewDecision(
            review_id=review_id,
            resolution=resolution,
            reason=reason.strip(),
            decided_by=principal.partner_id,
            decided_by_name=principal.name,
            decided_at=now,
            merged=decision.merge,
        )
    )
    session.flush()
    log.info("review_resolved", review_id=review_id, resolution=resolution, decided_by=principal.partner_id)
    return ReviewResolved(describe_reviews(session, [review])[0], merged_event, messages)


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC; databases hand stored times back without their zone."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def describe_reviews(session: Session, reviews: Sequence[store.Review]) -> list[dict[str, Any]]:
    """Reviews as the API shows them: both persons and rows, partners, country, decision history."""
    rows = store.decisions_for_rows(session, [r.row_a for r in reviews] + [r.row_b for r in reviews])
    history = store.review_history(session, [r.review_id for r in reviews])
    survivors = store.survivors_of(session, [p for r in reviews for p in (r.person_a, r.person_b)])
    described = []
    for review in reviews:
        sides = []
        for person_id, row_id in ((review.person_a, review.row_a), (review.person_b, review.row_b)):
            row = rows.get(row_id)
            sides.append(
                {
                    "person_id": person_id,
                    "current_person_id": survivors.get(person_id, person_id),
                    "row_id": row_id,
                    "batch_id": row.batch_id if row else None,
                    "partner_id": row.partner_id if row else None,
                    "partner_name": row.partner_name if row else None,
                    "country": row.country if row else None,
                    "assistance": row.assistance if row else None,
                    "decision": row.decision if row else None,
                }
            )
        described.append(
            {
                "review_id": review.review_id,
                "status": review.status,
                "country": review.country,
                "person_ids": [review.person_a, review.person_b],
                "row_ids": [review.row_a, review.row_b],
                "partners": sorted({side["partner_name"] for side in sides if side["partner_name"]}),
                "rows": sides,
                "created_at": _iso(review.created_at),
                "reason": review.reason,
                "resolved_by": review.resolved_by,
                "resolved_by_name": review.resolved_by_name,
                "resolved_at": _iso(review.resolved_at),
                "history": [
                    {
                        "resolution": item.resolution,
                        "reason": item.reason,
                        "decided_by": item.decided_by,
                        "decided_by_name": item.decided_by_name,
                        "decided_at": _iso(item.decided_at),
                        "merged": item.merged,
                    }
                    for item in history.get(review.review_id, [])
                ],
            }
        )
    return described


# ---- the unit of work around the handlers ----------------------------------------------------


class EligibilityMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "relief_eligibility_decisions_total",
            "Rows decided, by decision and reason (a row with several reasons counts under each; "
            "reason 'none' for a row without any)",
            ["decision", "reason"],
            registry=registry,
        )
        self.persons = Gauge(
            "relief_eligibility_persons",
            "Distinct persons known after identity resolution",
            registry=registry,
        )
        self.merges = Counter(
            "relief_eligibility_merges_total",
            "Persons merged into another, by cause",
            ["cause"],
            registry=registry,
        )
        self.review_flags = Counter(
            "relief_eligibility_review_flags_total",
            "Possible duplicates flagged for review",
            registry=registry,
        )
        self.reviews_open = Gauge(
            "relief_eligibility_reviews_open", "Possible duplicates waiting for a reviewer", registry=registry
        )
        self.rows_seen_again = Counter(
            "relief_eligibility_rows_seen_again_total",
            "Rows that arrived again under a new event id and were not decided a second time",
            registry=registry,
        )


class Eligibility:
    """Runs the handlers in transactions: writers' lock first, outbox in the same transaction."""

    def __init__(
        self,
        engine: Engine,
        context: DecisionContext,
        metrics: EligibilityMetrics,
        *,
        clock: Callable[[], datetime] = utc_now,
        reader: Engine | None = None,
    ) -> None:
        self.engine = engine
        self.reader = reader or engine  # for the gauges, read after each batch outside its lock
        self.context = context
        self.metrics = metrics
        self.clock = clock

    def start_counts(self) -> bool:
        """Start the kept person count (under the writers' lock) if the database has none."""
        with transaction(self.engine) as session:
            serialise_writers(session, IDENTITY_LOCK)
            return store.count_persons_if_missing(session)

    def apply(self, events: Sequence[Event]) -> None:
        """The consumer's batch function: one transaction for the whole batch."""
        registrations = [event for event in events if isinstance(event, BeneficiaryRegistered)]
        if not registrations:
            return
        with transaction(self.engine) as session:
            # Replicas resolve identity one after the other; the lock is released at commit.
            serialise_writers(session, IDENTITY_LOCK)
            outcome = decide_registrations(session, registrations, self.context, self.clock())
            add_to_outbox(session, outcome.messages)
        for (decision, reason), count in outcome.decisions.items():
            self.metrics.decisions.labels(decision, reason).inc(count)
        for cause, count in outcome.merges.items():
            self.metrics.merges.labels(cause).inc(count)
        if outcome.flags:
            self.metrics.review_flags.inc(outcome.flags)
        if outcome.rows_seen_again:
            self.metrics.rows_seen_again.inc(outcome.rows_seen_again)
        # Read after the commit, outside the writers' lock: the person count is kept (one row),
        # open reviews are few. The batch is committed by now, so a failed read must not fail it
        # (a retry would count its decisions again, an error would dead-letter decided rows): the
        # gauges keep their values until the next batch or the periodic refresh.
        try:
            with Session(self.reader) as session:
                persons = store.count_persons(session)
                reviews_open = store.count_open_reviews(session)
        except Exception as error:
            log.warning("gauge_read_failed", error=type(error).__name__)
            return
        self.metrics.persons.set(persons)
        self.metrics.reviews_open.set(reviews_open)

    def list_reviews(self, status: str | None, limit: int | None = None) -> list[dict[str, Any]]:
        with transaction(self.engine) as session:
            return describe_reviews(session, store.list_reviews(session, status, limit))

    def resolve_review(
        self, review_id: str, resolution: str, reason: str, principal: Principal
    ) -> ReviewResolved:
        with transaction(self.engine) as session:
            serialise_writers(session, IDENTITY_LOCK)
            resolved = resolve_review(
                session, review_id, resolution, reason, principal, self.context, self.clock()
            )
            add_to_outbox(session, resolved.messages)
            persons = store.count_persons(session)
            reviews_open = store.count_open_reviews(session)
        if resolved.merge is not None:
            self.metrics.merges.labels("review").inc()
        self.metrics.persons.set(persons)
        self.metrics.reviews_open.set(reviews_open)
        return resolved

    def refresh_gauges(self) -> None:
        with transaction(self.engine) as session:
            persons = store.count_persons(session)
            reviews_open = store.count_open_reviews(session)
        self.metrics.persons.set(persons)
        self.metrics.reviews_open.set(reviews_open)
