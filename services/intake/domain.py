"""Batch template v1 rules (SPEC §2) and batch progress, as pure functions.

No I/O, no settings, no clock: the caller passes `today` and every id. Each rule returns the
clean value or raises `_Invalid`; `validate_row` collects every problem of a row, so a partner
sees all of a row's mistakes at once. Messages name the column and the expected form, never the
value that was sent, because stored rejections are shown again later.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, cast

import pycountry

from shared.events import Assistance, BeneficiaryRegistered, PayoutMethod, Sex
from shared.identity import IdentityKeys, age_on, normalise_document_number
from shared.money import PROGRAMME_COUNTRIES

# ---- the template ---------------------------------------------------------------------------

TEMPLATE_COLUMNS: Final[tuple[str, ...]] = (
    "partner_ref",
    "given_name",
    "family_name",
    "sex",
    "date_of_birth",
    "nationality",
    "country",
    "id_type",
    "id_number",
    "phone",
    "household_size",
    "vulnerabilities",
    "consent",
    "assistance",
    "payout_method",
    "payout_account",
    "registered_on",
)
# Columns a file must have; id_number, payout_method and payout_account are required only by
# some rows, so a file whose rows never need them may leave them out.
REQUIRED_COLUMNS: Final[tuple[str, ...]] = (
    "partner_ref",
    "given_name",
    "sex",
    "date_of_birth",
    "nationality",
    "country",
    "id_type",
    "household_size",
    "consent",
    "assistance",
    "registered_on",
)

SEXES: Final[tuple[str, ...]] = ("F", "M", "X")
ID_TYPES: Final[tuple[str, ...]] = ("passport", "national_id", "work_permit", "none")
VULNERABILITIES: Final[tuple[str, ...]] = (
    "job_loss",
    "wage_theft",
    "medical",
    "pregnant",
    "disability",
    "undocumented",
    "stranded",
    "debt_bondage",
    "gbv",
)
CONSENT_ANSWERS: Final[tuple[str, ...]] = ("yes", "no")
ASSISTANCE_TYPES: Final[tuple[str, ...]] = (
    "cash_relief",
    "food_kit",
    "hygiene_kit",
    "remediation",
    "safe_migration_info",
)
CASH_ASSISTANCE: Final = "cash_relief"
PAYOUT_METHODS: Final[tuple[str, ...]] = ("bank_transfer", "e_wallet", "cash_pickup")
ACCOUNT_PAYOUT_METHODS: Final[tuple[str, ...]] = ("bank_transfer", "e_wallet")
NATIONALITIES: Final[frozenset[str]] = frozenset(country.alpha_3 for country in pycountry.countries)

MAX_AGE_YEARS: Final = 120
MAX_HOUSEHOLD_SIZE: Final = 30

_PARTNER_REF = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PHONE = re.compile(r"\+[0-9]{8,15}")
_ALPHA3 = re.compile(r"[A-Z]{3}")
_DIGITS = re.compile(r"[0-9]+")


# ---- outcomes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    """One problem in one row: 1-based data row number, column, stable code, plain message."""

    row: int
    column: str | None
    code: str
    message: str


class FileRefused(Exception):
    """The whole file is refused and nothing of it is stored."""

    def __init__(self, code: str, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.column = column


@dataclass(frozen=True)
class ValidRow:
    """A row that passed every rule, with clean, typed values."""

    row: int
    partner_ref: str
    given_name: str
    family_name: str | None
    sex: Sex
    date_of_birth: date
    nationality: str
    country: str
    id_type: str
    id_number: str | None
    phone: str | None
    household_size: int
    vulnerabilities: tuple[str, ...]
    assistance: Assistance
    payout_method: PayoutMethod | None
    payout_account: str | None
    registered_on: date

    @property
    def age_years(self) -> int:
        return age_on(self.date_of_birth, self.registered_on)


class _Invalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- header ---------------------------------------------------------------------------------


def normalise_column_name(name: str) -> str:
    """Header cells compare trimmed and case-insensitively (`Partner_Ref` is `partner_ref`)."""
    return name.strip().lower()


def shown(text: str, limit: int = 60) -> str:
    """A header name as it may appear in a message: bounded, one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def check_columns(columns: Iterable[str]) -> None:
    """Refuse a header with an unknown, repeated or missing column (SPEC §2).

    `columns` are already normalised; empty names (trailing separators) are the reader's concern.
    """
    seen: set[str] = set()
    for position, column in enumerate(columns, start=1):
        if column not in TEMPLATE_COLUMNS:
            raise FileRefused(
                "unknown_column",
                f"unknown column '{shown(column)}' (column {position}): the batch template v1 has only "
                f"these columns: {', '.join(TEMPLATE_COLUMNS)}",
                column=shown(column),
            )
        if column in seen:
            raise FileRefused(
                "duplicate_column",
                f"the column '{column}' appears more than once in the header",
                column=column,
            )
        seen.add(column)
    missing = [column for column in REQUIRED_COLUMNS if column not in seen]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise FileRefused(
            "missing_column",
            f"the file lacks the required column{plural} {', '.join(missing)}",
            column=missing[0],
        )


