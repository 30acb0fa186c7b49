"""Handlers and the SQL reach query on a real SQLite database: idempotence, order independence,
and the SQL checked against the pure reference on random programmes."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from services.reporting import store
from shared.db import transaction
from shared.events import Event
from tests.unit.reporting.reporting_builders import (
    apply,
    apply_one_by_one,
    decided,
    later,
    merged,
    overpaid,
    paid,
    payment,
    programmes,
    query,
    reference,
    reporting_engine,
)


def test_a_person_through_two_partners_and_two_countries_counts_once_in_total_and_once_per_group(engine):
    apply(engine, [
        decided("r1", "anna", partner="Tenaganita", country="MY"),
        decided("r2", "anna", partner="Mission for Migrant Workers", country="HK", assistance="food_kit"),
        decided("r3", "budi", partner="Tenaganita", country="MY", sex="M"),
        *paid("r1", "anna"), *paid("r3", "budi"),
    ])  # fmt: skip
    reach = query(engine)
    assert reach.beneficiaries_reached == 2
    assert reach.by_country == {"HK": 1, "MY": 2}
    assert reach.by_partner == {"Mission for Migrant Workers": 1, "Tenaganita": 2}
    assert reach.by_sex == {"F": 1, "M": 1}


def test_a_payment_before_its_decision_counts_once_the_decision_arrives(engine):
    apply(engine, paid("r1", "anna"))
    assert query(engine).beneficiaries_reached == 0  # nothing known yet about who was paid
    apply(engine, [decided("r1", "anna", household=4)])
    reach = query(engine)
    assert (reach.beneficiaries_reached, reach.people_reached) == (1, 4)


def test_a_merge_before_the_decisions_it_joins_still_makes_one_person(engine):
    apply(engine, [merged("p-survivor", "p-merged")])
    apply(engine, [decided("r2", "p-survivor", assistance="food_kit", household=2)])
    apply(engine, [decided("r1", "p-merged", household=5), *paid("r1", "p-merged")])
    reach = query(engine)
    assert reach.beneficiaries_reached == 1
    assert reach.people_reached == 5


def test_a_payment_status_arriving_late_does_not_undo_a_newer_one(engine):
    apply(engine, [decided("r1", "anna")])
    apply(engine, [payment("r1", "anna", "reversed", 4)])
    apply(engine, [payment("r1", "anna", "paid", 3), payment("r1", "anna", "pending", 1)])
    reach = query(engine)
    assert reach.beneficiaries_reached == 0  # reversed is the newest: no longer delivered
    assert reach.disbursed == {}


def test_a_later_decision_on_a_row_replaces_an_earlier_one_whichever_arrives_first(engine):
    apply(engine, [decided("r1", "anna", assistance="food_kit", decision="ineligible", at=later(10))])
    apply(engine, [decided("r1", "anna", assistance="food_kit", decision="eligible", at=later(0))])
    assert query(engine).beneficiaries_reached == 0


def test_redelivered_events_change_nothing(engine):
    events = [decided("r1", "anna", household=3), *paid("r1", "anna"), overpaid("pay-x", "pay-r1", "anna")]
    apply(engine, events)
    first = query(engine)
    apply(engine, events)
    apply_one_by_one(engine, list(reversed(events)))
    assert query(engine) == first
    assert first.overpayments_detected == 1


def test_a_refresh_that_changes_no_summary_rewrites_no_summary(engine):
    """A cash row's person is touched by its decision and every payment status; only `paid`
    changes who is reached, so only it rewrites the person's summary and groups."""
    from sqlalchemy import event

    apply(engine, [decided("r0", "ben", assistance="food_kit")])  # ben is reached, anna not yet
    writes: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("INSERT", "DELETE")) and "reach_person" in statement:
            writes.append(statement.split("(")[0].strip())

    event.listen(engine, "before_cursor_execute", record)
    try:
        apply(engine, [decided("r1", "anna", household=3)])
        apply(engine, [payment("r1", "anna", "pending", 1), payment("r1", "anna", "sent", 2)])
        apply(engine, [decided("r0", "ben", assistance="food_kit", at=later(5))])  # the same again
        assert writes == []
        apply(engine, [payment("r1", "anna", "paid", 3)])
        assert writes and all("reach_person" in statement for statement in writes)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert query(engine).beneficiaries_reached == 2


