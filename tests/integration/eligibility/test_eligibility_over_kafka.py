"""Eligibility as a real process on the real broker: SPEC §4 examples, replay, poison rows, policy errors."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaAdminClient

from shared.events import EligibilityDecided, PersonsMerged
from shared.kafka import consumer_lag
from shared.topics import BENEFICIARY_REGISTERED


def lag_of(settings) -> int:
    group = settings.group_id("eligibility")
    return sum(consumer_lag(settings, {group: [settings.topic(BENEFICIARY_REGISTERED.name)]}).values())


def test_spec_identity_examples_and_the_transitive_case(
    make_settings, start_service, row, decided_reader, kit
):
    settings = make_settings()
    service = start_service("eligibility", settings)
    reader = decided_reader(settings)

    # §4 rule 2: `Nguyễn Văn An` = `AN NGUYEN VAN`, same birth date and nationality, two partners, two countries.
    an_plain = row("Nguyễn Văn", "An", partner="p1", country="MY")
    an_passport = row(
        "AN", "NGUYEN VAN", partner="p2", country="TH", id_type="passport", id_number="C1234567"
    )
    # Counter-example: the same name and birth date with another nationality is another person.
    an_khm = row("Nguyen Van", "An", nationality="KHM", partner="p3", country="KH")
    # Counter-example: one edit apart is two people, flagged for review.
    siti = row("Siti", "Rahmah", nationality="IDN", partner="p1", country="HK")
    sity = row("Siti", "Rahma", nationality="IDN", partner="p4", country="HK")
    kit.publish(settings, [an_plain, an_passport, an_khm, siti, sity])
    decided = reader.wait_for_decisions([r.row_id for r in (an_plain, an_passport, an_khm, siti, sity)])

    one, two = decided[an_plain.row_id], decided[an_passport.row_id]
    assert one.person_id == two.person_id
    assert sorted([one.decision, two.decision]) == ["duplicate", "eligible"]
    first, second = (one, two) if one.decision == "eligible" else (two, one)
    assert (second.reasons, second.duplicate_of) == (["already_assisted"], first.row_id)

    assert decided[an_khm.row_id].person_id != one.person_id
    assert decided[an_khm.row_id].decision == "eligible"
    assert (decided[an_khm.row_id].amount_minor, decided[an_khm.row_id].currency) == (42_000_000, "KHR")

    assert decided[siti.row_id].person_id != decided[sity.row_id].person_id
    assert decided[siti.row_id].decision == decided[sity.row_id].decision == "eligible"
    assert kit.metric(service.url, "relief_eligibility_review_flags_total") == 1
    assert kit.metric(service.url, "relief_eligibility_reviews_open") == 1

    # Transitive: a passport row, a work-permit row matching it by name and birth date, then a row
    # matching the work permit only. Published one after the other, as partners would over days.
    passport = row(
        "Maria",
        "Santos",
        nationality="PHL",
        id_type="passport",
        id_number="P7654321",
        partner="p1",
        country="HK",
    )
    permit = row(
        "MARIA",
        "SANTOS",
        nationality="PHL",
        id_type="work_permit",
        id_number="WP-1122",
        partner="p2",
        country="MY",
    )
    permit_only = row(
        "Ma.",
        "Santos Reyes",
        nationality="PHL",
        id_type="work_permit",
        id_number="wp 1122",
        partner="p3",
        country="PH",
    )
    for each in (passport, permit, permit_only):
        kit.publish(settings, [each])
        reader.wait_for_decisions([each.row_id])
    decided = reader.decisions()
    chain = [decided[r.row_id] for r in (passport, permit, permit_only)]
    assert len({d.person_id for d in chain}) == 1
    assert [d.decision for d in chain] == ["eligible", "duplicate", "duplicate"]
    assert [d.duplicate_of for d in chain] == [None, passport.row_id, passport.row_id]
    assert chain[0].amount_minor == 140_000 and chain[0].currency == "HKD"  # 1000 + 200 × (3 − 1)
    # Every decision is keyed by its person, so one person's decisions stay in order.
    assert all(
        key == event.person_id for key, event in reader.records if isinstance(event, EligibilityDecided)
    )
    assert kit.metric(service.url, "relief_eligibility_persons") == 5


def test_a_row_linking_two_persons_merges_them_and_a_replay_of_the_whole_topic_changes_nothing(
    make_settings, start_service, row, decided_reader, kit
):
    settings = make_settings()
    service = start_service("eligibility", settings)
    reader = decided_reader(settings)
    a = row("Aung", "Min", nationality="MMR", id_type="passport", id_number="MA111", country="TH")
    b = row("Kyaw", "Zin", nationality="MMR", id_type="work_permit", id_number="TW222", country="MY")
    given_names = ["Hoa", "Lan", "Mai", "Thu", "Linh", "Huong", "Trang", "Nga", "Yen", "Phuong"]
    others = [
        row(given, "Tran", country="VN", household_size=i % 7 + 1) for i, given in enumerate(given_names)
    ]
    # a is approved before b (rows on different partitions have no order of their own), so a's
    # person is the one whose earlier approval survives the merge.
    kit.publish(settings, [a])
    reader.wait_for_decisions([a.row_id])
    kit.publish(settings, [b, *others])
    reader.wait_for_decisions([r.row_id for r in (b, *others)])
    link = row("Kyaw", "Zin", nationality="MMR", id_type="passport", id_number="MA111", country="MY")
    kit.publish(settings, [link])
    reader.wait_for_decisions([link.row_id])
    events = reader.settle(1.0)
    [merged] = [e for e in events if isinstance(e, PersonsMerged)]
    decided = reader.decisions()
    assert (merged.survivor_person_id, merged.merged_person_id) == (
        decided[a.row_id].person_id,
        decided[b.row_id].person_id,
    )
    assert (decided[link.row_id].decision, decided[link.row_id].duplicate_of) == ("duplicate", a.row_id)
    before = [(e.event_type, e.event_id) for e in events]
    assert len(before) == 14  # 13 decisions and one merge
    assert [decided[r.row_id].decision for r in others] == ["eligible"] * 10

    # 1. The same events again, and the same rows under new event ids (a fresh publish).
    every_row = [a, b, *others, link]
    republished = [r.model_copy(update={"event_id": f"again-{r.row_id}"}) for r in every_row]
    kit.publish(settings, every_row + republished)
    kit.wait_until(lambda: lag_of(settings) == 0, what="eligibility to catch up")
    kit.wait_until(
        lambda: kit.metric(service.url, "relief_eligibility_rows_seen_again_total") == len(every_row),
        what="the rows seen again to be counted",
    )
    assert [(e.event_type, e.event_id) for e in reader.settle(2.0)] == before

    # 2. The whole topic from offset 0: stop, forget the group's offsets, start again.
    service.stop()
    total = 3 * len(every_row)  # the rows, the same events again, the rows under new ids
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        # The group may take a moment to be empty after the member left; retry until it is gone.
        for _ in range(50):
            admin.delete_groups([settings.group_id("eligibility")])
            if lag_of(settings) == total:  # nothing committed any more
                break
            time.sleep(0.2)
    finally:
        admin.close()
    assert lag_of(settings) == total
    service = start_service("eligibility", settings, replica=1)
    kit.wait_until(lambda: lag_of(settings) == 0, timeout=60, what="the replay to finish")
    assert [(e.event_type, e.event_id) for e in reader.settle(2.0)] == before
    assert kit.metric(service.url, "relief_eligibility_persons") == 11


def test_poison_and_conflicting_rows_are_dead_lettered_and_the_partition_keeps_flowing(
    make_settings, start_service, row, decided_reader, kit
):
    settings = make_settings()
    start_service("eligibility", settings)
    reader = decided_reader(settings)
    dead = decided_reader(settings, BENEFICIARY_REGISTERED.dead_letter)
    first = row("Lan", "Pham", row_id="row-lan")
    kit.publish(settings, [first])
    reader.wait_for_decisions([first.row_id])
    changed = first.model_copy(update={"event_id": "edited-lan", "household_size": 7})
    later = row("Lan", "Pham", row_id="row-lan-2", partner="p2")
    kit.publish(
        settings,
        [changed, later],
        raw=[(first.name_key, b"{not json"), (first.name_key, b'{"event_type": "x"}')],
    )
    reader.wait_for_decisions([later.row_id])
    dead.wait_for(lambda events: len(dead.raw) + len(events) >= 3)
    reasons = sorted(e.reason for e in dead.events)  # type: ignore[attr-defined]
    assert any("RowConflict" in r and "row-lan" in r for r in reasons), reasons
    assert any(r.startswith("not JSON") for r in reasons)
    assert any("unknown event_type" in r for r in reasons)
    decided = reader.decisions()
    assert (decided[later.row_id].decision, decided[later.row_id].duplicate_of) == ("duplicate", first.row_id)
    assert [e.row_id for e in reader.events if isinstance(e, EligibilityDecided)].count("row-lan") == 1


def test_a_malformed_policy_stops_the_service_with_the_file_and_field(make_settings, start_service, tmp_path):
    policy = json.loads(
        (
            __import__("services.eligibility.policy", fromlist=["POLICY_DIR"]).POLICY_DIR / "v1.json"
        ).read_text()
    )
    policy["transfer_values"]["MY"]["base"] = "four hundred"
    path = tmp_path / "broken-policy.json"
    path.write_text(json.dumps(policy))
    with pytest.raises(RuntimeError) as caught:
        start_service("eligibility", make_settings(policy_file=path))
    message = str(caught.value)
    assert "eligibility exited with 2" in message
    assert str(path) in message
    assert "field transfer_values.MY.base" in message
