"""SPEC §4 and §5 rules of the eligibility domain, with the SPEC's examples written out."""

from __future__ import annotations

import pytest

from services.eligibility.domain import (
    ALREADY_ASSISTED,
    ASSISTANCE_NOT_COVERED,
    BUDGET_EXHAUSTED,
    COUNTRY_NOT_COVERED,
    NO_VULNERABILITY,
    Applicant,
    Merge,
    NearMatch,
    PersonStanding,
    Policy,
    ReviewError,
    RowIdentity,
    TransferValue,
    age_reason,
    budget_refused,
    choose_survivor,
    evaluate,
    possible_duplicates,
    resolve_identity,
    resolve_review,
)
from services.eligibility.policy import POLICY_DIR, load_policy_file
from shared.money import Money

POLICY = load_policy_file(POLICY_DIR / "v1.json", expected_version="v1")


def cash(**overrides: object) -> Applicant:
    values: dict[str, object] = {
        "assistance": "cash_relief",
        "age_years": 30,
        "vulnerabilities": ("job_loss",),
        "country": "MY",
        "household_size": 3,
    }
    values.update(overrides)
    return Applicant(**values)  # type: ignore[arg-type]


def decide(applicant: Applicant, prior: str | None = None, remaining: int | None = None):
    return evaluate(applicant, POLICY, prior_approval=prior, budget_remaining_minor=remaining)


# ---- cash: SPEC §5 ---------------------------------------------------------------------------


def test_an_adult_with_a_vulnerability_is_eligible_for_the_transfer_value_of_the_country():
    verdict = decide(cash(country="MY", household_size=3))
    assert verdict.decision == "eligible"
    assert verdict.reasons == ()
    # MY: base 400 + top_up 80 × (3 − 1) = 560 MYR = 56000 sen
    assert verdict.amount == Money("MYR", 56_000)
    assert verdict.duplicate_of is None


@pytest.mark.parametrize(
    ("country", "household", "currency", "amount_minor"),
    [
        ("HK", 1, "HKD", 100_000),  # 1000.00
        ("HK", 6, "HKD", 200_000),  # 1000 + 200 × 5
        ("HK", 9, "HKD", 200_000),  # capped at six
        ("MY", 2, "MYR", 48_000),
        ("TH", 4, "THB", 480_000),  # 3000 + 600 × 3
        ("PH", 1, "PHP", 500_000),
        ("VN", 3, "VND", 2_800_000),  # VND has no minor unit
        ("BD", 2, "BDT", 960_000),
        ("NP", 2, "NPR", 1_200_000),
        ("LK", 1, "LKR", 2_000_000),
        ("KH", 2, "KHR", 36_000_000),
        ("IN", 6, "INR", 1_200_000),  # 6000 + 1200 × 5
        ("ID", 2, "IDR", 144_000_000),
        ("JP", 2, "JPY", 14_400),  # JPY has no minor unit
        ("LA", 1, "LAK", 150_000_000),
        ("MM", 3, "MMK", 21_000_000),
        ("KR", 4, "KRW", 160_000),  # KRW has no minor unit
    ],
)
def test_the_transfer_table_gives_base_plus_top_up_per_dependant_up_to_six_in_minor_units(
    country, household, currency, amount_minor
):
    verdict = decide(cash(country=country, household_size=household))
    assert verdict.amount == Money(currency, amount_minor)
    assert isinstance(verdict.amount.amount_minor, int)


def test_under_18_on_the_registration_date_is_ineligible_with_age_under_18():
    verdict = decide(cash(age_years=17))
    assert (verdict.decision, verdict.reasons, verdict.amount) == ("ineligible", ("age_under_18",), None)


def test_exactly_18_is_old_enough():
    assert decide(cash(age_years=18)).decision == "eligible"


def test_no_vulnerability_listed_is_ineligible_with_no_vulnerability():
    verdict = decide(cash(vulnerabilities=()))
    assert (verdict.decision, verdict.reasons) == ("ineligible", (NO_VULNERABILITY,))


def test_every_failing_reason_is_listed():
    verdict = decide(cash(age_years=16, vulnerabilities=()), remaining=0)
    assert verdict.decision == "ineligible"
    assert verdict.reasons == ("age_under_18", NO_VULNERABILITY, BUDGET_EXHAUSTED)


