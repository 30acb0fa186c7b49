"""SPEC §2 batch template rules, one by one, and batch progress (docs/architecture.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.intake import domain
from services.intake.domain import FileRefused, RowError, ValidRow, check_columns, validate_row
from shared.identity import IdentityHasher
from shared.money import PROGRAMME_COUNTRIES

TODAY = date(2026, 3, 1)


def cells(**overrides: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = {
        "partner_ref": "MY-0001",
        "given_name": "Nguyễn Văn",
        "family_name": "An",
        "sex": "M",
        "date_of_birth": "1990-07-31",
        "nationality": "VNM",
        "country": "MY",
        "id_type": "passport",
        "id_number": "C1234567",
        "phone": "+60123456789",
        "household_size": "3",
        "vulnerabilities": "job_loss;medical",
        "consent": "yes",
        "assistance": "cash_relief",
        "payout_method": "e_wallet",
        "payout_account": "EW-0001",
        "registered_on": "2026-01-05",
    }
    row.update(overrides)
    return row


def valid(**overrides: str | None) -> ValidRow:
    outcome = validate_row(7, cells(**overrides), today=TODAY)
    assert isinstance(outcome, ValidRow), outcome
    return outcome


def only_error(**overrides: str | None) -> RowError:
    outcome = validate_row(7, cells(**overrides), today=TODAY)
    assert isinstance(outcome, list), f"expected a rejection, got {outcome}"
    assert len(outcome) == 1, outcome
    assert outcome[0].row == 7
    return outcome[0]


def assert_rejected(column: str, code: str, **overrides: str | None) -> RowError:
    error = only_error(**overrides)
    assert (error.column, error.code) == (column, code), error
    assert column in error.message
    return error


# ---- a clean row --------------------------------------------------------------------------------


def test_a_valid_row_comes_back_typed_and_trimmed():
    row = valid(given_name="  Maria  ", family_name="   ", phone="", vulnerabilities=" job_loss ; gbv ;")
    assert row.given_name == "Maria"
    assert row.family_name is None
    assert row.phone is None
    assert row.vulnerabilities == ("job_loss", "gbv")
    assert row.date_of_birth == date(1990, 7, 31)
    assert row.household_size == 3
    assert row.age_years == 35


def test_missing_cells_count_as_empty():
    row = valid(family_name=None, phone=None, vulnerabilities=None)
    assert (row.family_name, row.phone, row.vulnerabilities) == (None, None, ())


# ---- partner_ref ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["A", "MY-0001", "a.b_c-9", "x" * 64])
def test_partner_ref_accepts_letters_digits_dot_underscore_dash(ref):
    assert valid(partner_ref=ref).partner_ref == ref


@pytest.mark.parametrize("ref", ["has space", "ref/1", "Ä1", "x" * 65, "#1"])
def test_partner_ref_outside_the_charset_or_too_long_is_rejected(ref):
    assert_rejected("partner_ref", "invalid_format", partner_ref=ref)


def test_partner_ref_is_required():
    assert_rejected("partner_ref", "required", partner_ref="  ")


def test_a_duplicate_partner_ref_names_the_earlier_row():
    error = domain.duplicate_partner_ref(9, earlier_row=3)
    assert (error.row, error.column, error.code) == (9, "partner_ref", "duplicate_partner_ref")
    assert "row 3 of this file" in error.message
    assert "earlier batch" in domain.duplicate_partner_ref(9, earlier_row=None).message


# ---- names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["A", "Siti", "สมชาย", "ສົມພອນ", "王秀英", "x" * 100, '=HYPERLINK("http://a")']
)
def test_given_name_takes_1_to_100_characters_in_any_script(name):
    assert valid(given_name=name).given_name == name


def test_given_name_is_required():
    assert_rejected("given_name", "required", given_name="")


def test_given_name_over_100_characters_is_rejected():
    assert_rejected("given_name", "too_long", given_name="x" * 101)


def test_given_name_without_any_letter_is_rejected():
    assert_rejected("given_name", "no_letters", given_name="12345")


@pytest.mark.parametrize("name", ["Ana\nMaria", "Ana\x00", "Ana\u202eairaM"])
def test_given_name_with_a_line_break_or_control_character_is_rejected(name):
    assert_rejected("given_name", "control_characters", given_name=name)


def test_family_name_may_be_empty_or_up_to_100_characters():
    assert valid(family_name="").family_name is None
    assert valid(family_name="y" * 100).family_name == "y" * 100
    assert_rejected("family_name", "too_long", family_name="y" * 101)


# ---- sex ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sex", ["F", "M", "X"])
def test_sex_is_f_m_or_x(sex):
    assert valid(sex=sex).sex == sex


@pytest.mark.parametrize("sex", ["f", "female", "U"])
def test_any_other_sex_value_is_rejected(sex):
    error = assert_rejected("sex", "invalid_choice", sex=sex)
    assert "F, M, X" in error.message


# ---- dates -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1990-02-30", "31/07/1990", "1990-7-31", "19900731", "yesterday"])
def test_date_of_birth_must_be_a_real_yyyy_mm_dd_date(value):
    assert_rejected("date_of_birth", "invalid_date", date_of_birth=value)


def test_date_of_birth_after_registered_on_is_rejected():
    error = assert_rejected(
        "date_of_birth", "after_registration", date_of_birth="2026-01-06", registered_on="2026-01-05"
    )
    assert "registered_on" in error.message


def test_born_on_the_registration_day_is_accepted():
    assert valid(date_of_birth="2026-01-05", registered_on="2026-01-05").age_years == 0


def test_age_of_120_on_registered_on_is_accepted_and_121_is_not():
    assert valid(date_of_birth="1905-01-06", registered_on="2026-01-05").age_years == 120
    assert_rejected("date_of_birth", "too_old", date_of_birth="1905-01-05", registered_on="2026-01-05")


def test_registered_on_today_is_accepted_and_tomorrow_is_not():
    assert valid(registered_on="2026-03-01").registered_on == TODAY
    assert_rejected("registered_on", "future_date", registered_on="2026-03-02")


@pytest.mark.parametrize("value", ["2026-13-01", "05/01/2026", ""])
def test_registered_on_must_be_a_real_date(value):
    code = "required" if value == "" else "invalid_date"
    assert_rejected("registered_on", code, registered_on=value)


def test_without_a_usable_registered_on_the_birth_date_is_checked_against_today():
    outcome = validate_row(7, cells(registered_on="soon", date_of_birth="2027-01-01"), today=TODAY)
    assert isinstance(outcome, list)
    assert [(e.column, e.code) for e in outcome] == [
        ("date_of_birth", "future_date"),
        ("registered_on", "invalid_date"),
    ]


# ---- nationality and country --------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["VNM", "PHL", "MMR", "IDN", "NPL", "KHM", "LAO"])
def test_nationality_is_an_iso_alpha_3_code(code):
    assert valid(nationality=code).nationality == code


@pytest.mark.parametrize("code", ["vnm", "VN", "ZZZ", "Viet Nam", "VNMM"])
def test_nationality_must_be_a_real_upper_case_alpha_3_code(code):
    error = assert_rejected("nationality", "invalid_country_code", nationality=code)
    assert "alpha-3" in error.message


@pytest.mark.parametrize("code", PROGRAMME_COUNTRIES)
def test_each_of_the_15_programme_countries_is_accepted(code):
    assert valid(country=code).country == code


@pytest.mark.parametrize("code", ["US", "SG", "my", "MYS"])
def test_a_country_outside_the_programme_is_rejected(code):
    error = assert_rejected("country", "not_programme_country", country=code)
    assert "HK" in error.message and "KR" in error.message


# ---- identity documents -------------------------------------------------------------------------------


@pytest.mark.parametrize("id_type", ["passport", "national_id", "work_permit"])
def test_a_document_type_needs_its_number(id_type):
    error = assert_rejected("id_number", "required", id_type=id_type, id_number="")
    assert id_type in error.message


def test_id_type_none_needs_no_number_and_keeps_none():
    assert valid(id_type="none", id_number="").id_number is None
    assert valid(id_type="none", id_number="C1234567").id_number is None


def test_unknown_id_type_is_rejected():
    assert_rejected("id_type", "invalid_choice", id_type="driving_licence")


def test_id_number_is_1_to_40_characters():
    assert valid(id_number="A" * 40).id_number == "A" * 40
    assert_rejected("id_number", "too_long", id_number="A" * 41)


def test_id_number_of_only_separators_is_rejected():
    assert_rejected("id_number", "invalid_format", id_number="- -")


# ---- phone -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phone", ["+85291234567", "+12345678", "+123456789012345"])
def test_phone_in_e164_form_is_accepted(phone):
    assert valid(phone=phone).phone == phone


@pytest.mark.parametrize(
    "phone", ["85291234567", "+1234567", "+1234567890123456", "+852 9123 4567", "+85291234567x"]
)
def test_phone_not_in_e164_form_is_rejected(phone):
    error = assert_rejected("phone", "invalid_format", phone=phone)
    assert "E.164" in error.message


# ---- household ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "size"), [("1", 1), ("30", 30), ("06", 6)])
def test_household_size_is_a_whole_number_from_1_to_30(value, size):
    assert valid(household_size=value).household_size == size


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("0", "out_of_range"),
        ("31", "out_of_range"),
        ("2.5", "not_integer"),
        ("-1", "not_integer"),
        ("two", "not_integer"),
        ("", "required"),
    ],
)
def test_household_size_outside_1_to_30_is_rejected(value, code):
    assert_rejected("household_size", code, household_size=value)


# ---- vulnerabilities -----------------------------------------------------------------------------------------


def test_every_listed_vulnerability_is_accepted_once():
    listed = ";".join(domain.VULNERABILITIES)
    assert valid(vulnerabilities=listed + ";gbv").vulnerabilities == domain.VULNERABILITIES


@pytest.mark.parametrize("value", ["hunger", "job_loss,medical", "job_loss;Medical"])
def test_an_unknown_vulnerability_is_rejected(value):
    assert_rejected("vulnerabilities", "invalid_choice", vulnerabilities=value)


# ---- consent ---------------------------------------------------------------------------------------------------


def test_consent_no_rejects_the_row():
    error = assert_rejected("consent", "consent_refused", consent="no")
    assert "none of its personal data is kept" in error.message


@pytest.mark.parametrize("value", ["Yes", "y", "true", ""])
def test_consent_must_be_yes_or_no(value):
    assert_rejected("consent", "required" if value == "" else "invalid_choice", consent=value)


# ---- assistance and payout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", domain.ASSISTANCE_TYPES)
def test_each_assistance_type_is_accepted(kind):
    assert valid(assistance=kind).assistance == kind


def test_unknown_assistance_is_rejected():
    assert_rejected("assistance", "invalid_choice", assistance="cash")


def test_cash_relief_needs_a_payout_method():
    error = assert_rejected("payout_method", "required", payout_method="", payout_account="")
    assert "cash_relief" in error.message


def test_in_kind_help_needs_no_payout_details_and_keeps_none():
    row = valid(assistance="food_kit", payout_method="bank_transfer", payout_account="123-456")
    assert (row.payout_method, row.payout_account) == (None, None)
    assert valid(assistance="hygiene_kit", payout_method="", payout_account="").payout_method is None


def test_unknown_payout_method_is_rejected():
    assert_rejected("payout_method", "invalid_choice", payout_method="paypal")


@pytest.mark.parametrize("method", ["bank_transfer", "e_wallet"])
def test_bank_and_wallet_payouts_need_an_account(method):
    error = assert_rejected("payout_account", "required", payout_method=method, payout_account="")
    assert method in error.message


def test_cash_pickup_needs_no_account():
    assert valid(payout_method="cash_pickup", payout_account="").payout_account is None


def test_payout_account_is_1_to_64_characters():
    assert valid(payout_account="9" * 64).payout_account == "9" * 64
    assert_rejected("payout_account", "too_long", payout_account="9" * 65)


# ---- several problems -------------------------------------------------------------------------------------------


def test_every_problem_of_a_row_is_reported_in_column_order():
    outcome = validate_row(
        4, cells(sex="Q", nationality="vnm", household_size="0", registered_on="2099-01-01"), today=TODAY
    )
    assert isinstance(outcome, list)
    assert [(e.row, e.column, e.code) for e in outcome] == [
        (4, "sex", "invalid_choice"),
        (4, "nationality", "invalid_country_code"),
        (4, "household_size", "out_of_range"),
        (4, "registered_on", "future_date"),
    ]
    assert domain.rejection_reason(outcome) == "invalid_choice"


def test_messages_never_repeat_the_value_that_was_sent():
    sent_value = "ZZ-SECRET-VALUE-123"
    outcome = validate_row(1, cells(sex=sent_value, phone=sent_value, nationality=sent_value), today=TODAY)
    assert isinstance(outcome, list) and len(outcome) == 3
    assert all(sent_value not in error.message for error in outcome)


# ---- header -------------------------------------------------------------------------------------------------------


def test_the_full_template_header_is_accepted_in_any_order():
    check_columns(reversed(domain.TEMPLATE_COLUMNS))
    check_columns(domain.REQUIRED_COLUMNS)


def test_an_unknown_column_refuses_the_file_and_names_it():
    with pytest.raises(FileRefused) as refused:
        check_columns([*domain.TEMPLATE_COLUMNS, "passport_no"])
    assert refused.value.code == "unknown_column"
    assert refused.value.column == "passport_no"
    assert "'passport_no' (column 18)" in refused.value.message


def test_a_missing_required_column_refuses_the_file():
    with pytest.raises(FileRefused) as refused:
        check_columns([c for c in domain.TEMPLATE_COLUMNS if c not in ("consent", "sex")])
    assert refused.value.code == "missing_column"
    assert "sex, consent" in refused.value.message


def test_a_repeated_column_refuses_the_file():
    with pytest.raises(FileRefused) as refused:
        check_columns([*domain.TEMPLATE_COLUMNS, "phone"])
    assert refused.value.code == "duplicate_column"


# ---- the event -------------------------------------------------------------------------------------------------------


def test_the_registration_event_carries_keyed_hashes_and_no_raw_identity():
    row = valid(given_name="Siti", family_name="Aminah", id_number="X99887766", phone="+60199998888")
    keys = IdentityHasher("unit-test-secret-0123456789").keys_for(
        nationality=row.nationality,
        date_of_birth=row.date_of_birth,
        given_name=row.given_name,
        family_name=row.family_name,
        id_type=row.id_type,
        id_number=row.id_number,
    )
    event = domain.registration_event(
        row,
        event_id="e1",
        occurred_at=datetime(2026, 1, 5, tzinfo=UTC),
        row_id="b1-7",
        batch_id="b1",
        partner_id="p1",
        partner_name="CSO One",
        keys=keys,
        payout_account_sealed="sealed-token",
    )
    payload = event.to_bytes().decode()
    for raw in ("Siti", "Aminah", "X99887766", "+60199998888", "EW-0001", "1990-07-31"):
        assert raw not in payload
    assert event.document_key == keys.document_key and event.name_key == keys.name_key
    assert (event.age_years, event.household_size, event.payout_account_sealed) == (35, 3, "sealed-token")
    assert keys.partition_key == keys.document_key


# ---- progress -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "assistance", "status", "final"),
    [
        (None, "cash_relief", None, False),
        ("ineligible", "cash_relief", None, True),
        ("duplicate", "food_kit", None, True),
        ("eligible", "food_kit", None, True),
        ("eligible", "cash_relief", None, False),
        ("eligible", "cash_relief", "pending", False),
        ("eligible", "cash_relief", "sent", False),
        ("eligible", "cash_relief", "pending_approval", False),
        ("eligible", "cash_relief", "paid", True),
        ("eligible", "cash_relief", "failed", True),
        ("eligible", "cash_relief", "reversed", True),
    ],
)
def test_a_row_is_final_as_the_architecture_says(decision, assistance, status, final):
    assert domain.is_final(decision, assistance, status) is final


def test_progress_counts_add_up():
    progress = domain.summarise_progress(
        accepted=10,
        rejected=2,
        groups=[
            (None, "cash_relief", None, 1),
            ("eligible", "cash_relief", "paid", 3),
            ("eligible", "cash_relief", "pending_approval", 2),
            ("eligible", "food_kit", None, 1),
            ("ineligible", "cash_relief", None, 1),
            ("duplicate", "cash_relief", None, 1),
            ("eligible", "cash_relief", "failed", 1),
        ],
    )
    assert progress == domain.Progress(
        accepted=10,
        rejected=2,
        eligible=7,
        ineligible=1,
        duplicate=1,
        paid=3,
        failed=1,
        reversed=0,
        pending_approval=2,
        final=7,
        pending=1,
    )


@pytest.mark.parametrize(
    ("status", "sequence", "shown"),
    [
        ("pending", 1, False),  # a new payment: the row counted as pending already
        ("sent", 2, False),
        ("sent", 3, False),
        ("pending", 2, True),  # approved: leaves pending_approval
        ("pending_approval", 1, True),
        ("paid", 3, True),
        ("failed", 1, True),  # a merged duplicate is failed from the start
        ("failed", 2, True),
        ("reversed", 4, True),
    ],
)
def test_only_payment_statuses_that_change_progress_are_kept(status, sequence, shown):
    assert domain.shows_in_progress(status, sequence) is shown
