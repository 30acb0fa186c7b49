"""Handlers and the sender on a real SQLite database with the simulated provider (no broker)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from services.disbursement import handlers, store
from services.disbursement.domain import DomainError, StatementLine
from services.disbursement.metrics import disbursement_metrics
from services.disbursement.provider import PaymentOrder, SimulatedProvider, TransientProviderError
from services.disbursement.sender import PaymentSender
from shared.db import transaction
from shared.events import PersonsMerged, utc_now
from tests.unit.disbursement.disbursement_builders import (
    FINANCE,
    SEALER,
    SECRET,
    TOPIC,
    apply,
    count,
    decided,
    drain,
    ledger,
    outbox_events,
    payments,
    provider_transfers,
    statuses,
)


def make_sender(engine, *, failure_rate=0.0, chaos=None, seed=7, lease_seconds=30.0):
    registry = CollectorRegistry()
    metrics = disbursement_metrics(registry)
    metrics.registry = registry  # for `sample`
    provider = SimulatedProvider(
        engine, secret=SECRET, failure_rate=failure_rate, chaos=chaos, rng=random.Random(seed)
    )
    sender = PaymentSender(
        engine, provider, open_account=SEALER.open, metrics=metrics, topic=TOPIC, batch_size=100,
        lease_seconds=lease_seconds, retry_base_seconds=0.005, retry_cap_seconds=0.05, rng=random.Random(seed),
    )  # fmt: skip
    return sender, provider, metrics


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


# ---- one payment per person per cycle ------------------------------------------------------


def test_the_same_decision_delivered_three_times_creates_one_payment(engine):
    event = decided("person-1")
    apply(engine, [event, event])  # twice in one batch
    apply(engine, [event])  # and replayed later
    again = decided("person-1", row_id="row-other")  # a second decision for the same person and cycle
    result = apply(engine, [again])
    assert result.created == 0 and result.already_existing == 1
    (payment,) = payments(engine)
    assert (payment.status, payment.amount_minor, payment.currency, payment.row_id) == (
        "pending",
        48000,
        "MYR",
        "row-person-1",
    )
    assert [(e["status"], e["sequence"]) for e in ledger(engine)] == [("pending", 1)]
    assert [(e["event_type"], e["status"], e["sequence"]) for e in outbox_events(engine)] == [
        ("payment.status_changed", "pending", 1)
    ]


def test_a_new_cycle_is_a_new_payment_and_decisions_that_pay_nothing_create_none(engine):
    apply(engine, [decided("person-1"), decided("person-1", cycle="C2")])
    apply(engine, [decided("person-2", decision="ineligible"), decided("person-3", assistance="food_kit"),
                   decided("person-4", decision="duplicate")])  # fmt: skip
    assert sorted(p.cycle for p in payments(engine)) == ["C1", "C2"]


def test_the_payout_account_stays_sealed_in_the_database_and_out_of_events(engine):
    apply(engine, [decided("person-1", account="MY-ACC-998877")])
    (payment,) = payments(engine)
    assert payment.payout_account_sealed and "998877" not in payment.payout_account_sealed
    assert "998877" not in repr(payment)
    assert all(
        "998877" not in str(event) and "payout_account" not in event for event in outbox_events(engine)
    )


# ---- sending ------------------------------------------------------------------------------


async def test_a_provider_failing_30_percent_of_the_time_still_pays_everyone_exactly_once(engine):
    countries = ["MY", "TH", "VN", "JP"]
    apply(engine, [decided(f"person-{i}", country=countries[i % 4]) for i in range(200)])
    sender, provider, metrics = make_sender(engine, failure_rate=0.3)
    await drain(sender, engine)
    assert statuses(engine) == Counter({"paid": 200})
    transfers = provider_transfers(engine)
    assert len(transfers) == 200 and set(transfers.values()) == {1}
    assert provider.lost_replies > 0  # some transfers executed while the caller saw an error
    # Each payment holds the reference the provider gave its one transfer (also after a lost reply).
    with transaction(engine) as session:
        table = store.PROVIDER_TRANSFER
        given = dict(session.execute(select(table.c.idempotency_key, table.c.provider_ref)).all())
    assert {p.payment_ref: p.provider_ref for p in payments(engine)} == given
    assert sample(metrics, "relief_provider_retries_total") > 0
    # Each payment's history is pending → sent → paid, numbered 1, 2, 3, whatever the retries.
    histories: dict[str, list[tuple[str, int]]] = {}
    for entry in ledger(engine):
        histories.setdefault(entry["payment_ref"], []).append((entry["status"], entry["sequence"]))
    assert set(map(tuple, histories.values())) == {(("pending", 1), ("sent", 2), ("paid", 3))}
    # Published: what others act on. `sent` stays in the ledger (nobody downstream tells it from
    # `pending`), so each payment stages two events, not three.
    published: dict[str, list[tuple[str, int]]] = {}
    for event in outbox_events(engine):
        published.setdefault(event["payment_ref"], []).append((event["status"], event["sequence"]))
    assert len(published) == 200
    assert set(map(tuple, published.values())) == {(("pending", 1), ("paid", 3))}
    # The ledger's sum per currency equals the sum of paid payments.
    with transaction(engine) as session:
        balances = store.balances(session)
    assert {c: b["ledger_net_minor"] for c, b in balances.items()} == {
        c: b["paid_minor"] for c, b in balances.items()
    }
    assert balances["VND"]["paid_minor"] == 50 * 2_800_000 and balances["JPY"]["paid_minor"] == 50 * 16_800
    assert sample(metrics, "relief_disbursed_minor_total", currency="JPY") == 50 * 16_800


async def test_fail_accounts_end_failed_and_are_not_counted_as_disbursed(engine):
    apply(
        engine,
        [
            decided("ok-1"),
            decided("bad-1", account="FAIL-123"),
            decided("pickup-1", method="cash_pickup", account=None),
        ],
    )
    sender, _, metrics = make_sender(engine)
    await drain(sender, engine)
    by_person = {p.person_id: p for p in payments(engine)}
    assert (by_person["bad-1"].status, by_person["bad-1"].reason) == ("failed", "account_refused")
    assert by_person["ok-1"].status == by_person["pickup-1"].status == "paid"
    with transaction(engine) as session:
        assert store.balances(session)["MYR"]["paid_minor"] == 2 * 48000
    assert sample(metrics, "relief_disbursed_minor_total", currency="MYR") == 2 * 48000
    assert sample(metrics, "relief_payments_total", status="failed", currency="MYR") == 1


async def test_a_bank_transfer_without_an_account_fails_without_reaching_the_provider(engine):
    apply(engine, [decided("person-1", method="bank_transfer", account=None)])
    sender, _, _ = make_sender(engine)
    await drain(sender, engine)
    (payment,) = payments(engine)
    assert (payment.status, payment.reason) == ("failed", "missing_payout_account")
    assert provider_transfers(engine) == Counter()


async def test_when_the_provider_executed_but_the_reply_was_lost_the_retry_returns_the_original_result(
    engine,
):
    fates = iter(["lost_reply", "ok"])
    apply(engine, [decided("person-1")])
    sender, provider, _ = make_sender(engine, chaos=lambda: next(fates))
    assert await sender.send_due() == 1
    (payment,) = payments(engine)
    assert (payment.status, payment.attempts) == ("sent", 1)  # the transfer happened; we do not know yet
    assert provider_transfers(engine) == Counter({payment.payment_ref: 1})
    await drain(sender, engine)
    (payment,) = payments(engine)
    assert (payment.status, payment.attempts) == ("paid", 2)
    assert provider_transfers(engine) == Counter({payment.payment_ref: 1}) and provider.executed == 1


async def test_the_provider_refuses_a_modified_request_under_a_used_key(engine):
    provider = SimulatedProvider(engine, secret=SECRET)
    first = await provider.send(PaymentOrder("PAYX", 48000, "MYR", "e_wallet", "ACC-1"))
    same = await provider.send(PaymentOrder("PAYX", 48000, "MYR", "e_wallet", "ACC-1"))
    changed = await provider.send(PaymentOrder("PAYX", 99000, "MYR", "e_wallet", "ACC-1"))
    assert first == same and first.status == "paid"
    assert (changed.status, changed.reason) == ("refused", "modified_request")
    assert provider.executed == 1 and (await provider.query_status("PAYX")) == first
    assert await provider.query_status("PAY-NEVER-SENT") is None


async def test_a_busy_provider_executes_nothing_and_the_payment_is_retried(engine):
    provider = SimulatedProvider(engine, secret=SECRET, chaos=lambda: "busy")
    with pytest.raises(TransientProviderError):
        await provider.send(PaymentOrder("PAYX", 48000, "MYR", "e_wallet", "ACC-1"))
    assert provider_transfers(engine) == Counter()


async def test_a_payment_abandoned_by_a_dead_sender_is_taken_over_after_its_lease(engine):
    apply(engine, [decided("person-1")])
    with transaction(engine) as session:  # a sender claims it, then dies before recording anything
        first = handlers.claim_due_payments(
            session, now=utc_now(), limit=10, lease_seconds=0.0, open_account=SEALER.open, topic=TOPIC
        )
    assert [c.attempt for c in first.claims] == [1] and first.claims[0].order.account == "ACC-0001"
    sender, provider, _ = make_sender(engine)
    await provider.send(first.claims[0].order)  # the dead sender's call had reached the provider
    await drain(sender, engine)
    (payment,) = payments(engine)
    assert (payment.status, payment.attempts) == ("paid", 2) and provider.executed == 1
    # The dead sender's late reply changes nothing: its attempt is stale.
    with transaction(engine) as session:
        late = handlers.record_provider_replies(
            session,
            [(first.claims[0], TransientProviderError("late"))],
            now=utc_now(),
            jitter=lambda: 0.5,
            topic=TOPIC,
        )
    assert late.stale == 1 and payments(engine)[0].status == "paid"


async def test_an_unreadable_sealed_account_keeps_the_payment_waiting(engine):
    apply(engine, [decided("person-1")])
    with transaction(engine) as session:

        def wrong_secret(_: str) -> str:
            raise ValueError("cannot open")

        claimed = handlers.claim_due_payments(
            session, now=utc_now(), limit=10, lease_seconds=30, open_account=wrong_secret, topic=TOPIC
        )
    assert claimed.unreadable == 1 and claimed.claims == []
    assert payments(engine)[0].status == "pending"


# ---- approvals ----------------------------------------------------------------------------


def approve(engine, **kwargs):
    values = {
        "principal": FINANCE,
        "country": "MY",
        "cycle": "C1",
        "now": utc_now(),
        "topic": TOPIC,
        **kwargs,
    }
    with transaction(engine) as session:
        return handlers.approve_pending(session, **values)


async def test_an_approval_with_a_stale_count_or_total_is_refused_and_nothing_is_sent(engine):
    apply(
        engine,
        [decided(f"my-{i}") for i in range(3)] + [decided("th-1", country="TH")],
        approval_required=True,
    )
    sender, _, _ = make_sender(engine)
    assert await sender.send_due() == 0
    for stale_count, stale_total in ((2, 3 * 48000), (3, 3 * 48000 - 1)):
        with pytest.raises(DomainError) as error:
            approve(engine, count=stale_count, total_minor=stale_total)
        assert error.value.code == "control_totals_mismatch"
    assert await sender.send_due() == 0
    assert statuses(engine) == Counter({"pending_approval": 4}) and provider_transfers(engine) == Counter()
    assert count(engine, store.APPROVAL) == 0  # the handler records refusals only when asked (the API does)


async def test_a_matching_approval_releases_exactly_that_country_and_is_recorded(engine):
    apply(
        engine,
        [decided(f"my-{i}") for i in range(3)] + [decided("th-1", country="TH")],
        approval_required=True,
    )
    result = approve(engine, count=3, total_minor=3 * 48000)
    assert (result.record["count"], result.record["total_minor"], result.record["currency"]) == (
        3,
        144000,
        "MYR",
    )
    assert (result.record["approved_by"], result.record["approver_name"]) == ("p-finance", "Finance Officer")
    sender, _, _ = make_sender(engine)
    await drain(sender, engine)
    assert {(p.country, p.status) for p in payments(engine)} == {("MY", "paid"), ("TH", "pending_approval")}
    reasons = [e["reason"] for e in ledger(engine) if e["status"] == "pending"]
    assert reasons == [f"approved:{result.record['approval_id']}"] * 3
    with pytest.raises(DomainError) as error:  # the same set cannot be approved twice
        approve(engine, count=3, total_minor=3 * 48000)
    assert error.value.code == "nothing_to_approve"


# ---- merges -------------------------------------------------------------------------------


async def test_a_merge_of_two_paid_persons_records_an_overpayment_and_says_so(engine):
    apply(engine, [decided("survivor"), decided("merged")])
    sender, _, _ = make_sender(engine)
    await drain(sender, engine)
    merge = PersonsMerged(survivor_person_id="survivor", merged_person_id="merged", cause="review")
    result = apply(engine, [merge, merge])
    assert result.overpayments == 1
    with transaction(engine) as session:
        (overpayment,) = store.list_overpayments(session)
    by_person = {p.person_id: p.payment_ref for p in payments(engine)}
    assert (overpayment["payment_ref"], overpayment["kept_payment_ref"]) == (
        by_person["merged"],
        by_person["survivor"],
    )
    assert (overpayment["amount_minor"], overpayment["currency"], overpayment["payment_status"]) == (
        48000,
        "MYR",
        "paid",
    )
    detected = [e for e in outbox_events(engine) if e["event_type"] == "payment.overpayment_detected"]
    assert [(e["payment_ref"], e["person_id"]) for e in detected] == [(by_person["merged"], "survivor")]


async def test_a_merge_cancels_the_unsent_duplicate_and_blocks_a_later_second_payment(engine):
    apply(engine, [decided("survivor")])
    sender, _, _ = make_sender(engine)
    await drain(sender, engine)
    apply(engine, [decided("merged")], approval_required=True)
    apply(
        engine,
        [PersonsMerged(survivor_person_id="survivor", merged_person_id="merged", cause="identity_rule")],
    )
    by_person = {p.person_id: p for p in payments(engine)}
    assert (by_person["merged"].status, by_person["merged"].reason) == ("failed", "merged_duplicate")
    assert count(engine, store.OVERPAYMENT) == 0
    # A decision overtaken by the merge (another partition), under a third id merged already, pays
    # nobody twice, and its row still ends final: failed as a merged duplicate, never sent.
    apply(engine, [PersonsMerged(survivor_person_id="survivor", merged_person_id="third", cause="review")])
    result = apply(engine, [decided("third", row_id="row-late")])
    assert (result.created, result.already_existing) == (0, 1)
    late = {p.row_id: p for p in payments(engine)}["row-late"]
    assert (late.status, late.reason, late.attempts) == ("failed", "merged_duplicate", 0)
    assert ("row-late", "failed") in [(e["row_id"], e["status"]) for e in outbox_events(engine)]
    sender, _, _ = make_sender(engine)
    await drain(sender, engine)
    assert sorted(p.status for p in payments(engine)) == ["failed", "failed", "paid"]
    assert len(provider_transfers(engine)) == 1
    # The same decision replayed changes nothing.
    assert apply(engine, [decided("third", row_id="row-late")]).created == 0
    assert len(payments(engine)) == 3


# ---- reconciliation -----------------------------------------------------------------------


async def test_reconciliation_applies_a_reversal_with_a_ledger_entry_and_an_event(engine):
    apply(engine, [decided("a"), decided("b")])
    sender, _, _ = make_sender(engine)
    await drain(sender, engine)
    refs = {p.person_id: p.payment_ref for p in payments(engine)}
    today = utc_now().date()
    lines = [
        StatementLine(1, refs["a"], 48000, "MYR", "reversed", today),
        StatementLine(2, refs["b"], 48000, "MYR", "paid", today),
    ]
    with transaction(engine) as session:
        result = handlers.reconcile_statement(session, lines, principal=FINANCE, now=utc_now(), topic=TOPIC)
    assert result.report.matched == 2 and result.report.findings == []
    reversed_ = {p.person_id: p for p in payments(engine)}["a"]
    assert (reversed_.status, reversed_.sequence, reversed_.reason) == (
        "reversed",
        4,
        f"statement:{today.isoformat()}",
    )
    assert [e["status"] for e in outbox_events(engine) if e.get("payment_ref") == refs["a"]][-1] == "reversed"
    with transaction(engine) as session:
        balances = store.balances(session)["MYR"]
    assert (
        balances["ledger_net_minor"] == balances["paid_minor"] == 48000
        and balances["ledger_reversed_minor"] == 48000
    )