def test_a_person_reached_for_the_first_time_has_no_summary_to_delete(engine):
    """Only stored summaries are deleted: a newly paid person (the usual refresh) is only inserted;
    a person whose summary changes has the old one replaced, not doubled."""
    from sqlalchemy import event

    deletes: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("DELETE") and "reach_person" in statement:
            deletes.append(statement.split("WHERE")[0].strip())

    event.listen(engine, "before_cursor_execute", record)
    try:
        apply(engine, [decided("r1", "anna", household=3), *paid("r1", "anna")])
        apply(
            engine,
            [decided("r2", "ben", assistance="food_kit"), decided("r3", "chen", decision="ineligible")],
        )
        assert deletes == []
        apply(engine, [decided("r4", "anna", assistance="food_kit", household=5)])  # anna's household grows
        assert sorted(deletes) == ["DELETE FROM reach_person", "DELETE FROM reach_person_group"]
    finally:
        event.remove(engine, "before_cursor_execute", record)
    reach = query(engine)
    assert (reach.beneficiaries_reached, reach.people_reached) == (2, 6)
    assert reach.by_assistance == {"cash_relief": 1, "food_kit": 2}


def test_a_decision_that_delivers_nothing_refreshes_no_person(engine):
    """A cash decision before its payment is paid, or a refusal, cannot change who is reached: no
    person's summary is even read. An in-kind approval, or a decision after `paid`, is."""
    from sqlalchemy import event

    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "reach_person" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        apply(engine, [decided("r1", "anna"), decided("r2", "ben", decision="ineligible")])
        apply(engine, [payment("r1", "anna", "pending", 1)])
        assert statements == []
        apply(engine, [decided("r3", "chen", assistance="food_kit")])
        assert statements  # in-kind help is delivered once approved
        statements.clear()
        apply(engine, [payment("r4", "dana", "paid", 3)])  # paid before its decision is known
        apply(engine, [decided("r4", "dana")])
        assert statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert query(engine).beneficiaries_reached == 2


def test_people_reached_uses_the_largest_household_whatever_order_rows_arrive_in(engine):
    apply(engine, [decided("r1", "anna", household=6, assistance="food_kit")])
    apply(engine, [decided("r2", "anna", household=2), *paid("r2", "anna")])
    apply(engine, [decided("r3", "anna", household=9, assistance="hygiene_kit", decision="ineligible")])
    assert query(engine).people_reached == 6


def test_an_empty_database_reports_zero(engine):
    reach = query(engine)
    assert reach.beneficiaries_reached == 0
    assert reach.by_age_band == reach.by_country == {}


# ---- the SQL against the reference, on random programmes in random orders -----------------------


def apply_in_random_batches(engine, events: list[Event], rng: random.Random) -> None:
    shuffled = events[:]
    rng.shuffle(shuffled)
    position = 0
    while position < len(shuffled):
        size = rng.randint(1, 6)
        apply(engine, shuffled[position : position + size])
        position += size


def assert_counts_rebuild_alike(engine) -> None:
    """The counts kept batch by batch equal counts made afresh from the stored summaries (as a
    database written before counts were kept gets them at start-up)."""
    kept = query(engine)
    with transaction(engine) as session:
        session.execute(delete(store.COUNTS))
    assert store.count_reach_if_missing(engine) == (kept.beneficiaries_reached > 0)
    assert store.count_reach_if_missing(engine) is False  # once only
    assert query(engine) == kept


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=programmes(), seed=st.integers(0, 2**32 - 1))
def test_the_sql_reach_equals_the_reference_in_any_order_and_batching(events, seed):
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as directory:
        engine = reporting_engine(Path(directory) / "reporting.db")
        try:
            apply_in_random_batches(engine, events, rng)
            assert query(engine) == reference(events)
            apply_in_random_batches(engine, events, rng)  # a full replay changes nothing
            assert query(engine) == reference(events)
            assert_counts_rebuild_alike(engine)
        finally:
            engine.dispose()
