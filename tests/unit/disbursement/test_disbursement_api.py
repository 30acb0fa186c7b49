"""Finance routes over HTTP (in-process ASGI), with a fake of intake's key check."""

from __future__ import annotations

import csv
import io
import random

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.disbursement import api
from services.disbursement.metrics import disbursement_metrics
from services.disbursement.provider import SimulatedProvider
from services.disbursement.sender import PaymentSender
from tests.unit.disbursement.disbursement_builders import (
    KEYS,
    SEALER,
    SECRET,
    TOPIC,
    FakeAuthenticator,
    apply,
    decided,
    drain,
    payments,
)

FINANCE = {"Authorization": "Bearer rk_finance_key"}
HEADER = "payment_ref,amount_minor,currency,status,settled_on\n"


@pytest.fixture
def provider(engine):
    return SimulatedProvider(engine, secret=SECRET, rng=random.Random(3))


@pytest.fixture
def sender(engine, provider):
    return PaymentSender(
        engine, provider, open_account=SEALER.open, metrics=disbursement_metrics(CollectorRegistry()), topic=TOPIC,
        retry_base_seconds=0.005, retry_cap_seconds=0.05,
    )  # fmt: skip


@pytest.fixture
async def client(engine, provider):
    app = FastAPI()
    app.include_router(api.router)
    api.install_error_handlers(app)
    app.state.disbursement = api.Context(
        engine=engine, authenticator=FakeAuthenticator(KEYS), cycle="C1", payments_topic=TOPIC,
        max_upload_bytes=1 << 20, metrics=disbursement_metrics(CollectorRegistry()), provider=provider,
        after_commit=lambda: None,
    )  # fmt: skip
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://disbursement"
    ) as client:
        yield client


async def test_finance_routes_need_a_finance_key(client):
    assert (await client.get("/v1/payments")).status_code == 401
    unknown = await client.get("/v1/payments", headers={"Authorization": "Bearer rk_nobody_x"})
    assert (unknown.status_code, unknown.json()["error"]) == (401, "unauthorized")
    partner = await client.post(
        "/v1/reconciliations", content=HEADER, headers={"Authorization": "Bearer rk_partner_key"}
    )
    assert (partner.status_code, partner.json()["error"]) == (403, "forbidden")


async def test_payments_are_listed_with_their_status_and_filtered_by_it(client, engine, sender):
    apply(engine, [decided("a", country="VN"), decided("b", country="JP"), decided("c", account="FAIL-9")])
    await drain(sender, engine)
    listed = (await client.get("/v1/payments", headers=FINANCE)).json()
    assert {
        (p["country"], p["amount_minor"], p["currency"], p["status"], p["partner_id"]) for p in listed
    } == {
        ("VN", 2_800_000, "VND", "paid", "p-tenaganita"),
        ("JP", 16_800, "JPY", "paid", "p-tenaganita"),
        ("MY", 48000, "MYR", "failed", "p-tenaganita"),
    }
    assert all(isinstance(p["amount_minor"], int) and set(p) >= {"payment_ref"} for p in listed)
    failed = (await client.get("/v1/payments", params={"status": "failed"}, headers=FINANCE)).json()
    assert [p["currency"] for p in failed] == ["MYR"]
    bad = await client.get("/v1/payments", params={"status": "lost"}, headers=FINANCE)
    assert bad.status_code == 422 and "pending_approval" in bad.json()["message"]
    one = (await client.get(f"/v1/payments/{failed[0]['payment_ref']}", headers=FINANCE)).json()
    assert [(e["sequence"], e["status"]) for e in one["ledger"]] == [
        (1, "pending"),
        (2, "sent"),
        (3, "failed"),
    ]
    assert "payout_account_sealed" not in one
    balances = (await client.get("/v1/balances", headers=FINANCE)).json()
    assert balances["VND"]["paid_minor"] == balances["VND"]["ledger_net_minor"] == 2_800_000
    assert "MYR" not in balances  # the refused payment delivered nothing


