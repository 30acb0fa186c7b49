"""Exactly one payment per person per cycle, on real PostgreSQL and Kafka, with two replicas
racing and a provider that fails transiently 30% of the time."""

from __future__ import annotations

from collections import Counter

from services.disbursement.domain import FINAL, payment_reference
from tests.integration.disbursement.disbursement_support import (
    AMOUNTS,
    CURRENCIES,
    balances,
    decision,
    engine_for,
    payment_events,
    payments,
    provider_transfers,
    publish,
    replica_settings,
    wait_until,
)


async def test_two_replicas_and_a_flaky_provider_pay_each_person_exactly_once(
    make_settings, postgres, start_service
):
    settings = make_settings("postgres", postgres, fsp_transient_failure_rate=0.3)
    countries = ["MY", "TH", "VN", "JP"]
    people = [(f"person-{i:04d}", countries[i % 4]) for i in range(400)]
    refused = [f"refused-{i}" for i in range(8)]
    replicas = [
        start_service("disbursement", settings, replica=0),
        start_service("disbursement", replica_settings(settings), replica=1),
    ]

    # The same eligible decision three times (same event id), under three keys so that it lands on
    # different partitions and both replicas handle it at the same moment; plus a second decision
    # (another event id) for the same person and cycle, also on another partition.
    twice_decided = decision(settings, "person-raced", country="VN")
    second = decision(settings, "person-raced", country="VN", row_id="row-raced-again")
    records = [(key, twice_decided) for key in ("person-raced", "k-1", "k-2")] + [("k-3", second)]
    records += [(person, decision(settings, person, country=country)) for person, country in people]
    records += [(person, decision(settings, person, account="FAIL-0042")) for person in refused]
    await publish(settings, records)

    engine = engine_for(settings)
    try:
        expected = len(people) + len(refused) + 1

        def settled() -> bool:
            found = payments(engine)
            return len(found) == expected and all(p.status in FINAL for p in found)

        await wait_until(settled, timeout=60, what="every payment to settle")
        found = payments(engine)
        by_person = Counter(p.person_id for p in found)
        assert by_person["person-raced"] == 1 and set(by_person.values()) == {1}
        statuses = Counter((p.status, p.person_id.startswith("refused")) for p in found)
        assert statuses == Counter({("paid", False): len(people) + 1, ("failed", True): len(refused)})
        assert {p.reason for p in found if p.status == "failed"} == {"account_refused"}

        # One provider transfer per payment, despite retries after lost replies and two senders.
        transfers = provider_transfers(engine)
        assert len(transfers) == expected and set(transfers.values()) == {1}
        assert sum(p.attempts for p in found) > expected  # transient failures really happened

        # Amounts are the decided integers; VND and JPY have no minor digits to invent.
        raced = next(p for p in found if p.person_id == "person-raced")
        assert (raced.amount_minor, raced.currency, raced.payment_ref) == (
            2_800_000,
            "VND",
            payment_reference("person-raced", settings.cycle),
        )
        sums = balances(engine)
        for country in countries:
            paid_here = sum(1 for _, c in people if c == country) + (country == "VN")
            assert sums[CURRENCIES[country]]["paid_minor"] == paid_here * AMOUNTS[country]
        # The ledger agrees with the payments, currency by currency; refused payments count nowhere.
        assert all(s["ledger_net_minor"] == s["paid_minor"] for s in sums.values())
        assert sums["MYR"]["paid"] == sum(1 for _, c in people if c == "MY")

        # Every transition others act on was emitted once: pending(1), then paid|failed(3); `sent`(2)
        # is in the ledger only. The relay delivers at least once (two replicas' relays may both
        # publish a row), so a step may arrive twice, but always as the same event (same id), which
        # consumers absorb.
        events = [e for e in payment_events(settings) if e["event_type"] == "payment.status_changed"]
        steps: dict[tuple[str, int], set[tuple[str, str]]] = {}
        for event in events:
            steps.setdefault((event["payment_ref"], event["sequence"]), set()).add(
                (event["event_id"], event["status"])
            )
        assert len(steps) == 2 * expected and all(len(v) == 1 for v in steps.values())
        assert {(seq, status) for (_, seq), v in steps.items() for _, status in v} == {
            (1, "pending"), (3, "paid"), (3, "failed"),
        }  # fmt: skip
        # Both replicas stayed up throughout.
        assert all(r.process is not None and r.process.poll() is None for r in replicas)
    finally:
        engine.dispose()
