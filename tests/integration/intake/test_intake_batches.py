"""Uploading batches to the real intake service (real PostgreSQL, real Kafka broker)."""

from __future__ import annotations

import json

import httpx

from tests.integration.intake.intake_support import add_partner, bearer, csv_file, events_staged, query, row

# One bad row for each SPEC §2 rule: (cells, column, code, words the message must contain).
BAD_ROWS = [
    (row("bad ref!"), "partner_ref", "invalid_format", "A-Z"),
    (row("R" * 65, id_number="X1"), "partner_ref", "invalid_format", "64"),
    (row("V1", given_name="Budi"), "partner_ref", "duplicate_partner_ref", "row 1 of this file"),
    (row("B-given", given_name=""), "given_name", "required", "given_name is required"),
    (row("B-given-long", given_name="G" * 101), "given_name", "too_long", "at most 100"),
    (row("B-family", family_name="F" * 101), "family_name", "too_long", "at most 100"),
    (row("B-sex", sex="female"), "sex", "invalid_choice", "F, M, X"),
    (row("B-dob", date_of_birth="1990-02-30"), "date_of_birth", "invalid_date", "real calendar date"),
    (
        row("B-dob-after", date_of_birth="2026-02-01"),
        "date_of_birth",
        "after_registration",
        "after registered_on",
    ),
    (row("B-dob-old", date_of_birth="1900-01-01"), "date_of_birth", "too_old", "over 120"),
    (row("B-nat", nationality="vnm"), "nationality", "invalid_country_code", "alpha-3"),
    (row("B-country", country="US"), "country", "not_programme_country", "programme country"),
    (row("B-idtype", id_type="driving_licence"), "id_type", "invalid_choice", "passport, national_id"),
    (row("B-idnum", id_number=""), "id_number", "required", "required when id_type is passport"),
    (row("B-idnum-long", id_number="9" * 41), "id_number", "too_long", "at most 40"),
    (row("B-phone", phone="0123456789"), "phone", "invalid_format", "E.164"),
    (row("B-household", household_size="31"), "household_size", "out_of_range", "1 to 30"),
    (row("B-household-text", household_size="two"), "household_size", "not_integer", "whole number"),
    (row("B-vuln", vulnerabilities="job_loss;hunger"), "vulnerabilities", "invalid_choice", "';'-separated"),
    (
        row("B-consent-no", given_name="Withheld", consent="no"),
        "consent",
        "consent_refused",
        "none of its personal data",
    ),
    (row("B-consent", consent="maybe"), "consent", "invalid_choice", "yes, no"),
    (row("B-assist", assistance="cash"), "assistance", "invalid_choice", "cash_relief, food_kit"),
    (
        row("B-method", payout_method=""),
        "payout_method",
        "required",
        "required when assistance is cash_relief",
    ),
    (row("B-method-other", payout_method="paypal"), "payout_method", "invalid_choice", "bank_transfer"),
    (
        row("B-account", payout_method="bank_transfer", payout_account=""),
        "payout_account",
        "required",
        "bank_transfer",
    ),
    (row("B-account-long", payout_account="A" * 65), "payout_account", "too_long", "at most 64"),
    (row("B-registered", registered_on="2099-01-01"), "registered_on", "future_date", "future"),
    (row("B-registered-form", registered_on="05/01/2026"), "registered_on", "invalid_date", "YYYY-MM-DD"),
]

VALID_ROWS = [
    row("V1"),
    row(
        "V2",
        given_name="Nguyễn Văn",
        family_name="An",
        sex="M",
        nationality="VNM",
        country="VN",
        id_type="none",
        id_number="",
        phone="",
        vulnerabilities="",
        assistance="food_kit",
        payout_method="",
        payout_account="",
    ),
    row(
        "V3",
        given_name="สมชาย",
        family_name="",
        sex="X",
        nationality="THA",
        country="TH",
        payout_method="cash_pickup",
        payout_account="",
        household_size="30",
        vulnerabilities="wage_theft;gbv;debt_bondage",
    ),
    row(
        "V4",
        given_name="  Maria  ",
        family_name="Dela Cruz, Jr.",
        nationality="PHL",
        country="HK",
        payout_method="bank_transfer",
        payout_account='=HYPERLINK("http://evil.example","pay")',
    ),
    row(
        "V5",
        given_name='=HYPERLINK("http://evil.example","click")',
        family_name="@SUM(A1)",
        date_of_birth="1906-01-05",
        registered_on="2026-01-05",
    ),
]


