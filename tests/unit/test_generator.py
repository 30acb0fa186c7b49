"""The generated programme and its ground truth, checked by hand-countable properties."""

from relief_cli.generator import Batch, Person, Row, generate_programme, reference_reach


def test_no_batch_holds_two_rows_of_one_generated_person():
    programme = generate_programme(600, seed=11)
    for batch in programme.batches:
        people = [row.person.index for row in batch.rows if row.valid]
        assert len(people) == len(set(people))


def test_the_programme_has_every_kind_of_trouble():
    programme = generate_programme(1500, seed=5)
    truth = programme.truth
    assert truth["duplicates_detected"] > 0 and truth["rejected"] > 0
    assert truth["by_age_band"].get("0-17", 0) > 0  # minors reached with in-kind help
    assert truth["beneficiaries_reached"] < truth["accepted"]
    assert truth["people_reached"] > truth["beneficiaries_reached"]
    assert len(truth["by_partner"]) == 8 and len(truth["disbursed"]) >= 8


def _row(person, partner, **values):
    base = {
        "partner_ref": "r", "given_name": person.given, "family_name": person.family, "sex": person.sex,
        "date_of_birth": person.dob.isoformat(), "nationality": "VNM", "country": "MY", "id_type": "passport",
        "id_number": person.id_number, "phone": "", "household_size": str(person.household_size),
        "vulnerabilities": "job_loss", "consent": "yes", "assistance": "cash_relief",
        "payout_method": "cash_pickup", "payout_account": "", "registered_on": "2026-02-01",
    }  # fmt: skip
    base.update(values)
    return Row(person, partner, base)


def test_the_oracle_counts_one_person_across_partners_and_countries():
    from datetime import date

    person = Person(0, "Văn An", "Nguyễn", "M", date(1990, 6, 1), "VNM", "passport", "C123", 4, None)
    first = Batch(0, "A", [_row(person, 0)])
    second = Batch(
        1,
        "B",
        [
            _row(
                person,
                1,
                country="TH",
                id_number="c-12 3",
                given_name="Van An",
                assistance="food_kit",
                household_size="6",
            )
        ],
    )
    third = Batch(1, "B", [_row(person, 1, id_number="X9")])  # rule 2 only; cash again → duplicate
    truth = reference_reach([first, second, third])
    assert truth["beneficiaries_reached"] == 1
    assert truth["people_reached"] == 6
    assert truth["by_country"] == {"MY": 1, "TH": 1}
    assert truth["by_partner"] == {"A": 1, "B": 1}
    assert truth["duplicates_detected"] == 1
    assert truth["disbursed"] == {"MYR": {"amount_minor": 64_000, "payments": 1}}
