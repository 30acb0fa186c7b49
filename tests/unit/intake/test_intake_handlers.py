"""Intake's handlers on a real SQLite database: one transaction per file, idempotency, progress."""

from __future__ import annotations

import hashlib
import io
import random
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session, delete, select

from services.intake import handlers, store
from services.intake.domain import TEMPLATE_COLUMNS, FileRefused
from shared.auth import AuthError
from shared.db import create_tables, make_engine, transaction
from shared.events import EligibilityDecided, PaymentStatusChanged, PersonsMerged, parse_event
from shared.identity import IdentityHasher
from shared.outbox import OUTBOX_TABLES, StagedMessage, staged_messages
from shared.sealing import Sealer

IDENTITY_SECRET = "unit-test-identity-secret-0123"  # noqa: S105 - a test value, not a credential
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HEADER = ",".join(TEMPLATE_COLUMNS)


def line(ref: str, given: str = "Siti", **changes: str) -> str:
    cells = dict(
        partner_ref=ref,
        given_name=given,
        family_name="Aminah",
        sex="F",
        date_of_birth="1990-07-31",
        nationality="IDN",
        country="MY",
        id_type="passport",
        id_number=f"A{abs(hash(ref)) % 10**7}",
        phone="+60123456789",
        household_size="2",
        vulnerabilities="job_loss",
        consent="yes",
        assistance="cash_relief",
        payout_method="e_wallet",
        payout_account="EW-1",
        registered_on="2026-01-05",
    )
    cells.update(changes)
    return ",".join(cells[column] for column in TEMPLATE_COLUMNS)


