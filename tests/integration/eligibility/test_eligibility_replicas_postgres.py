"""Two eligibility replicas, one consumer group, PostgreSQL: each person approved once, budgets hold."""

from __future__ import annotations

import socket
import time
from collections import Counter, defaultdict

from kafka import KafkaAdminClient
from sqlalchemy import text

from shared.db import make_engine
from shared.events import PersonsMerged

GIVEN = ["Hoa", "Lan", "Mai", "Thu", "Linh", "Huong", "Trang", "Nga", "Yen", "Phuong"]
FAMILY = ["Tran", "Pham", "Nguyen", "Le", "Hoang", "Vu"]
KH_GIVEN = ["Sok", "Chan", "Dara", "Vanna", "Sophea", "Bopha"]
KH_FAMILY = ["Kim", "Lim", "Chea", "Heng", "Meas"]
KHR_TRANSFER = 30_000_000  # KH household of one: 300000 KHR in minor units
KH_APPROVALS_AFFORDABLE = 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_two_members(settings, timeout: float = 60.0) -> None:
    group = settings.group_id("eligibility")
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    deadline = time.monotonic() + timeout
    described: dict = {}
    try:
        while time.monotonic() < deadline:
            described = admin.describe_groups([group]).get(group, {})
            members = described.get("members") or []
            if described.get("group_state") == "Stable" and len(members) == 2:
                return
            time.sleep(0.3)
    finally:
        admin.close()
    raise AssertionError(f"the two replicas did not both join the group: {described}")


def test_two_replicas_consuming_one_topic_approve_each_person_once_across_partners(
    make_settings, postgres, start_service, row, decided_reader, kit
):
    settings = make_settings(
        database="postgres",
        postgres_cluster=postgres,
        budget_ceilings={"KH": KH_APPROVALS_AFFORDABLE * KHR_TRANSFER},
        consumer_batch_size=20,  # many small batches, so the replicas interleave
    )
    first = start_service("eligibility", settings, replica=0)
    second = start_service(
        "eligibility", settings.model_copy(update={"eligibility_port": free_port()}), replica=1
    )
    wait_for_two_members(settings)
    reader = decided_reader(settings)

    # 60 people, each registered by four partners in four countries with different documents and
    # spellings; their rows carry different Kafka keys, so they land on different partitions and
    # are decided by whichever replica owns each partition, at the same time.
    people: dict[int, list] = {}
    for index, (given, family) in enumerate((g, f) for g in GIVEN for f in FAMILY):
        people[index] = [
            row(given, family, id_type="passport", id_number=f"P{index:04d}", partner="p1", country="MY"),
            row(
                given.upper(),
                family.upper(),
                id_type="work_permit",
                id_number=f"W{index:04d}",
                partner="p2",
                country="TH",
            ),
            row(f"{family} {given}", None, partner="p3", country="HK"),
            # Another spelling, unique to this person: linked by the passport only.
            row(
                given[::-1],
                family,
                id_type="passport",
                id_number=f"p-{index:04d}",
                partner="p4",
                country="PH",
            ),
        ]
    # 30 more people in Cambodia, where the budget affords 12 transfers.
    cambodia = [
        row(given, family, nationality="KHM", country="KH", household_size=1, partner="p5")
        for given in KH_GIVEN
        for family in KH_FAMILY
    ]
    rows = [r for person_rows in people.values() for r in person_rows] + cambodia
    # Interleave the partners' uploads: each person's first row (same key as its fourth) goes first.
    ordered = [people[i][0] for i in people] + cambodia + [people[i][j] for j in (1, 2, 3) for i in people]
    kit.publish(settings, ordered)
    decided = reader.wait_for_decisions([r.row_id for r in rows], timeout=75)

    decisions = [e for e in reader.settle(1.0) if e.event_type == "eligibility.decided"]
    # Every row decided once, none twice. Both replicas' outbox relays read the one outbox table,
    # so a staged event can go out twice; it is the same event (same id), which consumers absorb.
    by_row = defaultdict(set)
    for event in decisions:
        by_row[event.row_id].add((event.event_id, event.decision, event.person_id))
    assert len(by_row) == len(rows) == 270
    assert all(len(versions) == 1 for versions in by_row.values())
    assert not [e for e in reader.events if isinstance(e, PersonsMerged)]

    person_ids = set()
    for index, person_rows in people.items():
        outcome = [decided[r.row_id] for r in person_rows]
        assert len({d.person_id for d in outcome}) == 1, f"person {index} split: {outcome}"
        person_ids.add(outcome[0].person_id)
        tally = Counter(d.decision for d in outcome)
        assert tally == {"eligible": 1, "duplicate": 3}, f"person {index}: {tally}"
        [approved] = [d for d in outcome if d.decision == "eligible"]
        assert {d.duplicate_of for d in outcome if d.decision == "duplicate"} == {approved.row_id}
    assert len(person_ids) == 60

    cambodian = Counter((decided[r.row_id].decision, tuple(decided[r.row_id].reasons)) for r in cambodia)
    assert cambodian == {("eligible", ()): KH_APPROVALS_AFFORDABLE, ("ineligible", ("budget_exhausted",)): 18}

    # Both replicas took part, and the database holds one cash approval per approved person.
    per_replica = [
        sum(
            v
            for (name, _), v in kit.metrics(service.url).items()
            if name == "relief_eligibility_decisions_total"
        )
        for service in (first, second)
    ]
    assert all(count > 0 for count in per_replica), per_replica
    engine = make_engine(settings.database_url_for("eligibility"))
    try:
        with engine.connect() as connection:
            approvals = connection.execute(
                text(
                    "SELECT person_id, count(*) FROM eligibility_approval WHERE cycle = 'C1' GROUP BY person_id"
                )
            ).all()
            reserved = connection.execute(
                text("SELECT reserved_minor FROM eligibility_budget WHERE country = 'KH' AND cycle = 'C1'")
            ).scalar_one()
    finally:
        engine.dispose()
    # Each decision staged once: the replicas' relays publish each staged row once (each claims
    # its own rows) and delete it, so once the outbox is empty their counters add up to it.
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as connection:
            if connection.execute(text("SELECT count(*) FROM outbox_batch")).scalar_one() == 0:
                break
        assert time.monotonic() < deadline, "the relays did not publish every staged decision"
        time.sleep(0.2)
    engine.dispose()
    staged = sum(
        v
        for service in (first, second)
        for (name, _), v in kit.metrics(service.url).items()
        if name == "relief_events_published_total"
    )
    assert staged == 270
    assert len(approvals) == 60 + KH_APPROVALS_AFFORDABLE
    assert {count for _, count in approvals} == {1}
    assert reserved == KH_APPROVALS_AFFORDABLE * KHR_TRANSFER
    by_country = defaultdict(int)
    for r in rows:
        if decided[r.row_id].decision == "eligible":
            by_country[decided[r.row_id].country] += 1
    assert sum(by_country.values()) == 72
