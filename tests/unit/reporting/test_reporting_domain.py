"""Reach rules (SPEC §6) on the pure reference computation, no database."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import orjson
import pytest

from services.reporting.domain import (
    AGE_BANDS,
    Disbursed,
    PaymentState,
    Reach,
    RowDecision,
    age_band,
    compute_reach,
    csv_safe,
    decision_version,
    latest_decisions,
    latest_payments,
    person_roots,
    reach_csv,
    reach_document,
    suppress,
)


def row(
    row_id: str,
    person: str,
    *,
    partner: str = "Tenaganita",
    country: str = "MY",
    decision: str = "eligible",
    assistance: str = "cash_relief",
    sex: str = "F",
    age: int = 30,
    household: int = 1,
    registered_on: date = date(2026, 1, 5),
    version: str = "v1",
) -> RowDecision:
    return RowDecision(
        row_id, person, partner, decision, assistance, country, sex, age, household, registered_on, version
    )


def paid(row_id: str, person: str, *, status: str = "paid", sequence: int = 3, currency: str = "MYR",
         amount: int = 40000, ref: str | None = None) -> PaymentState:  # fmt: skip
    return PaymentState(ref or f"pay-{row_id}", row_id, person, "MY", amount, currency, status, sequence)


# ---- who counts ---------------------------------------------------------------------------------


def test_a_person_reached_through_two_partners_in_two_countries_counts_once_in_total_and_once_per_group():
    rows = [
        row("r1", "anna", partner="Tenaganita", country="MY"),
        row("r2", "anna", partner="HELP for Domestic Workers", country="HK"),
        row("r3", "budi", partner="Tenaganita", country="MY"),
    ]
    reach = compute_reach(rows, [paid("r1", "anna"), paid("r2", "anna", currency="HKD"), paid("r3", "budi")])
    assert reach.beneficiaries_reached == 2
    assert reach.by_country == {"HK": 1, "MY": 2}
    assert reach.by_partner == {"HELP for Domestic Workers": 1, "Tenaganita": 2}
    assert reach.by_assistance == {"cash_relief": 2}
    assert sum(reach.by_sex.values()) == 2  # one sex per person, so the groups add up to the total
    assert sum(reach.by_age_band.values()) == 2


def test_cash_counts_only_once_paid_and_not_after_a_reversal():
    rows = [row("r1", "anna"), row("r2", "budi"), row("r3", "chai"), row("r4", "dewi")]
    payments = [
        paid("r1", "anna"),
        paid("r2", "budi", status="sent", sequence=2),
        paid("r3", "chai", status="reversed", sequence=4),
        paid("r4", "dewi", status="failed", sequence=3),
    ]
    reach = compute_reach(rows, payments)
    assert reach.beneficiaries_reached == 1
    assert reach.disbursed == {"MYR": Disbursed(amount_minor=40000, payments=1)}


def test_in_kind_help_counts_once_approved_and_never_when_ineligible_or_duplicate():
    rows = [
        row("r1", "anna", assistance="food_kit"),
        row("r2", "budi", assistance="hygiene_kit", decision="ineligible"),
        row("r3", "chai", assistance="food_kit", decision="duplicate"),
    ]
    reach = compute_reach(rows, [])
    assert reach.beneficiaries_reached == 1
    assert reach.by_assistance == {"food_kit": 1}
    assert reach.duplicates_detected == 1


def test_an_eligible_cash_row_without_a_paid_payment_is_not_reached_yet():
    assert compute_reach([row("r1", "anna")], []).beneficiaries_reached == 0


def test_people_reached_takes_each_persons_largest_household_among_delivered_rows():
    rows = [
        row("r1", "anna", household=3),
        row("r2", "anna", household=5, assistance="food_kit"),
        row("r3", "anna", household=9, assistance="hygiene_kit", decision="ineligible"),  # not delivered
        row("r4", "budi", household=2),
    ]
    reach = compute_reach(rows, [paid("r1", "anna"), paid("r4", "budi")])
    assert reach.beneficiaries_reached == 2
    assert reach.people_reached == 5 + 2


def test_duplicates_detected_counts_rows_marked_duplicate():
    rows = [
        row("r1", "anna"),
        row("r2", "anna", decision="duplicate"),
        row("r3", "anna", decision="duplicate"),
    ]
    assert compute_reach(rows, [paid("r1", "anna")]).duplicates_detected == 2


def test_disbursed_adds_paid_payments_per_currency():
    payments = [
        paid("r1", "anna", amount=40000),
        paid("r2", "budi", amount=56000),
        paid("r3", "chai", currency="THB", amount=300000),
        paid("r4", "dewi", status="reversed", sequence=4, amount=99999),
    ]
    reach = compute_reach([], payments)
    assert reach.disbursed == {"MYR": Disbursed(96000, 2), "THB": Disbursed(300000, 1)}


# ---- merges -------------------------------------------------------------------------------------


def test_merged_persons_count_once_and_merges_are_transitive():
    rows = [row("r1", "p1"), row("r2", "p2", assistance="food_kit"), row("r3", "p3", assistance="food_kit")]
    merges = [("p2", "p1"), ("p3", "p2")]  # p1 → p2 → p3: one person
    reach = compute_reach(rows, [paid("r1", "p1")], merges)
    assert reach.beneficiaries_reached == 1


def test_person_roots_do_not_depend_on_the_order_of_merges():
    merges = [("b", "a"), ("c", "b"), ("x", "y"), ("c", "d")]
    forward = person_roots(merges)
    backward = person_roots(list(reversed(merges)))
    assert forward == backward
    assert {forward[p] for p in "abcd"} == {"a"}
    assert forward["x"] == forward["y"] == "x"


def test_a_merge_cycle_still_resolves_to_one_person():
    assert set(person_roots([("a", "b"), ("b", "a")]).values()) == {"a"}


# ---- sex and age band from the first delivered row ---------------------------------------------


@pytest.mark.parametrize(
    ("age", "band"),
    [(0, "0-17"), (17, "0-17"), (18, "18-29"), (29, "18-29"), (30, "30-44"), (44, "30-44"), (45, "45-59"),
     (59, "45-59"), (60, "60+"), (120, "60+")],
)  # fmt: skip
def test_age_bands_follow_the_spec(age, band):
    assert age_band(age) == band


def test_age_band_and_sex_come_from_the_persons_earliest_delivered_row():
    rows = [
        row("r2", "anna", age=18, sex="F", registered_on=date(2026, 3, 1)),
        row("r1", "anna", age=17, sex="X", registered_on=date(2026, 1, 1), assistance="food_kit"),
        row(
            "r0", "anna", age=16, registered_on=date(2025, 6, 1), decision="ineligible", assistance="food_kit"
        ),
    ]
    reach = compute_reach(rows, [paid("r2", "anna")])
    assert reach.by_age_band == {"0-17": 1}
    assert reach.by_sex == {"X": 1}


def test_rows_registered_the_same_day_are_ordered_by_row_id():
    rows = [row("r-b", "anna", age=30), row("r-a", "anna", age=45, assistance="food_kit")]
    assert compute_reach(rows, [paid("r-b", "anna")]).by_age_band["45-59"] == 1


def test_groups_nobody_was_reached_in_are_left_out():
    reach = compute_reach([row("r1", "anna", age=33, assistance="food_kit")], [])
    assert reach.by_age_band == {"30-44": 1}
    assert reach.by_sex == {"F": 1}
    empty = compute_reach([], [])
    assert empty.by_age_band == empty.by_sex == empty.by_country == {}
    assert empty.beneficiaries_reached == empty.people_reached == 0
    assert set(AGE_BANDS) == {"0-17", "18-29", "30-44", "45-59", "60+"}


# ---- newest facts win whatever the order --------------------------------------------------------


def test_the_payment_state_with_the_highest_sequence_wins_in_any_order():
    states = [paid("r1", "a", status="pending", sequence=1), paid("r1", "a", status="paid", sequence=3),
              paid("r1", "a", status="reversed", sequence=4), paid("r1", "a", status="sent", sequence=2)]  # fmt: skip
    assert latest_payments(states)["pay-r1"].status == "reversed"
    assert latest_payments(reversed(states))["pay-r1"].status == "reversed"


def test_the_later_decision_on_a_row_wins_in_any_order():
    early = row(
        "r1", "anna", decision="eligible", version=decision_version(datetime(2026, 1, 5, tzinfo=UTC), "e1")
    )
    late = row(
        "r1", "anna", decision="ineligible", version=decision_version(datetime(2026, 1, 6, tzinfo=UTC), "e0")
    )
    assert latest_decisions([early, late])["r1"].decision == "ineligible"
    assert latest_decisions([late, early])["r1"].decision == "ineligible"


def test_decision_versions_compare_in_time_order_across_time_zones():
    from datetime import timedelta, timezone

    utc = decision_version(datetime(2026, 1, 5, 10, 0, tzinfo=UTC), "a")
    earlier_in_manila = decision_version(
        datetime(2026, 1, 5, 17, 0, tzinfo=timezone(timedelta(hours=8))), "a"
    )
    assert earlier_in_manila < utc


# ---- documents and exports ----------------------------------------------------------------------


def sample_reach() -> Reach:
    rows = [
        row("r1", "anna", partner="=HYPERLINK(evil)", country="MY"),
        row("r2", "budi", partner="Tenaganita", country="TH", sex="M", age=61, household=4),
        row("r3", "chai", partner="Tenaganita", country="TH", sex="M", age=25, assistance="food_kit"),
    ]
    return compute_reach(rows, [paid("r1", "anna"), paid("r2", "budi", currency="THB", amount=480000)])


def test_the_reach_document_has_every_spec_field_with_sorted_groups():
    document = reach_document(sample_reach(), datetime(2026, 2, 1, 8, 30, tzinfo=UTC))
    assert document["as_of"] == "2026-02-01T08:30:00Z"
    assert document["beneficiaries_reached"] == 3
    assert document["people_reached"] == 1 + 4 + 1
    assert document["by_country"] == {"MY": 1, "TH": 2}
    assert document["by_age_band"] == {"18-29": 1, "30-44": 1, "60+": 1}
    assert document["disbursed"] == {"MYR": {"amount_minor": 40000, "payments": 1},
                                     "THB": {"amount_minor": 480000, "payments": 1}}  # fmt: skip
    expected = {"as_of", "beneficiaries_reached", "people_reached", "by_country", "by_sex", "by_age_band",
                "by_partner", "by_assistance", "disbursed", "duplicates_detected"}  # fmt: skip
    assert expected <= set(document)
    for breakdown in ("by_country", "by_partner", "by_assistance", "by_sex", "by_age_band"):
        assert list(document[breakdown]) == sorted(document[breakdown])


def test_equal_reach_gives_byte_equal_json():
    moment = datetime(2026, 2, 1, tzinfo=UTC)
    first = orjson.dumps(reach_document(sample_reach(), moment), option=orjson.OPT_SORT_KEYS)
    second = orjson.dumps(reach_document(sample_reach(), moment), option=orjson.OPT_SORT_KEYS)
    assert first == second


@pytest.mark.parametrize(
    ("count", "min_cell", "shown"),
    [(0, 5, "0"), (1, 5, "<5"), (4, 5, "<5"), (5, 5, "5"), (3, None, "3"), (1, 1, "1"), (1, 2, "<2")],
)
def test_small_cells_are_suppressed_from_one_to_min_cell_minus_one(count, min_cell, shown):
    assert suppress(count, min_cell) == shown


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=x"])
def test_cells_that_a_spreadsheet_would_run_are_prefixed_with_a_quote(cell):
    assert csv_safe(cell) == "'" + cell


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_csv_has_totals_and_one_line_per_breakdown_group():
    lines = parse(reach_csv(sample_reach()))
    totals = {
        line["figure"]: line["persons"] for line in lines if line["breakdown"] == "total" and line["persons"]
    }
    assert totals == {"beneficiaries_reached": "3", "people_reached": "6"}
    by_country = {line["group"]: line["persons"] for line in lines if line["breakdown"] == "by_country"}
    assert by_country == {"MY": "1", "TH": "2"}
    assert {line["country"] for line in lines if line["breakdown"] == "by_country"} == {"MY", "TH"}
    money = {
        (line["figure"], line["group"]): line["value"] for line in lines if line["breakdown"] == "by_currency"
    }
    assert money[("disbursed_amount_minor", "THB")] == "480000"
    assert money[("payments_paid", "MYR")] == "1"


def test_the_csv_neutralises_formulas_in_partner_names():
    lines = parse(reach_csv(sample_reach()))
    partners = {line["group"] for line in lines if line["breakdown"] == "by_partner"}
    assert "'=HYPERLINK(evil)" in partners
    assert not any(value.startswith("=") for line in lines for value in line.values())


def test_min_cell_suppresses_every_small_count_in_the_csv_but_not_amounts():
    lines = parse(reach_csv(sample_reach(), min_cell=3))
    by_country = {line["group"]: line["persons"] for line in lines if line["breakdown"] == "by_country"}
    assert by_country == {"MY": "<3", "TH": "<3"}
    age = {line["group"]: line["persons"] for line in lines if line["breakdown"] == "by_age_band"}
    assert age == {"18-29": "<3", "30-44": "<3", "60+": "<3"}
    money = {
        (line["figure"], line["group"]): line["value"] for line in lines if line["breakdown"] == "by_currency"
    }
    assert money[("disbursed_amount_minor", "THB")] == "480000"
    assert money[("payments_paid", "THB")] == "<3"


def test_hxl_adds_a_hashtag_row_under_the_header():
    text = reach_csv(sample_reach(), hxl=True)
    header, tags = list(csv.reader(io.StringIO(text)))[:2]
    assert len(tags) == len(header)
    assert all(tag.startswith("#") for tag in tags)
    assert {"#country+code", "#sex", "#reached", "#indicator+name", "#currency"} <= set(tags)
    assert tags[header.index("persons")] == "#reached"
    assert tags[header.index("country")] == "#country+code"