# ---- cell rules -----------------------------------------------------------------------------


def clean_cell(value: str | None) -> str | None:
    """Surrounding whitespace is trimmed; an empty cell is null."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def _has_control_characters(value: str) -> bool:
    if value.isprintable():  # the common case, decided in C
        return False
    # Zero-width (non-)joiners are format characters that some scripts need inside names.
    return any(
        unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char not in "\u200c\u200d"
        for char in value
    )


def _required(column: str, value: str | None) -> str:
    if value is None:
        raise _Invalid("required", f"{column} is required")
    return value


def _text(column: str, value: str, *, maximum: int) -> str:
    if len(value) > maximum:
        raise _Invalid("too_long", f"{column} must be at most {maximum} characters")
    if _has_control_characters(value):
        raise _Invalid("control_characters", f"{column} must not contain line breaks or control characters")
    return value


def _choice(column: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _Invalid("invalid_choice", f"{column} must be one of: {', '.join(allowed)}")
    return value


def check_partner_ref(value: str | None) -> str:
    value = _required("partner_ref", value)
    if not _PARTNER_REF.fullmatch(value):
        raise _Invalid(
            "invalid_format",
            "partner_ref must be 1 to 64 characters, using only the letters A-Z and a-z, digits, '.', '_' and '-'",
        )
    return value


def check_given_name(value: str | None) -> str:
    value = _text("given_name", _required("given_name", value), maximum=100)
    # Identity matching keeps letters only; a name without any would match every other one.
    if not any(unicodedata.category(char).startswith("L") for char in value):
        raise _Invalid("no_letters", "given_name must contain at least one letter (any script)")
    return value


def check_family_name(value: str | None) -> str | None:
    if value is None:
        return None
    return _text("family_name", value, maximum=100)


def check_sex(value: str | None) -> Sex:
    return cast(Sex, _choice("sex", _required("sex", value), SEXES))


def parse_date(column: str, value: str | None) -> date:
    value = _required(column, value)
    if not _DATE.fullmatch(value):
        raise _Invalid("invalid_date", f"{column} must be a date written YYYY-MM-DD, such as 1990-07-31")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Invalid("invalid_date", f"{column} is not a real calendar date (YYYY-MM-DD)") from None


def check_registered_on(value: str | None, *, today: date) -> date:
    registered_on = parse_date("registered_on", value)
    if registered_on > today:
        raise _Invalid("future_date", "registered_on must not be in the future")
    return registered_on


def check_date_of_birth(value: str | None, *, registered_on: date | None, today: date) -> date:
    """A real date, not after registered_on (or today, when registered_on is unusable), age ≤ 120."""
    date_of_birth = parse_date("date_of_birth", value)
    reference = registered_on or today
    if date_of_birth > reference:
        if registered_on is None:
            raise _Invalid("future_date", "date_of_birth must not be in the future")
        raise _Invalid("after_registration", "date_of_birth must not be after registered_on")
    if age_on(date_of_birth, reference) > MAX_AGE_YEARS:
        raise _Invalid("too_old", f"date_of_birth gives an age over {MAX_AGE_YEARS} years on registered_on")
    return date_of_birth


def check_nationality(value: str | None) -> str:
    value = _required("nationality", value)
    if not _ALPHA3.fullmatch(value) or value not in NATIONALITIES:
        raise _Invalid(
            "invalid_country_code",
            "nationality must be an ISO 3166-1 alpha-3 country code in upper case, such as VNM, PHL or MMR",
        )
    return value


def check_country(value: str | None) -> str:
    value = _required("country", value)
    if value not in PROGRAMME_COUNTRIES:
        raise _Invalid(
            "not_programme_country",
            f"country must be a programme country code (ISO 3166-1 alpha-2): {', '.join(PROGRAMME_COUNTRIES)}",
        )
    return value


def check_id_type(value: str | None) -> str:
    return _choice("id_type", _required("id_type", value), ID_TYPES)


def check_id_number(value: str | None, *, id_type: str | None) -> str | None:
    """Required unless id_type is none; a number sent with id_type none is not kept."""
    if id_type is None or id_type == "none":
        return None
    if value is None:
        raise _Invalid("required", f"id_number is required when id_type is {id_type}")
    value = _text("id_number", value, maximum=40)
    if not normalise_document_number(value):
        raise _Invalid("invalid_format", "id_number must contain letters or digits")
    return value


def check_phone(value: str | None) -> str | None:
    if value is None:
        return None
    if not _PHONE.fullmatch(value):
        raise _Invalid(
            "invalid_format", "phone must be in E.164 form: '+' then 8 to 15 digits, such as +85291234567"
        )
    return value


def check_household_size(value: str | None) -> int:
    value = _required("household_size", value)
    message = f"household_size must be a whole number from 1 to {MAX_HOUSEHOLD_SIZE}"
    if not _DIGITS.fullmatch(value):
        raise _Invalid("not_integer", message)
    size = int(value)
    if not 1 <= size <= MAX_HOUSEHOLD_SIZE:
        raise _Invalid("out_of_range", message)
    return size


def check_vulnerabilities(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [item.strip() for item in value.split(";")]
    listed = tuple(dict.fromkeys(item for item in items if item))
    if any(item not in VULNERABILITIES for item in listed):
        raise _Invalid(
            "invalid_choice",
            f"vulnerabilities must be a ';'-separated list of: {', '.join(VULNERABILITIES)}",
        )
    return listed


def check_consent(value: str | None) -> None:
    answer = _choice("consent", _required("consent", value), CONSENT_ANSWERS)
    if answer == "no":
        raise _Invalid(
            "consent_refused",
            "consent is 'no': the row is not registered and none of its personal data is kept",
        )


def check_assistance(value: str | None) -> Assistance:
    return cast(Assistance, _choice("assistance", _required("assistance", value), ASSISTANCE_TYPES))


def check_payout_method(value: str | None, *, assistance: str | None) -> PayoutMethod | None:
    if value is None:
        if assistance == CASH_ASSISTANCE:
            raise _Invalid("required", "payout_method is required when assistance is cash_relief")
        return None
    return cast(PayoutMethod, _choice("payout_method", value, PAYOUT_METHODS))


def check_payout_account(value: str | None, *, payout_method: str | None) -> str | None:
    if value is None:
        if payout_method in ACCOUNT_PAYOUT_METHODS:
            raise _Invalid("required", f"payout_account is required when payout_method is {payout_method}")
        return None
    return _text("payout_account", value, maximum=64)


# ---- a whole row ----------------------------------------------------------------------------


class _Collector:
    def __init__(self, row: int) -> None:
        self.row = row
        self.errors: list[RowError] = []

    def note(self, column: str, problem: _Invalid) -> None:
        self.errors.append(RowError(self.row, column, problem.code, problem.message))


def validate_row(row: int, cells: Mapping[str, str | None], *, today: date) -> ValidRow | list[RowError]:
    """Apply every §2 rule to one row; return the clean row or every problem found, in column order.

    `today` is the latest calendar date anywhere (the caller's clock), for 'not in the future'.
    """
    cell = {column: clean_cell(cells.get(column)) for column in TEMPLATE_COLUMNS}
    problems = _Collector(row)
    values: dict[str, object] = {}

    def run(column: str, rule: Callable[[], object]) -> object:
        try:
            result = rule()
        except _Invalid as problem:
            problems.note(column, problem)
            return None
        values[column] = result
        return result

    run("partner_ref", lambda: check_partner_ref(cell["partner_ref"]))
    run("given_name", lambda: check_given_name(cell["given_name"]))
    run("family_name", lambda: check_family_name(cell["family_name"]))
    run("sex", lambda: check_sex(cell["sex"]))
    registered_on = run("registered_on", lambda: check_registered_on(cell["registered_on"], today=today))
    run(
        "date_of_birth",
        lambda: check_date_of_birth(
            cell["date_of_birth"], registered_on=cast("date | None", registered_on), today=today
        ),
    )
    run("nationality", lambda: check_nationality(cell["nationality"]))
    run("country", lambda: check_country(cell["country"]))
    id_type = run("id_type", lambda: check_id_type(cell["id_type"]))
    if "id_type" in values:
        run("id_number", lambda: check_id_number(cell["id_number"], id_type=cast(str, id_type)))
    run("phone", lambda: check_phone(cell["phone"]))
    run("household_size", lambda: check_household_size(cell["household_size"]))
    run("vulnerabilities", lambda: check_vulnerabilities(cell["vulnerabilities"]))
    run("consent", lambda: check_consent(cell["consent"]))
    assistance = run("assistance", lambda: check_assistance(cell["assistance"]))
    # Without a readable assistance type, payout_method can only be checked for its form.
    payout_method = run(
        "payout_method",
        lambda: check_payout_method(cell["payout_method"], assistance=cast("str | None", assistance)),
    )
    if "payout_method" in values:
        run(
            "payout_account",
            lambda: check_payout_account(
                cell["payout_account"], payout_method=cast("str | None", payout_method)
            ),
        )

    if problems.errors:
        problems.errors.sort(key=lambda error: TEMPLATE_COLUMNS.index(error.column or "partner_ref"))
        return problems.errors
    is_cash = values["assistance"] == CASH_ASSISTANCE
    return ValidRow(
        row=row,
        partner_ref=cast(str, values["partner_ref"]),
        given_name=cast(str, values["given_name"]),
        family_name=cast("str | None", values["family_name"]),
        sex=cast(Sex, values["sex"]),
        date_of_birth=cast(date, values["date_of_birth"]),
        nationality=cast(str, values["nationality"]),
        country=cast(str, values["country"]),
        id_type=cast(str, values["id_type"]),
        id_number=cast("str | None", values["id_number"]),
        phone=cast("str | None", values["phone"]),
        household_size=cast(int, values["household_size"]),
        vulnerabilities=cast("tuple[str, ...]", values["vulnerabilities"]),
        assistance=cast(Assistance, values["assistance"]),
        # Payout details serve cash only; for in-kind help they are not kept.
        payout_method=cast("PayoutMethod | None", values["payout_method"]) if is_cash else None,
        payout_account=cast("str | None", values["payout_account"]) if is_cash else None,
        registered_on=cast(date, values["registered_on"]),
    )


def duplicate_partner_ref(row: int, *, earlier_row: int | None) -> RowError:
    """partner_ref is unique within a partner, across every batch it sent."""
    where = f"by row {earlier_row} of this file" if earlier_row is not None else "in an earlier batch"
    return RowError(
        row,
        "partner_ref",
        "duplicate_partner_ref",
        f"partner_ref is already used {where}; each person registered by your organisation needs its own partner_ref",
    )


def rejection_reason(errors: list[RowError]) -> str:
    """The one bounded code that labels a rejected row in metrics: its first problem."""
    return errors[0].code if errors else "none"


# ---- the outgoing event ---------------------------------------------------------------------


def registration_event(
    row: ValidRow,
    *,
    event_id: str,
    occurred_at: datetime,
    row_id: str,
    batch_id: str,
    partner_id: str,
    partner_name: str,
    keys: IdentityKeys,
    payout_account_sealed: str | None,
) -> BeneficiaryRegistered:
    """What eligibility needs about an accepted row: keyed hashes and policy fields, no raw identity."""
    return BeneficiaryRegistered(
        event_id=event_id,
        occurred_at=occurred_at,
        row_id=row_id,
        batch_id=batch_id,
        partner_id=partner_id,
        partner_name=partner_name,
        document_key=keys.document_key,
        name_key=keys.name_key,
        block_key=keys.block_key,
        near_keys=list(keys.near_keys),
        sex=row.sex,
        age_years=row.age_years,
        nationality=row.nationality,
        country=row.country,
        household_size=row.household_size,
        vulnerabilities=list(row.vulnerabilities),
        assistance=row.assistance,
        payout_method=row.payout_method,
        payout_account_sealed=payout_account_sealed,
        registered_on=row.registered_on,
    )


# ---- batch progress -------------------------------------------------------------------------

FINAL_PAYMENT_STATUSES: Final[frozenset[str]] = frozenset({"paid", "failed", "reversed"})


def shows_in_progress(payment_status: str, sequence: int) -> bool:
    """Whether a payment status changes what a row's progress says.

    A payment starts `pending` (sequence 1), or `pending_approval` when approvals are on; rows with
    no payment status yet count as pending already, and `sent` is pending too. An approved payment
    goes back to `pending` (sequence 2 or more), which leaves `pending_approval`: that one counts.
    """
    if payment_status == "sent":
        return False
    return not (payment_status == "pending" and sequence <= 1)


def is_final(decision: str | None, assistance: str, payment_status: str | None) -> bool:
    """A row is final once ineligible or duplicate, eligible for in-kind help, or cash paid/failed/reversed."""
    if payment_status in FINAL_PAYMENT_STATUSES:
        return True
    if decision in ("ineligible", "duplicate"):
        return True
    return decision == "eligible" and assistance != CASH_ASSISTANCE


@dataclass(frozen=True)
class Progress:
    accepted: int
    rejected: int
    eligible: int
    ineligible: int
    duplicate: int
    paid: int
    failed: int
    reversed: int
    pending_approval: int
    final: int
    pending: int


def summarise_progress(
    *, accepted: int, rejected: int, groups: Iterable[tuple[str | None, str, str | None, int]]
) -> Progress:
    """Counts from (decision, assistance, payment_status, rows) groups of accepted rows.

    `pending` is every accepted row neither final nor waiting for a finance approval.
    """
    counts = dict.fromkeys(
        ("eligible", "ineligible", "duplicate", "paid", "failed", "reversed", "pending_approval", "final"), 0
    )
    for decision, assistance, payment_status, rows in groups:
        if decision in ("eligible", "ineligible", "duplicate"):
            counts[decision] += rows
        final = is_final(decision, assistance, payment_status)
        if final:
            counts["final"] += rows
        if payment_status in ("paid", "failed", "reversed"):
            counts[payment_status] += rows
        elif payment_status == "pending_approval":
            counts["pending_approval"] += rows
    return Progress(
        accepted=accepted,
        rejected=rejected,
        pending=max(0, accepted - counts["final"] - counts["pending_approval"]),
        **counts,
    )
