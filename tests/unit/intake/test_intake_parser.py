"""Reading uploaded files row by row: CSV and JSON, encodings, headers, limits."""

from __future__ import annotations

import io
import json

import pytest

from services.intake.domain import TEMPLATE_COLUMNS, FileRefused
from services.intake.parser import read_rows

HEADER = ",".join(TEMPLATE_COLUMNS)
ROW = "MY-1,Siti,Aminah,F,1990-07-31,IDN,MY,passport,A123,+60123456789,2,job_loss,yes,cash_relief,e_wallet,EW-1,2026-01-05"


def rows_of(data: bytes, file_format: str = "csv", max_rows: int = 100):
    return list(read_rows(io.BytesIO(data), file_format, max_rows=max_rows))  # type: ignore[arg-type]


def refusal(data: bytes, file_format: str = "csv", max_rows: int = 100) -> FileRefused:
    with pytest.raises(FileRefused) as refused:
        rows_of(data, file_format, max_rows)
    return refused.value


def test_a_csv_row_comes_back_as_cells_by_column():
    [row] = rows_of(f"{HEADER}\n{ROW}\n".encode())
    assert row.number == 1
    assert row.cells["given_name"] == "Siti"
    assert row.cells["registered_on"] == "2026-01-05"
    assert row.errors == []


def test_a_utf8_bom_and_crlf_line_ends_are_accepted():
    [row] = rows_of(("\ufeff" + HEADER + "\r\n" + ROW + "\r\n").encode())
    assert row.cells["partner_ref"] == "MY-1"


def test_header_names_are_trimmed_and_case_insensitive():
    header = ",".join(f" {column.upper()} " for column in TEMPLATE_COLUMNS)
    [row] = rows_of(f"{header}\n{ROW}\n".encode())
    assert row.cells["sex"] == "F"


def test_blank_lines_are_skipped_but_keep_row_numbers_aligned_with_the_spreadsheet():
    rows = rows_of(f"{HEADER}\n{ROW}\n\n,,,,\n{ROW}\n".encode())
    assert [row.number for row in rows] == [1, 4]


def test_quoted_cells_keep_commas_quotes_and_formulas_as_text():
    line = ROW.replace("Siti,Aminah", '"=HYPERLINK(""http://evil.example"",""click"")","Dela Cruz, Jr."')
    [row] = rows_of(f"{HEADER}\n{line}\n".encode())
    assert row.cells["given_name"] == '=HYPERLINK("http://evil.example","click")'
    assert row.cells["family_name"] == "Dela Cruz, Jr."


def test_a_semicolon_separated_file_from_a_spreadsheet_is_read():
    header = HEADER.replace(",", ";")
    line = ROW.replace(",", ";").replace(";job_loss;", ';"job_loss;medical";')
    [row] = rows_of(f"{header}\n{line}\n".encode())
    assert row.cells["vulnerabilities"] == "job_loss;medical"


def test_optional_columns_may_be_left_out():
    columns = [
        c for c in TEMPLATE_COLUMNS if c not in ("family_name", "phone", "vulnerabilities", "id_number")
    ]
    [row] = rows_of((",".join(columns) + "\n" + ",".join("x" for _ in columns) + "\n").encode())
    assert "phone" not in row.cells


def test_a_short_row_has_empty_cells_and_a_long_row_is_flagged():
    short, long = rows_of(f"{HEADER}\nMY-1,Siti\n{ROW},extra\n".encode())
    assert short.cells["sex"] is None and short.errors == []
    [error] = long.errors
    assert (error.row, error.column, error.code) == (2, None, "cell_without_column")
    assert "column 18" in error.message


def test_an_unknown_column_refuses_the_file_naming_it():
    refused = refusal(f"{HEADER},Passport No\n{ROW},X1\n".encode())
    assert (refused.code, refused.column) == ("unknown_column", "passport no")
    assert "passport no" in refused.message


def test_a_missing_required_column_refuses_the_file():
    header = HEADER.replace("consent,", "")
    refused = refusal(f"{header}\n{ROW}\n".encode())
    assert refused.code == "missing_column" and "consent" in refused.message


def test_a_file_that_is_not_utf8_is_refused_whole():
    data = f"{HEADER}\n{ROW}\n{ROW}\n".encode() + ROW.replace("Siti", "Jos\xe9").encode("latin-1") + b"\n"
    refused = refusal(data)
    assert refused.code == "not_utf8"
    assert "UTF-8" in refused.message


def test_a_utf16_file_is_refused_with_a_hint():
    refused = refusal(f"{HEADER}\n{ROW}\n".encode("utf-16"))
    assert refused.code == "not_utf8" and "UTF-16" in refused.message


def test_an_empty_file_or_a_header_alone_is_refused():
    assert refusal(b"").code == "empty_file"
    assert refusal(f"{HEADER}\n".encode()).code == "no_rows"


def test_more_rows_than_the_limit_refuses_the_file():
    data = (HEADER + "\n" + (ROW + "\n") * 4).encode()
    assert len(rows_of(data, max_rows=4)) == 4
    refused = refusal(data, max_rows=3)
    assert refused.code == "too_many_rows" and "3" in refused.message


def test_a_broken_quote_refuses_the_file():
    refused = refusal(f'{HEADER}\n{ROW}\nMY-2,"Siti"x,\n'.encode())
    assert refused.code == "malformed_csv"


# ---- JSON ----------------------------------------------------------------------------------------------


def json_rows() -> list[dict[str, object]]:
    return [dict(zip(TEMPLATE_COLUMNS, ROW.split(","), strict=True)) for _ in range(3)]


def test_a_json_array_is_read_element_by_element():
    elements = json_rows()
    elements[1]["household_size"] = 4
    elements[2]["vulnerabilities"] = ["job_loss", "gbv"]
    elements[2]["phone"] = None
    rows = rows_of(json.dumps(elements, ensure_ascii=False).encode(), "json")
    assert [row.number for row in rows] == [1, 2, 3]
    assert rows[1].cells["household_size"] == "4"
    assert rows[2].cells["vulnerabilities"] == "job_loss;gbv"
    assert rows[2].cells["phone"] is None


def test_json_values_that_are_not_text_are_judged_as_their_text():
    element = json_rows()[0] | {"household_size": 2.5, "consent": True}
    [row] = rows_of(json.dumps([element]).encode(), "json")
    assert (row.cells["household_size"], row.cells["consent"]) == ("2.5", "true")


def test_a_large_json_array_streams_through_a_small_buffer():
    elements = json_rows() * 2000
    body = json.dumps(elements, indent=1).encode()
    assert len(body) > 1024 * 1024
    assert sum(1 for _ in read_rows(io.BytesIO(body), "json", max_rows=10_000)) == 6000


def test_a_json_key_outside_the_template_refuses_the_file():
    element = json_rows()[0] | {"passport": "X"}
    refused = refusal(json.dumps([element]).encode(), "json")
    assert (refused.code, refused.column) == ("unknown_column", "passport")
    assert "element 1" in refused.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"partner_ref": "x"}',
        b"[1, 2]",
        b'[{"partner_ref": "x"} {"partner_ref": "y"}]',
        b'[{"partner_ref": "x"',
        b"[] []",
    ],
)
def test_malformed_json_refuses_the_file(body):
    assert refusal(body, "json").code == "malformed_json"


def test_a_nested_value_refuses_the_file():
    element = json_rows()[0] | {"given_name": {"first": "Siti"}}
    assert refusal(json.dumps([element]).encode(), "json").code == "malformed_json"


def test_an_empty_json_array_has_no_rows():
    assert refusal(b"[ ]", "json").code == "no_rows"
