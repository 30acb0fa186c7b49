"""Batch progress fed back from eligibility.decided and disbursement.payments through the real broker."""

from __future__ import annotations

import time
from datetime import date

import httpx
from kafka import KafkaProducer

from shared.events import EligibilityDecided, OverpaymentDetected, PaymentStatusChanged, PersonsMerged
from tests.integration.intake.intake_support import add_partner, bearer, csv_file, row


def decided(row_id: str, batch_id: str, decision: str, assistance: str = "cash_relief") -> EligibilityDecided:
    return EligibilityDecided(
        row_id=row_id,
        batch_id=batch_id,
        partner_id="p",
        partner_name="CSO",
        person_id=f"person-{row_id}",
        decision=decision,
        reasons=[] if decision == "eligible" else ["age_under_18"],
        policy_version="v1",
        cycle="C1",
        assistance=assistance,
        country="MY",
        sex="F",
        age_years=35,
        household_size=2,
        registered_on=date(2026, 1, 5),
    )


def payment(row_id: str, batch_id: str, status: str, sequence: int) -> PaymentStatusChanged:
    return PaymentStatusChanged(
        payment_ref=f"pay-{row_id}",
        person_id=f"person-{row_id}",
        row_id=row_id,
        batch_id=batch_id,
        partner_id="p",
        cycle="C1",
        country="MY",
        amount_minor=120000,
        currency="MYR",
        status=status,
        sequence=sequence,
    )


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_decisions_and_payments_show_up_in_the_batch_status(make_settings, start_service):
    settings = make_settings()
    _, key = add_partner(settings, "CSO Viet Nam")
    intake = start_service("intake", settings)
    rows = [row(f"VN-{i}") for i in range(1, 7)]
    rows[5] = row("VN-6", assistance="food_kit", payout_method="", payout_account="")
    receipt = httpx.post(f"{intake.url}/v1/batches", content=csv_file(rows), headers=bearer(key)).json()
    batch_id = receipt["batch_id"]
    ids = [f"{batch_id}-{i}" for i in range(1, 7)]

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    decisions = [
        decided(ids[0], batch_id, "eligible"),
        decided(ids[1], batch_id, "eligible"),
        decided(ids[2], batch_id, "eligible"),
        decided(ids[3], batch_id, "ineligible"),
        decided(ids[4], batch_id, "duplicate"),
        decided(ids[5], batch_id, "eligible", assistance="food_kit"),
        PersonsMerged(survivor_person_id="a", merged_person_id="b", cause="identity_rule"),
    ]
    payments = [
        payment(ids[0], batch_id, "pending", 1),
        payment(ids[0], batch_id, "sent", 2),
        payment(ids[0], batch_id, "paid", 3),
        payment(ids[1], batch_id, "pending", 1),
        payment(ids[1], batch_id, "failed", 2),
        payment(ids[2], batch_id, "pending_approval", 1),
        OverpaymentDetected(
            payment_ref="x", kept_payment_ref="y", person_id="p", cycle="C1", amount_minor=1, currency="MYR"
        ),
    ]
    for event in decisions:
        producer.send(settings.topic("eligibility.decided"), event.to_bytes(), key=b"person")
    for event in payments:
        producer.send(settings.topic("disbursement.payments"), event.to_bytes(), key=b"person")
    producer.send(
        settings.topic("disbursement.payments"), payments[1].to_bytes(), key=b"person"
    )  # a redelivery
    producer.flush()
    producer.close()

    def settled():
        status = httpx.get(f"{intake.url}/v1/batches/{batch_id}", headers=bearer(key)).json()
        return status if status["paid"] == 1 and status["failed"] == 1 and status["duplicate"] == 1 else None

    status = wait_for(settled)
    assert {
        k: status[k]
        for k in ("accepted", "rejected", "eligible", "ineligible", "duplicate", "paid", "failed")
    } == {
        "accepted": 6,
        "rejected": 0,
        "eligible": 4,
        "ineligible": 1,
        "duplicate": 1,
        "paid": 1,
        "failed": 1,
    }
    assert (status["pending_approval"], status["final"], status["pending"]) == (1, 5, 0)
    progress = httpx.get(f"{intake.url}/v1/progress").json()
    assert progress == {"accepted": 6, "rejected": 0, "final": 5, "pending": 0, "pending_approval": 1}