def test_a_person_already_approved_for_cash_is_a_duplicate_pointing_to_the_first_approval():
    verdict = decide(cash(), prior="row-first")
    assert verdict.decision == "duplicate"
    assert verdict.reasons == (ALREADY_ASSISTED,)
    assert verdict.duplicate_of == "row-first"
    assert verdict.amount is None


def test_a_duplicate_still_lists_its_other_failing_reasons_but_not_the_budget():
    verdict = decide(cash(age_years=17), prior="row-first", remaining=0)
    assert verdict.decision == "duplicate"
    assert verdict.reasons == ("age_under_18", ALREADY_ASSISTED)
    assert verdict.duplicate_of == "row-first"


def test_an_approval_that_would_exceed_the_budget_ceiling_is_budget_exhausted():
    verdict = decide(cash(country="MY", household_size=3), remaining=55_999)
    assert (verdict.decision, verdict.reasons, verdict.amount) == ("ineligible", (BUDGET_EXHAUSTED,), None)


def test_an_approval_that_uses_the_last_of_the_budget_exactly_is_eligible():
    verdict = decide(cash(country="MY", household_size=3), remaining=56_000)
    assert verdict.decision == "eligible"


def test_no_ceiling_means_an_unlimited_budget():
    assert decide(cash(), remaining=None).decision == "eligible"


def test_a_country_missing_from_the_transfer_table_is_not_covered():
    verdict = decide(cash(country="FR"))
    assert (verdict.decision, verdict.reasons) == ("ineligible", (COUNTRY_NOT_COVERED,))


def test_a_policy_with_another_minimum_age_names_its_threshold():
    policy = Policy("v9", "cash_relief", 21, True, {"MY": TransferValue("MYR", 1, 0)}, frozenset())
    verdict = evaluate(cash(age_years=20), policy, prior_approval=None, budget_remaining_minor=None)
    assert verdict.reasons == (age_reason(21),) == ("age_under_21",)


def test_the_budget_refused_by_the_database_is_budget_exhausted():
    assert budget_refused().reasons == (BUDGET_EXHAUSTED,)
    assert not budget_refused().approves


# ---- in-kind: SPEC §5 ------------------------------------------------------------------------


@pytest.mark.parametrize("assistance", ["food_kit", "hygiene_kit", "remediation", "safe_migration_info"])
def test_in_kind_help_is_eligible_whatever_the_age_and_vulnerabilities(assistance):
    verdict = decide(cash(assistance=assistance, age_years=9, vulnerabilities=()))
    assert (verdict.decision, verdict.reasons, verdict.amount) == ("eligible", (), None)


def test_in_kind_help_of_a_type_already_approved_in_the_cycle_is_a_duplicate():
    verdict = decide(cash(assistance="food_kit"), prior="row-kit")
    assert (verdict.decision, verdict.reasons, verdict.duplicate_of) == (
        "duplicate",
        (ALREADY_ASSISTED,),
        "row-kit",
    )


def test_in_kind_help_the_policy_does_not_list_is_not_covered():
    policy = Policy("v9", "cash_relief", 18, True, {}, frozenset({"food_kit"}))
    verdict = evaluate(
        cash(assistance="remediation"), policy, prior_approval=None, budget_remaining_minor=None
    )
    assert (verdict.decision, verdict.reasons) == ("ineligible", (ASSISTANCE_NOT_COVERED,))


# ---- identity: SPEC §4 -----------------------------------------------------------------------

PASSPORT = "doc-passport-VNM-C1234567"
PERMIT = "doc-permit-VNM-WP998877"
NAME = "name-VNM-1990-05-17-AN-NGUYEN-VAN"


def standing(person_id: str, created: int, first_approval: int | None = None) -> PersonStanding:
    return PersonStanding(person_id, created, first_approval)


def test_a_row_with_unknown_keys_is_a_new_person_and_brings_its_keys():
    plan = resolve_identity(RowIdentity(PASSPORT, NAME, ()), {}, {}, "new")
    assert (plan.person_id, plan.is_new_person, plan.merges) == ("new", True, ())
    assert plan.keys_to_attach == (PASSPORT, NAME)


