"""Finance end to end: real intake (keys), real disbursement process, the `relief` CLI.

Maker-checker approval against control totals, a statement with four discrepancies, a reversal.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter

import httpx

from tests.integration.disbursement.disbursement_support import (
    balances,
    decision,
    engine_for,
    payments,
    provider_transfers,
    publish,
    wait_until,
)

HEADER = "payment_ref,amount_minor,currency,status,settled_on"


def json_out(stdout: str) -> dict:
    """The command's JSON object (`partners add` currently also logs a line to stdout before it)."""
    start = 0 if stdout.startswith("{") else stdout.index("\n{") + 1
    return json.JSONDecoder().raw_decode(stdout[start:])[0]


def relief(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.child_environment()}
    return subprocess.run(
        [sys.executable, "-m", "relief_cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_finance_approves_against_control_totals_and_reconciles_a_statement(
    make_settings, start_service, tmp_path
):
    settings = make_settings(approval_required=True)
    created = relief(
        settings, "partners", "add", "--name", "Programme Finance", "--role", "finance", "--json"
    )
    assert created.returncode == 0, created.stderr
    key = json_out(created.stdout)["api_key"]
    start_service("intake", settings)
    service = start_service("disbursement", settings)
    await publish(
        settings,
        [(p, decision(settings, p)) for p in ("my-a", "my-b")]
        + [("my-refused", decision(settings, "my-refused", account="FAIL-77"))]
        + [(p, decision(settings, p, country="TH")) for p in ("th-a", "th-b")],
    )
    engine = engine_for(settings)
    try:
        await wait_until(lambda: len(payments(engine)) == 5, what="five payments waiting for approval")
        assert {p.status for p in payments(engine)} == {"pending_approval"}

        # A stale control total is refused, recorded, and nothing moves.
        stale = relief(
            settings,
            "approve",
            "--country",
            "MY",
            "--count",
            "2",
            "--total-minor",
            "96000",
            "--finance-key",
            key,
            "--json",
        )
        assert stale.returncode == 1
        refusal = json.loads(stale.stdout)
        assert refusal["error_code"] == "control_totals_mismatch" and "count 2" in refusal["error"]
        assert refusal["approved"] is False
        stale_total = relief(
            settings,
            "approve",
            "--country",
            "MY",
            "--count",
            "3",
            "--total-minor",
            "143999",
            "--finance-key",
            key,
            "--json",
        )
        assert stale_total.returncode == 1 and "total_minor 143999" in json.loads(stale_total.stdout)["error"]
        await asyncio.sleep(1.0)
        assert {p.status for p in payments(engine)} == {"pending_approval"} and provider_transfers(
            engine
        ) == Counter()

        # The exact control totals release exactly that country's set.
        granted = relief(
            settings,
            "approve",
            "--country",
            "MY",
            "--count",
            "3",
            "--total-minor",
            "144000",
            "--finance-key",
            key,
            "--json",
        )
        assert granted.returncode == 0, granted.stdout + granted.stderr
        approval = json.loads(granted.stdout)
        assert {k: approval[k] for k in ("approved", "count", "total_minor", "currency")} == {
            "approved": True, "count": 3, "total_minor": 144000, "currency": "MYR",
        }  # fmt: skip
        await wait_until(
            lambda: (
                Counter((p.country, p.status) for p in payments(engine))
                == Counter({("MY", "paid"): 2, ("MY", "failed"): 1, ("TH", "pending_approval"): 2})
            ),
            what="Malaysia's payments to settle",
        )
        assert (
            relief(
                settings,
                "approve",
                "--country",
                "TH",
                "--count",
                "2",
                "--total-minor",
                "720000",
                "--finance-key",
                key,
            ).returncode
            == 0
        )
        await wait_until(
            lambda: Counter(p.status for p in payments(engine)) == Counter({"paid": 4, "failed": 1}),
            what="all to settle",
        )
        audit = httpx.get(f"{service.url}/v1/approvals", headers={"Authorization": f"Bearer {key}"}).json()
        assert [(a["outcome"], a["country"], a["approver_name"]) for a in audit] == [
            ("refused", "MY", "Programme Finance"), ("refused", "MY", "Programme Finance"),
            ("approved", "MY", "Programme Finance"), ("approved", "TH", "Programme Finance"),
        ]  # fmt: skip

        listed = json.loads(
            relief(settings, "payments", "--status", "paid", "--finance-key", key, "--json").stdout
        )
        assert listed["count"] == 4 and listed["totals"] == {
            "MYR": {"payments": 2, "amount_minor": 96000}, "THB": {"payments": 2, "amount_minor": 720000},
        }  # fmt: skip

        # The provider's own statement reconciles cleanly.
        exported = tmp_path / "statement.csv"
        assert relief(settings, "statement", "--finance-key", key, "--output", str(exported)).returncode == 0
        clean = json.loads(
            relief(settings, "reconcile", str(exported), "--finance-key", key, "--json").stdout
        )
        assert (clean["matched"], clean["items"]) == (5, [])

        # A doctored one: one line dropped, one unknown, one wrong amount, one wrong currency.
        refs = {p.person_id: p.payment_ref for p in payments(engine)}
        lines = {row["payment_ref"]: row for row in csv.DictReader(io.StringIO(exported.read_text()))}
        del lines[refs["my-a"]]
        lines[refs["my-b"]]["amount_minor"] = "48100"
        lines[refs["th-a"]]["currency"] = "MYR"
        lines["-1+1"] = {
            "payment_ref": "-1+1",
            "amount_minor": "100",
            "currency": "MYR",
            "status": "paid",
            "settled_on": "2026-01-31",
        }
        doctored = tmp_path / "doctored.csv"
        doctored.write_text(
            HEADER
            + "\n"
            + "".join(",".join(row[c] for c in HEADER.split(",")) + "\n" for row in lines.values())
        )
        findings_csv = tmp_path / "findings.csv"
        result = relief(
            settings, "reconcile", str(doctored), "--finance-key", key, "--json", "--csv", str(findings_csv)
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert {k: report[k] for k in ("matched", "missing_from_statement", "unknown_to_ledger", "amount_mismatch", "status_mismatch")} == {
            "matched": 2, "missing_from_statement": 1, "unknown_to_ledger": 1, "amount_mismatch": 2, "status_mismatch": 0,
        }  # fmt: skip
        assert sorted((i["kind"], i["payment_ref"]) for i in report["items"]) == sorted(
            [("missing_from_statement", refs["my-a"]), ("amount_mismatch", refs["my-b"]),
             ("amount_mismatch", refs["th-a"]), ("unknown_to_ledger", "-1+1")]
        )  # fmt: skip
        exported_findings = list(csv.DictReader(io.StringIO(findings_csv.read_text())))
        assert len(exported_findings) == 4 and "'-1+1" in {row["payment_ref"] for row in exported_findings}

        # A reversal reported by the provider: the payment stops counting as delivered.
        reversal = tmp_path / "reversal.csv"
        reversal.write_text(f"{HEADER}\n{refs['th-b']},360000,THB,reversed,2026-02-02\n")
        reversed_report = json.loads(
            relief(settings, "reconcile", str(reversal), "--finance-key", key, "--json").stdout
        )
        assert reversed_report["reversed"] == 1
        assert next(p for p in payments(engine) if p.person_id == "th-b").status == "reversed"
        sums = balances(engine)
        assert sums["THB"]["paid_minor"] == sums["THB"]["ledger_net_minor"] == 360000
        assert sums["MYR"]["paid_minor"] == sums["MYR"]["ledger_net_minor"] == 96000

        # A bad statement is refused with the row and the column.
        broken = tmp_path / "broken.csv"
        broken.write_text(f"{HEADER}\n{refs['th-b']},360000,THB,bounced,2026-02-02\n")
        refused = relief(settings, "reconcile", str(broken), "--finance-key", key, "--json")
        assert refused.returncode == 1 and json.loads(refused.stdout)["error"].startswith(
            "row 1, column status"
        )

        metrics = httpx.get(f"{service.url}/metrics").text
        assert 'relief_payments_total{currency="MYR",status="paid"} 2.0' in metrics
        assert 'relief_disbursed_minor_total{currency="MYR"} 96000.0' in metrics
        assert 'relief_reversed_minor_total{currency="THB"} 360000.0' in metrics
        assert "relief_provider_seconds_count" in metrics and "relief_pending_approvals" in metrics
        # Without a finance key, nothing is shown.
        assert httpx.get(f"{service.url}/v1/payments").status_code == 401
    finally:
        engine.dispose()