def csv_upload(*lines: str) -> handlers.Upload:
    data = (HEADER + "\n" + "\n".join(lines) + "\n").encode()
    return handlers.Upload(io.BytesIO(data), "csv", hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture
def context(tmp_path):
    yield from _context(f"sqlite:///{tmp_path / 'intake.db'}")


@pytest.fixture(params=["sqlite", "postgres"])
def either_context(request, tmp_path, test_id):
    """The context on SQLite, then on a real PostgreSQL (bulk statements differ between the two)."""
    if request.param == "sqlite":
        yield from _context(f"sqlite:///{tmp_path / 'intake.db'}")
    else:
        cluster = request.getfixturevalue("postgres")
        yield from _context(f"postgresql+psycopg://relief@127.0.0.1:{cluster.port}/t{test_id}")


def _context(url):
    engine = make_engine(url)
    create_tables(engine, [*store.TABLES, *OUTBOX_TABLES])
    yield handlers.IntakeContext(
        engine=engine,
        hasher=IdentityHasher(IDENTITY_SECRET),
        sealer=Sealer(IDENTITY_SECRET),
        topic="t.beneficiary.registered",
        max_rows=50,
        metrics=handlers.intake_metrics(CollectorRegistry()),
        chunk_rows=2,
    )
    engine.dispose()


def add_partner(context, name="CSO One", role="partner"):
    with transaction(context.engine) as session:
        partner, key = handlers.register_partner(session, name=name, role=role, now=NOW)
    return handlers.authenticate(context.engine, f"Bearer {key}"), key


def submit(context, principal, upload, key=None):
    return handlers.submit_batch(context, principal, upload, idempotency_key=key, now=NOW)


def outbox(context) -> list[StagedMessage]:
    with Session(context.engine) as session:
        return staged_messages(session)


# ---- keys --------------------------------------------------------------------------------------------


def test_a_new_key_authenticates_and_only_its_hash_is_stored(context):
    principal, key = add_partner(context, name="CSO One")
    assert (principal.name, principal.role) == ("CSO One", "partner")
    with Session(context.engine) as session:
        partner = session.get(store.Partner, principal.partner_id)
    assert key.split("_", 2)[2] not in (partner.key_hash, partner.salt)


@pytest.mark.parametrize(
    "header", [None, "", "Basic abc", "Bearer ", "Bearer rk_nobody_secret", "Bearer not-a-key"]
)
def test_a_missing_malformed_or_unknown_key_is_401(context, header):
    with pytest.raises(AuthError) as refused:
        handlers.authenticate(context.engine, header)
    assert refused.value.status == 401


def test_a_wrong_secret_for_a_real_partner_is_401(context):
    principal, key = add_partner(context)
    with pytest.raises(AuthError) as refused:
        handlers.authenticate(context.engine, f"Bearer {key}x")
    assert refused.value.status == 401


def test_a_revoked_key_is_401(context):
    principal, key = add_partner(context)
    with transaction(context.engine) as session:
        assert handlers.revoke_partner(session, principal.partner_id, now=NOW)
        assert not handlers.revoke_partner(session, "pnobody", now=NOW)
    with pytest.raises(AuthError) as refused:
        handlers.authenticate(context.engine, f"Bearer {key}")
    assert refused.value.status == 401


def test_a_finance_key_is_403_where_a_partner_key_is_needed(context):
    _, key = add_partner(context, name="Finance", role="finance")
    with pytest.raises(AuthError) as refused:
        handlers.authenticate(context.engine, f"Bearer {key}", role="partner")
    assert refused.value.status == 403


# ---- batches ------------------------------------------------------------------------------------------


def test_accepted_rows_and_their_events_are_stored_together(context):
    principal, _ = add_partner(context)
    receipt = submit(
        context, principal, csv_upload(line("R1"), line("R2", sex="?"), line("R3", given="Budi"))
    )
    assert (receipt.accepted, receipt.rejected) == (2, 1)
    assert [(e.row, e.column, e.code) for e in receipt.errors] == [(2, "sex", "invalid_choice")]
    messages = outbox(context)
    events = [parse_event(m.payload) for m in messages]
    assert [e.row_id for e in events] == [f"{receipt.batch_id}-1", f"{receipt.batch_id}-3"]
    assert all(m.topic == "t.beneficiary.registered" for m in messages)
    assert [m.key for m in messages] == [e.document_key for e in events]
    assert b"Siti" not in messages[0].payload and b"EW-1" not in messages[0].payload
    assert Sealer(IDENTITY_SECRET).open(events[0].payout_account_sealed) == "EW-1"
    with Session(context.engine) as session:
        stored = session.exec(select(store.Beneficiary).order_by(store.Beneficiary.row_number)).all()
    assert [(b.partner_ref, b.given_name) for b in stored] == [("R1", "Siti"), ("R3", "Budi")]
    assert stored[0].payout_account_sealed == events[0].payout_account_sealed


def test_a_refused_file_leaves_nothing_behind(context):
    principal, _ = add_partner(context)
    too_many = csv_upload(*(line(f"R{i}") for i in range(51)))  # chunks of 2 were already written
    with pytest.raises(FileRefused) as refused:
        submit(context, principal, too_many)
    assert refused.value.code == "too_many_rows"
    assert outbox(context) == []
    with Session(context.engine) as session:
        assert session.exec(select(store.Batch)).all() == []
        assert session.exec(select(store.Beneficiary)).all() == []


def test_a_partner_ref_is_unique_within_the_file_and_across_batches(context):
    principal, _ = add_partner(context)
    other, _ = add_partner(context, name="CSO Two")
    first = submit(context, principal, csv_upload(line("R1"), line("R2"), line("R1", given="Budi")))
    assert [(e.row, e.code) for e in first.errors] == [(3, "duplicate_partner_ref")]
    assert "row 1 of this file" in first.errors[0].message
    second = submit(context, principal, csv_upload(line("R2"), line("R4")))
    assert (second.accepted, [(e.row, e.code) for e in second.errors]) == (1, [(1, "duplicate_partner_ref")])
    assert "earlier batch" in second.errors[0].message
    assert submit(context, other, csv_upload(line("R1"))).accepted == 1  # another partner's refs are its own


def test_consent_no_keeps_nothing_of_the_row(context):
    principal, _ = add_partner(context)
    receipt = submit(
        context, principal, csv_upload(line("R1"), line("SECRETREF", given="Hidden", consent="no"))
    )
    assert [(e.row, e.column, e.code) for e in receipt.errors] == [(2, "consent", "consent_refused")]
    with Session(context.engine) as session:
        refs = session.exec(select(store.Beneficiary.partner_ref)).all()
        messages = [r.message for r in session.exec(select(store.RowRejection))]
    assert refs == ["R1"]
    assert not any("Hidden" in m or "SECRETREF" in m for m in messages)
    assert len(outbox(context)) == 1


def test_the_same_key_and_body_returns_the_first_receipt(context):
    principal, _ = add_partner(context)
    first = submit(context, principal, csv_upload(line("R1"), line("R2", sex="?")), key="k-1")
    again = submit(context, principal, csv_upload(line("R1"), line("R2", sex="?")), key="k-1")
    assert again.replayed and not first.replayed
    assert (again.batch_id, again.accepted, again.rejected, again.errors) == (
        first.batch_id,
        first.accepted,
        first.rejected,
        first.errors,
    )
    assert len(outbox(context)) == 1


def test_the_same_key_with_another_body_is_a_conflict(context):
    principal, _ = add_partner(context)
    submit(context, principal, csv_upload(line("R1")), key="k-1")
    with pytest.raises(handlers.IdempotencyConflict):
        submit(context, principal, csv_upload(line("R9")), key="k-1")
    other, _ = add_partner(context, name="CSO Two")
    assert not submit(context, other, csv_upload(line("R9")), key="k-1").replayed  # keys are per partner


def test_registration_dates_are_checked_against_the_latest_date_anywhere():
    late_evening_utc = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # already 2 March in Kiribati
    assert handlers.latest_calendar_date(late_evening_utc).isoformat() == "2026-03-02"


# ---- progress -------------------------------------------------------------------------------------------


def decided(row_id, decision, minutes=0, assistance="cash_relief"):
    return EligibilityDecided(
        row_id=row_id,
        batch_id="b",
        partner_id="p",
        partner_name="CSO",
        person_id=f"person-{row_id}",
        decision=decision,
        reasons=[],
        policy_version="v1",
        cycle="C1",
        assistance=assistance,
        country="MY",
        sex="F",
        age_years=30,
        household_size=2,
        registered_on="2026-01-05",
        occurred_at=NOW + timedelta(minutes=minutes),
    )


def paid(row_id, status, sequence):
    return PaymentStatusChanged(
        payment_ref=f"pay-{row_id}",
        person_id="x",
        row_id=row_id,
        batch_id="b",
        partner_id="p",
        cycle="C1",
        country="MY",
        amount_minor=100,
        currency="MYR",
        status=status,
        sequence=sequence,
    )


def test_downstream_decisions_and_payments_become_batch_progress(context):
    principal, _ = add_partner(context)
    receipt = submit(
        context, principal, csv_upload(*(line(f"R{i}") for i in range(1, 6)), line("R6", sex="?"))
    )
    rows = [f"{receipt.batch_id}-{i}" for i in range(1, 6)]
    late = decided(rows[3], "eligible", minutes=5)
    handlers.apply_decisions(
        context.engine,
        [
            decided(rows[0], "eligible"),
            decided(rows[1], "eligible"),
            decided(rows[2], "duplicate"),
            late,
            PersonsMerged(survivor_person_id="a", merged_person_id="b", cause="identity_rule"),
        ],
    )
    handlers.apply_decisions(
        context.engine, [decided(rows[3], "ineligible", minutes=1), late]
    )  # older and replayed
    handlers.apply_payments(context.engine, [paid(rows[0], "sent", 2), paid(rows[0], "pending", 1)])
    handlers.apply_payments(context.engine, [paid(rows[0], "paid", 3), paid(rows[1], "pending_approval", 1)])
    handlers.apply_payments(context.engine, [paid(rows[0], "sent", 2)])  # a late, older status

    report = handlers.batch_report(context.engine, principal, receipt.batch_id)
    progress = report.progress
    assert (progress.accepted, progress.rejected) == (5, 1)
    assert (progress.eligible, progress.ineligible, progress.duplicate) == (3, 0, 1)
    assert (progress.paid, progress.pending_approval, progress.final, progress.pending) == (1, 1, 2, 2)
    assert [(e.row, e.column) for e in report.errors] == [(6, "sex")]
    overall = handlers.programme_progress(context.engine)
    assert (overall.accepted, overall.final, overall.pending, overall.pending_approval) == (5, 2, 2, 1)


@pytest.mark.parametrize("seed", range(8))
def test_kept_progress_counts_equal_a_count_of_the_rows_whatever_the_order_of_events(either_context, seed):
    context = either_context
    rng = random.Random(seed)
    principal, _ = add_partner(context)
    batches = [
        submit(context, principal, csv_upload(*(line(f"B{b}R{i}") for i in range(1, 9)))).batch_id
        for b in range(2)
    ]
    rows = [f"{batch}-{i}" for batch in batches for i in range(1, 9)]
    events: list = []
    for row in rows:
        minutes = rng.randrange(3)
        events += [
            decided(row, rng.choice(["eligible", "ineligible", "duplicate"]), minutes=m)
            for m in range(minutes + 1)
        ]
        statuses = rng.choice(
            [["pending", "sent", "paid"], ["pending_approval", "pending", "sent", "failed"], ["pending"]]
        )
        events += [paid(row, status, sequence) for sequence, status in enumerate(statuses, 1)]
    events += rng.sample(events, 6)  # redeliveries
    rng.shuffle(events)
    while events:
        size = rng.randint(1, 7)
        take, events = events[:size], events[size:]
        handlers.apply_decisions(context.engine, [e for e in take if isinstance(e, EligibilityDecided)])
        handlers.apply_payments(context.engine, [e for e in take if isinstance(e, PaymentStatusChanged)])
    with Session(context.engine) as session:
        for batch in [None, *batches]:
            assert sorted(store.progress_groups(session, batch), key=str) == sorted(
                store.counted_progress_groups(session, batch), key=str
            )
        assert sum(rows for *_, rows in store.progress_groups(session)) == 16


def test_counts_are_filled_from_the_rows_for_a_database_that_had_none(context):
    principal, _ = add_partner(context)
    batch = submit(context, principal, csv_upload(line("R1"), line("R2"))).batch_id
    handlers.apply_decisions(context.engine, [decided(f"{batch}-1", "ineligible")])
    with transaction(context.engine) as session:
        session.execute(delete(store.ProgressCount))
        assert store.progress_groups(session) == []
    assert store.count_progress_if_missing(context.engine) is True
    assert store.count_progress_if_missing(context.engine) is False
    with Session(context.engine) as session:
        assert sorted(store.progress_groups(session), key=str) == sorted(
            store.counted_progress_groups(session), key=str
        )


def test_another_partners_batch_is_not_found(context):
    principal, _ = add_partner(context)
    other, _ = add_partner(context, name="CSO Two")
    receipt = submit(context, principal, csv_upload(line("R1")))
    with pytest.raises(handlers.BatchNotFound):
        handlers.batch_report(context.engine, other, receipt.batch_id)
    with pytest.raises(handlers.BatchNotFound):
        handlers.batch_report(context.engine, principal, "b-none")


def test_metrics_count_rows_by_outcome_and_first_reason(context):
    principal, _ = add_partner(context)
    submit(
        context, principal, csv_upload(line("R1"), line("R2", sex="?", phone="1"), line("R3", consent="no"))
    )
    metrics = context.metrics

    def totals(counter):
        return {
            tuple(s.labels.values()): s.value
            for s in counter.collect()[0].samples
            if s.name.endswith("_total")
        }

    assert totals(metrics.rows) == {
        ("accepted", "none"): 1,
        ("rejected", "invalid_choice"): 1,
        ("rejected", "consent_refused"): 1,
    }
    assert totals(metrics.row_errors) == {
        ("sex", "invalid_choice"): 1,
        ("phone", "invalid_format"): 1,
        ("consent", "consent_refused"): 1,
    }
    assert totals(metrics.batches) == {("accepted",): 1}