def test_a_row_without_a_document_has_only_its_name_key():
    plan = resolve_identity(RowIdentity(None, NAME, ()), {}, {}, "new")
    assert plan.keys_to_attach == (NAME,)


def test_rule_one_the_same_document_is_the_same_person_and_the_new_name_joins_it():
    plan = resolve_identity(
        RowIdentity(PASSPORT, "name-other-spelling", ()), {PASSPORT: "A"}, {"A": standing("A", 1)}, "new"
    )
    assert (plan.person_id, plan.is_new_person, plan.merges) == ("A", False, ())
    assert plan.keys_to_attach == ("name-other-spelling",)


def test_rule_two_the_same_name_birth_date_and_nationality_is_the_same_person():
    plan = resolve_identity(RowIdentity(PERMIT, NAME, ()), {NAME: "A"}, {"A": standing("A", 1)}, "new")
    assert (plan.person_id, plan.is_new_person) == ("A", False)
    assert plan.keys_to_attach == (PERMIT,)


def test_a_row_whose_keys_are_all_known_to_its_person_attaches_nothing():
    plan = resolve_identity(
        RowIdentity(PASSPORT, NAME, ()), {PASSPORT: "A", NAME: "A"}, {"A": standing("A", 1)}, "new"
    )
    assert (plan.person_id, plan.merges, plan.keys_to_attach) == ("A", (), ())


def test_a_row_matching_two_persons_merges_them_into_the_one_approved_first():
    persons = {
        "A": standing("A", created=1, first_approval=9),
        "B": standing("B", created=2, first_approval=4),
    }
    plan = resolve_identity(RowIdentity(PASSPORT, NAME, ()), {PASSPORT: "A", NAME: "B"}, persons, "new")
    assert plan.person_id == "B"
    assert plan.merges == (Merge("B", "A"),)


def test_without_approvals_the_person_created_first_survives_a_merge():
    persons = {"A": standing("A", created=5), "B": standing("B", created=2)}
    plan = resolve_identity(RowIdentity(PASSPORT, NAME, ()), {PASSPORT: "A", NAME: "B"}, persons, "new")
    assert plan.merges == (Merge("B", "A"),)


def test_an_approved_person_survives_over_an_older_one_without_approval():
    assert choose_survivor([standing("old", 1), standing("paid", 7, first_approval=3)]).person_id == "paid"


# ---- near misses: SPEC §4 --------------------------------------------------------------------


def test_a_near_miss_with_another_person_is_flagged_once_per_person():
    matches = [NearMatch("B", "row-b2"), NearMatch("B", "row-b1"), NearMatch("C", "row-c")]
    assert possible_duplicates("A", matches, set()) == (NearMatch("B", "row-b1"), NearMatch("C", "row-c"))


def test_a_row_never_flags_against_its_own_person():
    assert possible_duplicates("A", [NearMatch("A", "row-a")], set()) == ()


def test_a_pair_already_reviewed_is_not_flagged_again():
    assert possible_duplicates("A", [NearMatch("B", "row-b")], {"B"}) == ()


# ---- review decisions ------------------------------------------------------------------------


def test_same_person_merges_two_persons():
    outcome = resolve_review("same_person", "same passport photo", already_one_person=False)
    assert (outcome.status, outcome.merge) == ("same_person", True)


def test_same_person_on_persons_already_one_records_without_merging_again():
    outcome = resolve_review("same_person", "confirmed", already_one_person=True)
    assert (outcome.status, outcome.merge) == ("same_person", False)


def test_distinct_keeps_two_persons_apart():
    outcome = resolve_review("distinct", "sisters, different birth places", already_one_person=False)
    assert (outcome.status, outcome.merge) == ("distinct", False)


def test_persons_already_merged_cannot_be_declared_distinct():
    with pytest.raises(ReviewError) as caught:
        resolve_review("distinct", "mistake", already_one_person=True)
    assert caught.value.code == "already_one_person"


def test_a_review_decision_needs_a_reason():
    with pytest.raises(ReviewError) as caught:
        resolve_review("same_person", "  ", already_one_person=False)
    assert caught.value.code == "reason_required"


def test_an_unknown_resolution_is_refused():
    with pytest.raises(ReviewError) as caught:
        resolve_review("maybe", "unsure", already_one_person=False)
    assert caught.value.code == "unknown_resolution"