def test_a_mixed_batch_accepts_the_valid_rows_and_names_each_bad_one(make_settings, postgres, start_service):
    settings = make_settings(database="postgres", postgres_cluster=postgres)
    _, key = add_partner(settings, "CSO Malaysia")
    intake = start_service("intake", settings)
    rows = VALID_ROWS[:1] + [cells for cells, *_ in BAD_ROWS] + VALID_ROWS[1:]
    response = httpx.post(
        f"{intake.url}/v1/batches",
        content=csv_file(rows),
        headers={**bearer(key), "Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert (receipt["accepted"], receipt["rejected"]) == (len(VALID_ROWS), len(BAD_ROWS))
    errors = receipt["errors"]
    assert len(errors) == len(BAD_ROWS), errors  # one precise error per bad row
    for number, ((_, column, code, words), error) in enumerate(zip(BAD_ROWS, errors, strict=True), start=2):
        assert (error["row"], error["column"], error["code"]) == (number, column, code), error
        assert words in error["message"], error

    # Accepted rows are stored as sent (trimmed), formulas as plain text; a refused consent leaves no trace.
    stored = dict(query(settings, "SELECT partner_ref, given_name FROM intake_beneficiary"))
    assert stored == {
        "V1": "Siti",
        "V2": "Nguyễn Văn",
        "V3": "สมชาย",
        "V4": "Maria",
        "V5": '=HYPERLINK("http://evil.example","click")',
    }
    assert query(settings, "SELECT family_name FROM intake_beneficiary WHERE partner_ref = 'V5'") == [
        ("@SUM(A1)",)
    ]
    assert query(settings, "SELECT count(*) FROM intake_beneficiary WHERE given_name = 'Withheld'") == [(0,)]
    assert events_staged(settings, intake.url) == len(VALID_ROWS)

    # The batch reads back with its counts and rejections; nothing is decided yet.
    status = httpx.get(f"{intake.url}/v1/batches/{receipt['batch_id']}", headers=bearer(key)).json()
    assert (status["accepted"], status["rejected"], status["pending"], status["eligible"]) == (
        5,
        len(BAD_ROWS),
        5,
        0,
    )
    assert status["errors"] == errors

    # The same partner_refs again, as JSON: earlier batches count; other formats are read the same way.
    again = [row("V1"), row("V6", household_size=4)]  # a number where CSV would have text
    response = httpx.post(
        f"{intake.url}/v1/batches",
        content=json.dumps(again),
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["accepted"] == 1
    assert [(e["row"], e["column"], e["code"]) for e in body["errors"]] == [
        (1, "partner_ref", "duplicate_partner_ref")
    ]
    assert "earlier batch" in body["errors"][0]["message"]

    upload = {"file": ("march.csv", csv_file([row("V7"), row("V8", sex="")]), "text/csv")}
    response = httpx.post(f"{intake.url}/v1/batches", files=upload, headers=bearer(key))
    assert response.status_code == 201, response.text
    assert (response.json()["accepted"], response.json()["errors"][0]["column"]) == (1, "sex")

    metrics = httpx.get(f"{intake.url}/metrics").text
    assert 'relief_intake_rows_total{outcome="accepted",reason="none"} 7.0' in metrics
    assert 'relief_intake_rows_total{outcome="rejected",reason="consent_refused"} 1.0' in metrics
    assert 'relief_intake_batches_total{outcome="accepted"} 3.0' in metrics
    assert (
        'relief_intake_request_seconds_count{method="POST",route="/v1/batches",status="201"} 3.0' in metrics
    )
    assert "Siti" not in metrics and "V1" not in metrics


def test_whole_file_refusals_store_nothing(make_settings, start_service):
    settings = make_settings(max_upload_bytes=8192, max_rows=5)
    _, key = add_partner(settings)
    intake = start_service("intake", settings)
    url, headers = f"{intake.url}/v1/batches", {**bearer(key), "Content-Type": "text/csv"}

    def refused(content: bytes, status: int, code: str, **extra: str) -> dict:
        response = httpx.post(url, content=content, headers={**headers, **extra})
        assert response.status_code == status, response.text
        body = response.json()
        assert body["code"] == code, body
        return body

    unknown = csv_file([row("R1")]).replace(b"registered_on\r\n", b"registered_on,passport_no\r\n", 1)
    assert "passport_no" in refused(unknown, 422, "unknown_column")["message"]
    missing = csv_file([row("R1")]).replace(b",consent", b"", 1)
    assert "consent" in refused(missing, 422, "missing_column")["message"]
    latin1 = csv_file(
        [row("R1")]
    ) + "R2,José,,M,1990-01-01,PHL,HK,none,,,1,,yes,food_kit,,,2026-01-05\r\n".encode("latin-1")
    assert "UTF-8" in refused(latin1, 422, "not_utf8")["message"]
    assert (
        "at most 5 rows"
        in refused(csv_file([row(f"R{i}") for i in range(6)]), 413, "too_many_rows")["message"]
    )
    huge = csv_file([row("R1", family_name="x" * 9000)])
    assert "8,192 bytes" in refused(huge, 413, "file_too_large")["message"]
    streamed = httpx.post(url, content=iter([b"x" * 65536] * 16), headers=headers)  # no Content-Length
    assert (streamed.status_code, streamed.json()["code"]) == (413, "file_too_large")
    large = httpx.post(url, files={"file": ("big.csv", huge * 20, "text/csv")}, headers=bearer(key))
    assert (large.status_code, large.json()["code"]) == (413, "file_too_large")
    refused(b"<xml/>", 415, "unsupported_media_type", **{"Content-Type": "application/xml"})
    assert query(settings, "SELECT count(*) FROM intake_batch") == [(0,)]
    assert events_staged(settings, intake.url) == 0
    # and a correct file right after is accepted
    assert (
        httpx.post(url, content=csv_file([row(f"R{i}") for i in range(5)]), headers=headers).json()[
            "accepted"
        ]
        == 5
    )