async def test_a_stale_approval_is_refused_with_409_recorded_and_a_matching_one_releases_the_set(
    client, engine, sender
):
    apply(engine, [decided("a"), decided("b")], approval_required=True)
    refused = await client.post(
        "/v1/approvals", json={"country": "MY", "count": 3, "total_minor": 96000}, headers=FINANCE
    )
    assert refused.status_code == 409
    assert refused.json()["error"] == "control_totals_mismatch" and "count 3" in refused.json()["message"]
    await drain(sender, engine)
    assert {p.status for p in payments(engine)} == {"pending_approval"}
    granted = await client.post(
        "/v1/approvals", json={"country": "MY", "count": 2, "total_minor": 96000}, headers=FINANCE
    )
    assert granted.status_code == 201
    body = granted.json()
    assert (body["approved"], body["count"], body["total_minor"], body["currency"], body["cycle"]) == (
        True,
        2,
        96000,
        "MYR",
        "C1",
    )
    await drain(sender, engine)
    assert {p.status for p in payments(engine)} == {"paid"}
    audit = (await client.get("/v1/approvals", headers=FINANCE)).json()
    assert [(a["outcome"], a["count"], a["approved_by"]) for a in audit] == [
        ("refused", 3, "p-finance"),
        ("approved", 2, "p-finance"),
    ]
    invalid = await client.post(
        "/v1/approvals", json={"country": "Malaysia", "count": 1, "total_minor": 1}, headers=FINANCE
    )
    assert invalid.status_code == 422
    # A count beyond what the audit can hold is the caller's mistake, not a server error.
    huge = await client.post(
        "/v1/approvals", json={"country": "MY", "count": 6915232309539207, "total_minor": 1}, headers=FINANCE
    )
    assert huge.status_code == 422 and "count" in huge.text


async def test_a_statement_with_four_discrepancies_is_reported_item_by_item(client, engine, sender):
    apply(engine, [decided(name) for name in "abcde"])
    await drain(sender, engine)
    refs = {p.person_id: p.payment_ref for p in payments(engine)}
    statement = HEADER + "".join(
        [
            f"{refs['a']},48000,MYR,paid,2026-01-10\n",
            f"{refs['b']},48001,MYR,paid,2026-01-10\n",
            f"{refs['c']},48000,THB,paid,2026-01-10\n",
            f"{refs['e']},48000,MYR,paid,2026-01-10\n",
            '=HYPERLINK("http://x"),100,MYR,paid,2026-01-10\n',
        ]
    )
    response = await client.post(
        "/v1/reconciliations", content=statement, headers={**FINANCE, "Content-Type": "text/csv"}
    )
    assert response.status_code == 200
    report = response.json()
    assert {k: report[k] for k in ("matched", "missing_from_statement", "unknown_to_ledger", "amount_mismatch", "status_mismatch")} == {
        "matched": 2, "missing_from_statement": 1, "unknown_to_ledger": 1, "amount_mismatch": 2, "status_mismatch": 0,
    }  # fmt: skip
    assert sorted((i["kind"], i["payment_ref"]) for i in report["items"]) == sorted(
        [("amount_mismatch", refs["b"]), ("amount_mismatch", refs["c"]), ("missing_from_statement", refs["d"]),
         ("unknown_to_ledger", '=HYPERLINK("http://x")')]
    )  # fmt: skip
    exported = await client.post("/v1/reconciliations?format=csv", content=statement, headers=FINANCE)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert exported.headers["content-type"].startswith("text/csv") and len(rows) == 4
    assert {r["payment_ref"] for r in rows if r["kind"] == "unknown_to_ledger"} == {
        '\'=HYPERLINK("http://x")'
    }
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())


async def test_a_bad_statement_row_is_refused_naming_the_row_and_column(client):
    statement = HEADER + "PAY1,100,MYR,paid,2026-01-10\nPAY2,1.5,MYR,paid,2026-01-10\n"
    response = await client.post("/v1/reconciliations", content=statement, headers=FINANCE)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_statement" and body["message"].startswith("row 2, column amount_minor")
    assert body["errors"] == [
        {"row": 2, "column": "amount_minor", "message": "must be a whole number of minor units, got '1.5'"}
    ]


async def test_the_providers_own_statement_reconciles_cleanly_and_reports_a_reversal(client, engine, sender):
    apply(engine, [decided("a"), decided("b", account="FAIL-1"), decided("c", country="VN")])
    await drain(sender, engine)
    statement = (await client.get("/v1/provider/statement", headers=FINANCE)).text
    assert statement.startswith(HEADER) and len(statement.strip().splitlines()) == 4
    files = {"file": ("statement.csv", statement.encode(), "text/csv")}
    clean = (await client.post("/v1/reconciliations", files=files, headers=FINANCE)).json()
    assert (clean["matched"], clean["items"]) == (3, [])
    paid_ref = next(p.payment_ref for p in payments(engine) if p.person_id == "a")
    reversal = HEADER + f"{paid_ref},48000,MYR,reversed,2026-02-01\n"
    report = (await client.post("/v1/reconciliations", content=reversal, headers=FINANCE)).json()
    assert report["reversed"] == 1 and [r["payment_ref"] for r in report["reversals"]] == [paid_ref]
    assert report["missing_from_statement"] == 2  # this statement lists only the reversal
    assert next(p for p in payments(engine) if p.person_id == "a").status == "reversed"
    overpayments = await client.get("/v1/overpayments", headers=FINANCE)
    assert overpayments.status_code == 200 and overpayments.json() == []
