"""The handlers on a real database: SPEC §4 identity, §5 policy, idempotency and review decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import func, select

from services.eligibility import store
from services.eligibility.domain import ReviewError
from services.eligibility.handlers import RowConflict
from shared.auth import Principal
from shared.db import make_engine, transaction
from shared.events import EligibilityDecided, PersonsMerged

FINANCE = Principal("pfin0001", "Finance Officer", "finance")


def decisions(events):
    return [e for e in events if isinstance(e, EligibilityDecided)]


def merges(events):
    return [e for e in events if isinstance(e, PersonsMerged)]


def approvals(harness) -> int:
    with transaction(harness.engine) as session:
        return session.exec(select(func.count()).select_from(store.Approval)).one()


def open_reviews(harness) -> list[dict]:
    return harness.eligibility.list_reviews("open")


# ---- SPEC §4 examples ------------------------------------------------------------------------


def test_the_same_name_written_two_ways_with_the_same_birth_date_is_one_person(harness, row):
    first = row("Nguyễn Văn", "An", partner="p1")
    second = row("AN", "NGUYEN VAN", partner="p2", country="TH")
    out = decisions(harness.apply(first, second))
    assert out[0].person_id == out[1].person_id
    assert [d.decision for d in out] == ["eligible", "duplicate"]
    assert out[1].reasons == ["already_assisted"] and out[1].duplicate_of == first.row_id
    assert approvals(harness) == 1


def test_the_same_document_after_normalisation_is_one_person_whatever_the_name(harness, row):
    first = row("An", "Nguyen", id_type="passport", id_number="C1234-567")
    second = row("Binh", "Tran", id_type="passport", id_number="c 1234567", date_of_birth=first.registered_on)
    out = decisions(harness.apply(first, second))
    assert out[0].person_id == out[1].person_id
    assert out[1].decision == "duplicate"


def test_the_same_name_and_birth_date_with_another_nationality_is_two_people(harness, row):
    out = decisions(
        harness.apply(row("An", "Nguyen", nationality="VNM"), row("An", "Nguyen", nationality="KHM"))
    )
    assert out[0].person_id != out[1].person_id
    assert [d.decision for d in out] == ["eligible", "eligible"]
    assert open_reviews(harness) == []  # near keys include the nationality: not even a near miss


def test_names_one_edit_apart_are_two_people_flagged_for_review_once(harness, row):
    first = row("Siti", "Rahmah", nationality="IDN", partner="p1")
    second = row("Siti", "Rahma", nationality="IDN", partner="p2", country="HK")
    out = decisions(harness.apply(first, second))
    assert out[0].person_id != out[1].person_id
    assert [d.decision for d in out] == ["eligible", "eligible"]
    [review] = open_reviews(harness)
    assert review["row_ids"] == [first.row_id, second.row_id]
    assert review["person_ids"] == [out[0].person_id, out[1].person_id]
    assert review["country"] == "HK"
    assert review["partners"] == ["Partner P1", "Partner P2"]
    # The same spellings again: the pair is already under review, and no row flags its own person.
    harness.apply(
        row("Siti", "Rahma", nationality="IDN", partner="p3"), row("Siti", "Rahmah", nationality="IDN")
    )
    assert len(open_reviews(harness)) == 1
    assert harness.metric("relief_eligibility_review_flags_total") == 1


def test_another_birth_date_is_not_a_near_miss(harness, row):
    from datetime import date

    harness.apply(row("Siti", "Rahmah"), row("Siti", "Rahma", date_of_birth=date(1991, 5, 17)))
    assert open_reviews(harness) == []


def near_sets(harness) -> dict[str, list[str]]:
    with transaction(harness.engine) as session:
        return {
            stored.row_id: stored.near_keys.split() for stored in session.exec(select(store.NearSet)).all()
        }


def test_near_keys_are_filed_once_per_person_and_block_and_compared_across_batches(harness, row):
    passport = {"id_type": "passport", "id_number": "B7654321", "nationality": "IDN"}
    first = row("Siti", "Rahmah", partner="p1", **passport)
    harness.apply(first)
    assert list(near_sets(harness)) == [first.row_id]
    assert sorted(near_sets(harness)[first.row_id]) == sorted(set(first.near_keys))
    # The same person and spelling again (another partner): nothing new to file.
    again = row("SITI", "RAHMAH", partner="p2", **passport)
    harness.apply(again)
    assert list(near_sets(harness)) == [first.row_id]
    # The same person under another spelling files only the keys it brought.
    respelt = row("Siti", "Rahmat", partner="p3", **passport)
    out = decisions(harness.apply(respelt))
    assert out[0].decision == "duplicate"
    filed = near_sets(harness)
    assert set(filed[respelt.row_id]) == set(respelt.near_keys) - set(first.near_keys)
    assert filed[respelt.row_id]  # "Rahmat" has deletions "Rahmah" lacks
    assert open_reviews(harness) == []  # its own spellings never flag a person
    # Another person one edit from the second spelling only, in a later batch: flagged against it.
    other = row("Sitti", "Rahmat", nationality="IDN", partner="p4")
    assert not set(other.near_keys) & set(first.near_keys)
    harness.apply(other)
    [review] = open_reviews(harness)
    assert review["row_ids"] == [respelt.row_id, other.row_id]


def test_a_version_1_row_is_decided_with_its_old_fingerprint_and_no_near_miss_search(harness, row):
    from services.eligibility.handlers import fingerprint
    from shared.events import BeneficiaryRegistered, parse_event

    current = row("Siti", "Rahmah", nationality="IDN")
    old_body = current.envelope()
    old_body["schema_version"] = 1
    del old_body["block_key"]
    old = parse_event(old_body)
    assert isinstance(old, BeneficiaryRegistered) and old.block_key is None
    assert fingerprint(old) == fingerprint(current)  # a redelivery after the upgrade is the same row
    out = decisions(harness.apply(old))
    assert [d.decision for d in out] == ["eligible"]
    assert near_sets(harness) == {}
    # The same row published again in version 2 (a new event id): seen before, not a conflict.
    assert decisions(harness.apply(current.model_copy(update={"event_id": "republished-1"}))) == []
    assert harness.metric("relief_eligibility_rows_seen_again_total") == 1
    # A block-less row is not filed, so a near miss arriving later is not compared with it.
    assert [d.decision for d in decisions(harness.apply(row("Siti", "Rahma", nationality="IDN")))] == [
        "eligible"
    ]
    assert open_reviews(harness) == []


def test_transitive_passport_then_permit_by_name_then_permit_only_is_one_person(harness, row):
    passport = row(
        "Maria", "Santos", nationality="PHL", id_type="passport", id_number="P7654321", partner="p1"
    )
    permit_by_name = row(
        "MARIA", "SANTOS", nationality="PHL", id_type="work_permit", id_number="WP-1122", partner="p2"
    )
    permit_only = row(
        "Ma.", "Santos-Reyes", nationality="PHL", id_type="work_permit", id_number="wp1122", partner="p3"
    )
    out = decisions(harness.apply(passport))
    out += decisions(harness.apply(permit_by_name))
    out += decisions(harness.apply(permit_only))
    assert len({d.person_id for d in out}) == 1
    assert [d.decision for d in out] == ["eligible", "duplicate", "duplicate"]
    assert {d.duplicate_of for d in out[1:]} == {passport.row_id}
    assert approvals(harness) == 1
    assert harness.metric("relief_eligibility_persons") == 1


def test_a_row_linking_two_approved_persons_merges_them_into_the_first_approved(harness, row):
    a = row("Aung", "Min", nationality="MMR", id_type="passport", id_number="MA111", country="TH")
    b = row("Kyaw", "Zin", nationality="MMR", id_type="work_permit", id_number="TW222", country="MY")
    first = decisions(harness.apply(a)) + decisions(harness.apply(b))
    assert [d.decision for d in first] == ["eligible", "eligible"]  # two persons as far as anyone knew
    link = row("Kyaw", "Zin", nationality="MMR", id_type="passport", id_number="MA111")
    out = harness.apply(link)
    [merged] = merges(out)
    assert (merged.survivor_person_id, merged.merged_person_id) == (first[0].person_id, first[1].person_id)
    assert merged.cause == "identity_rule"
    [linked] = decisions(out)
    assert out.index(merged) < out.index(linked)  # the merge is published before the decision
    assert (linked.person_id, linked.decision, linked.duplicate_of) == (
        first[0].person_id,
        "duplicate",
        a.row_id,
    )
    # Later rows of the merged person resolve to the survivor and never make a new approval.
    later = decisions(
        harness.apply(row("K.", "Zin", nationality="MMR", id_type="work_permit", id_number="TW222"))
    )
    assert (later[0].person_id, later[0].duplicate_of) == (first[0].person_id, a.row_id)
    assert approvals(harness) == 2
    assert harness.metric("relief_eligibility_merges_total", {"cause": "identity_rule"}) == 1
    assert harness.metric("relief_eligibility_persons") == 1
    keys = harness.keys_of()
    assert keys[-3] == (first[0].person_id, "persons.merged")


def test_merges_inside_one_batch_chain_and_later_batches_see_the_flattened_result(harness, row):
    a = row("Aung", "Min", nationality="MMR", id_type="passport", id_number="MA1")
    b = row("Kyaw", "Zin", nationality="MMR", id_type="work_permit", id_number="TW2")
    c = row("Thida", "Win", nationality="MMR", id_type="national_id", id_number="NI3")
    link_ab = row("Kyaw", "Zin", nationality="MMR", id_type="passport", id_number="MA1")
    link_bc = row("Thida", "Win", nationality="MMR", id_type="work_permit", id_number="TW2")
    out = harness.apply(a, b, c, link_ab, link_bc)
    decided = {d.row_id: d for d in decisions(out)}
    survivor = decided[a.row_id].person_id
    assert [(m.survivor_person_id, m.merged_person_id) for m in merges(out)] == [
        (survivor, decided[b.row_id].person_id),
        (survivor, decided[c.row_id].person_id),
    ]
    assert decided[link_ab.row_id].person_id == decided[link_bc.row_id].person_id == survivor
    assert (decided[link_bc.row_id].decision, decided[link_bc.row_id].duplicate_of) == ("duplicate", a.row_id)
    # A later batch reaching the last merged person by its own document resolves to the survivor.
    [later] = decisions(
        harness.apply(row("T.", "Win", nationality="MMR", id_type="national_id", id_number="NI3"))
    )
    assert (later.person_id, later.duplicate_of) == (survivor, a.row_id)
    assert harness.metric("relief_eligibility_persons") == 1
    assert approvals(harness) == 3  # three persons were approved before anyone knew; none since


def test_a_near_miss_inside_one_batch_is_flagged_and_a_merge_in_the_same_batch_closes_it(harness, row):
    first = row("Siti", "Rahmah", nationality="IDN", id_type="passport", id_number="B9")
    second = row("Siti", "Rahma", nationality="IDN")
    link = row("Siti", "Rahma", nationality="IDN", id_type="passport", id_number="B9")
    out = harness.apply(first, second, link)
    assert len(merges(out)) == 1
    assert harness.metric("relief_eligibility_review_flags_total") == 1
    assert open_reviews(harness) == []
    assert len(harness.eligibility.list_reviews("already_one_person")) == 1


# ---- SPEC §5 through the handler -------------------------------------------------------------


def test_decisions_carry_policy_cycle_amount_and_the_payout_fields_unchanged(harness, row):
    [decided] = decisions(harness.apply(row(country="PH", household_size=2, payout_method="bank_transfer")))
    assert (decided.decision, decided.amount_minor, decided.currency) == ("eligible", 600_000, "PHP")
    assert (decided.policy_version, decided.cycle) == ("v1", "C1")
    assert (decided.payout_method, decided.payout_account_sealed) == ("bank_transfer", "sealed-account-blob")


def test_an_ineligible_row_lists_every_reason_and_carries_no_amount(harness, row):
    [decided] = decisions(harness.apply(row(age_years=16, vulnerabilities=[])))
    assert (decided.decision, decided.reasons) == ("ineligible", ["age_under_18", "no_vulnerability"])
    assert decided.amount_minor is None and decided.currency is None
    assert (
        harness.metric(
            "relief_eligibility_decisions_total", {"decision": "ineligible", "reason": "age_under_18"}
        )
        == 1
    )


def test_an_ineligible_first_row_does_not_block_a_later_eligible_one(harness, row):
    out = decisions(harness.apply(row(age_years=35, vulnerabilities=[]), row(age_years=35)))
    assert [d.decision for d in out] == ["ineligible", "eligible"]


def test_in_kind_help_once_per_type_per_cycle_and_independent_of_cash(harness, row):
    out = decisions(
        harness.apply(
            row(
                assistance="food_kit",
                age_years=12,
                vulnerabilities=[],
                payout_method=None,
                payout_account_sealed=None,
            ),
            row(assistance="cash_relief"),
            row(assistance="hygiene_kit", payout_method=None, payout_account_sealed=None),
            row(assistance="food_kit", payout_method=None, payout_account_sealed=None),
        )
    )
    assert [d.decision for d in out] == ["eligible", "eligible", "eligible", "duplicate"]
    assert out[3].duplicate_of == out[0].row_id
    assert out[0].amount_minor is None


def test_the_budget_ceiling_holds_and_only_approvals_use_it(make_harness, row):
    harness = make_harness(budget_ceilings={"MY": 2 * 56_000})
    out = decisions(
        harness.apply(
            row("Ana", "Lim", country="MY"),
            row("Ana", "Lim", country="MY"),  # a duplicate uses no budget
            row("Beth", "Ong", country="MY"),
            row("Cara", "Tan", country="MY"),
            row("Dina", "Wu", country="TH"),  # another country, no ceiling
        )
    )
    assert [d.decision for d in out] == ["eligible", "duplicate", "eligible", "ineligible", "eligible"]
    assert out[3].reasons == ["budget_exhausted"]
    with transaction(harness.engine) as session:
        assert store.budget_reserved(session, "MY", "C1") == 112_000


# ---- idempotency -----------------------------------------------------------------------------


def test_the_same_batch_delivered_twice_decides_nothing_new(harness, row):
    batch = [row("An", "Nguyen"), row("Binh", "Tran"), row("AN", "NGUYEN")]
    first = harness.apply(*batch)
    assert harness.apply(*batch) == []
    assert len(harness.published()) == len(first) == 3
    assert approvals(harness) == 2
    # A redelivery is recognised by the event id its row's decision keeps: not a row seen again.
    assert harness.metric("relief_eligibility_rows_seen_again_total") == 0


def test_a_row_republished_under_a_new_event_id_is_not_decided_again(harness, row):
    original = row("An", "Nguyen")
    harness.apply(original)
    again = original.model_copy(update={"event_id": "republished-1", "payout_account_sealed": "resealed"})
    assert harness.apply(again) == []
    assert harness.metric("relief_eligibility_rows_seen_again_total") == 1


def test_a_row_id_arriving_with_other_content_is_refused_not_decided_twice(harness, row):
    original = row("An", "Nguyen")
    harness.apply(original)
    changed = original.model_copy(update={"event_id": "changed-1", "household_size": 6})
    with pytest.raises(RowConflict):
        harness.apply(changed)
    assert len(harness.published()) == 1


def test_the_same_event_twice_in_one_batch_is_decided_once(harness, row):
    event = row()
    assert len(harness.apply(event, event)) == 1
    assert harness.metric("relief_eligibility_rows_seen_again_total") == 0


def test_a_failed_gauge_read_after_the_commit_does_not_fail_the_batch(harness, row, tmp_path):
    harness.apply(row("An", "Nguyen"))
    assert harness.metric("relief_eligibility_persons") == 1
    working = harness.eligibility.reader
    harness.eligibility.reader = make_engine(f"sqlite:///{tmp_path / 'missing' / 'reader.db'}")
    try:
        # Committed and staged, counted once; the gauge keeps its last value instead of failing
        # the batch (a retry or a dead letter of rows already decided).
        assert len(decisions(harness.apply(row("Binh", "Tran")))) == 1
    finally:
        harness.eligibility.reader.dispose()
        harness.eligibility.reader = working
    assert (
        harness.metric("relief_eligibility_decisions_total", {"decision": "eligible", "reason": "none"}) == 2
    )
    assert harness.metric("relief_eligibility_persons") == 1
    harness.apply(row("Chi", "Le"))
    assert harness.metric("relief_eligibility_persons") == 3


# ---- review decisions ------------------------------------------------------------------------


def flagged_pair(harness, row):
    first = row("Siti", "Rahmah", nationality="IDN", partner="p1", country="HK")
    second = row("Siti", "Rahma", nationality="IDN", partner="p2", country="MY")
    out = decisions(harness.apply(first, second))
    [review] = open_reviews(harness)
    return out, review


def test_a_reviewers_same_person_merges_the_pair_and_announces_it(harness, row):
    (a, b), review = flagged_pair(harness, row)
    resolved = harness.eligibility.resolve_review(
        review["review_id"], "same_person", "same phone and employer", FINANCE
    )
    merged = resolved.merge
    assert (merged.survivor_person_id, merged.merged_person_id) == (a.person_id, b.person_id)
    assert (merged.cause, merged.review_id) == ("review", review["review_id"])
    assert merges(harness.published()) == [merged]
    assert resolved.review["status"] == "same_person"
    assert resolved.review["resolved_by"] == FINANCE.partner_id
    assert resolved.review["history"][0]["reason"] == "same phone and employer"
    assert harness.metric("relief_eligibility_merges_total", {"cause": "review"}) == 1
    assert open_reviews(harness) == []
    # From now on a row of either spelling is the one person, already assisted.
    later = decisions(harness.apply(row("Siti", "Rahma", nationality="IDN", partner="p3")))
    assert (later[0].person_id, later[0].decision, later[0].duplicate_of) == (
        a.person_id,
        "duplicate",
        a.row_id,
    )


def test_distinct_keeps_the_pair_apart_and_a_later_row_does_not_flag_it_again(harness, row):
    (a, b), review = flagged_pair(harness, row)
    resolved = harness.eligibility.resolve_review(
        review["review_id"], "distinct", "two different women", FINANCE
    )
    assert resolved.merge is None and resolved.review["status"] == "distinct"
    harness.apply(row("Siti", "Rahma", nationality="IDN", partner="p3"))
    assert open_reviews(harness) == []
    assert harness.metric("relief_eligibility_review_flags_total") == 1


def test_a_later_decision_can_turn_distinct_into_same_person_but_not_back(harness, row):
    _, review = flagged_pair(harness, row)
    harness.eligibility.resolve_review(review["review_id"], "distinct", "looked different", FINANCE)
    resolved = harness.eligibility.resolve_review(
        review["review_id"], "same_person", "documents found", FINANCE
    )
    assert resolved.merge is not None
    assert [h["resolution"] for h in resolved.review["history"]] == ["distinct", "same_person"]
    with pytest.raises(ReviewError) as caught:
        harness.eligibility.resolve_review(review["review_id"], "distinct", "changed my mind", FINANCE)
    assert caught.value.code == "already_one_person"


def test_an_identity_rule_merging_a_flagged_pair_closes_the_flag(harness, row):
    first = row("Siti", "Rahmah", nationality="IDN", id_type="passport", id_number="B123")
    second = row("Siti", "Rahma", nationality="IDN")
    harness.apply(first, second)
    assert len(open_reviews(harness)) == 1
    harness.apply(row("Siti", "Rahma", nationality="IDN", id_type="passport", id_number="B123"))
    assert open_reviews(harness) == []
    [closed] = harness.eligibility.list_reviews("already_one_person")
    assert closed["rows"][0]["current_person_id"] == closed["rows"][1]["current_person_id"]


def test_an_unknown_review_is_not_found(harness):
    with pytest.raises(ReviewError) as caught:
        harness.eligibility.resolve_review("no-such-review", "distinct", "x", FINANCE)
    assert caught.value.code == "review_not_found"


def scanned_persons(harness) -> int:
    with transaction(harness.engine) as session:
        return session.exec(
            select(func.count()).select_from(store.Person).where(store.Person.merged_into.is_(None))
        ).one()


@pytest.mark.parametrize("seed", range(4))
def test_the_kept_person_count_equals_a_scan_after_new_persons_rule_merges_and_review_merges(
    harness, row, seed
):
    import random

    rng = random.Random(seed)
    documents = [f"D{n}" for n in range(12)]
    names = [("Aung", "Min"), ("Kyaw", "Zin"), ("Thida", "Win"), ("Siti", "Rahmah"), ("Maria", "Santos")]
    for _ in range(6):
        batch = []
        for _ in range(rng.randint(1, 8)):
            given, family = rng.choice(names)
            batch.append(
                row(given, family, nationality="MMR", id_type="passport", id_number=rng.choice(documents))
            )
        harness.apply(*batch)
        assert harness.metric("relief_eligibility_persons") == scanned_persons(harness)
    assert merges(harness.published())  # the documents and names linked persons together
    (a, b), review = flagged_pair(harness, row)
    harness.eligibility.resolve_review(review["review_id"], "same_person", "same employer", FINANCE)
    scanned = scanned_persons(harness)
    assert harness.metric("relief_eligibility_persons") == scanned
    with transaction(harness.engine) as session:
        assert store.count_persons(session) == scanned
        assert session.exec(select(store.Tally.value)).one() == scanned  # the kept row, not a scan


def test_a_database_from_before_the_kept_count_gets_it_from_a_scan_at_start_up(harness, row):
    harness.apply(row("Aung", "Min"), row("Kyaw", "Zin"), row("Thida", "Win"))
    with transaction(harness.engine) as session:
        session.exec(store.Tally.__table__.delete())  # as a database written before the count
    assert harness.eligibility.start_counts() is True
    assert harness.eligibility.start_counts() is False  # once only
    harness.apply(row("Siti", "Rahmah"))
    with transaction(harness.engine) as session:
        assert store.count_persons(session) == 4
        assert session.exec(select(store.Tally.value)).one() == 4  # read from the kept row


@given(parts=st.lists(st.text(max_size=80), min_size=1, max_size=4))
def test_derived_ids_are_the_version_5_uuids_of_their_parts(parts):
    import uuid

    from services.eligibility.handlers import _NAMESPACE, derived_id

    expected = uuid.uuid5(_NAMESPACE, "\x1f".join(parts))
    assert derived_id(*parts) == str(expected)
    assert uuid.UUID(derived_id(*parts)).version == 5
