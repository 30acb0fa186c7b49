"""`relief approve`, `relief reconcile`, `relief payments`, `relief statement`: the finance side.

Every command talks to the disbursement service over HTTP with a finance key (SPEC §3, §6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import typer

from relief_cli.output import emit_json, fail, settings_or_exit, stderr, unreachable

FINDING_KEYS = (
    "matched",
    "missing_from_statement",
    "unknown_to_ledger",
    "amount_mismatch",
    "status_mismatch",
)
PAYMENT_STATUSES = ("pending_approval", "pending", "sent", "paid", "failed", "reversed")
TIMEOUT = httpx.Timeout(120.0, connect=5.0)


def _finance_key_option() -> Any:
    return typer.Option(..., "--finance-key", envvar="RELIEF_FINANCE_KEY", help="A finance user's API key.")


def _call(
    method: str, path: str, key: str, *, as_json: bool, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    settings = settings_or_exit()
    url = settings.service_url("disbursement") + path
    headers = {**(headers or {}), "Authorization": f"Bearer {key}"}
    try:
        return httpx.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
    except httpx.HTTPError as error:
        unreachable("disbursement", settings.service_url("disbursement"), error, as_json=as_json)


def _refused(response: httpx.Response, *, as_json: bool, **keys: Any) -> None:
    """Exit 1 with the service's code and message when the request was refused."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error", f"http_{response.status_code}"))
    message = str(body.get("message") or body.get("detail") or response.text[:300] or response.reason_phrase)
    extra = {k: v for k, v in body.items() if k not in ("error", "message")}
    if not as_json:
        for item in body.get("errors", [])[:20]:
            stderr.print(f"  row {item.get('row')}, column {item.get('column')}: {item.get('message')}")
    fail(message, as_json=as_json, code=1, status=response.status_code, error_code=code, **keys, **extra)


def _format_minor(amount: int, currency: str | None) -> str:
    if not currency:
        return str(amount)
    from shared.money import Money, MoneyError

    try:
        return Money(currency, amount).format()
    except MoneyError:
        return f"{currency} {amount}"


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the `relief` application."""

    @app.command("approve")
    def approve(
        country: str = typer.Option(..., "--country", help="Programme country, e.g. MY."),
        count: int = typer.Option(..., "--count", help="Control total: how many payments you approve."),
        total_minor: int = typer.Option(
            ..., "--total-minor", help="Control total: their sum in minor units."
        ),
        cycle: str | None = typer.Option(
            None, "--cycle", help="Cycle (default: the current one, RELIEF_CYCLE)."
        ),
        finance_key: str = _finance_key_option(),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Approve a country's payments waiting for approval, if the control totals match exactly."""
        body: dict[str, Any] = {
            "country": country.strip().upper(),
            "count": count,
            "total_minor": total_minor,
        }
        if cycle:
            body["cycle"] = cycle
        response = _call("POST", "/v1/approvals", finance_key, as_json=as_json, json=body)
        _refused(response, as_json=as_json, approved=False)
        result = response.json()
        if as_json:
            emit_json(result)
            return
        typer.echo(
            f"approved {result['count']} payment(s) in {result['country']} for cycle {result['cycle']}: "
            f"{_format_minor(result['total_minor'], result['currency'])} (approval {result['approval_id']})"
        )

    @app.command("reconcile")
    def reconcile(
        statement: Path = typer.Argument(
            ..., exists=True, dir_okay=False, readable=True, help="Provider statement CSV."
        ),
        finance_key: str = _finance_key_option(),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        csv_out: Path | None = typer.Option(
            None, "--csv", help="Also write the findings as CSV to this file."
        ),
    ) -> None:
        """Match a provider statement against the ledger and print every discrepancy."""
        content = statement.read_bytes()
        headers = {"Content-Type": "text/csv"}
        response = _call(
            "POST", "/v1/reconciliations", finance_key, as_json=as_json, content=content, headers=headers
        )
        _refused(response, as_json=as_json)
        report = response.json()
        if csv_out is not None:
            exported = _call(
                "POST",
                "/v1/reconciliations?format=csv",
                finance_key,
                as_json=as_json,
                content=content,
                headers=headers,
            )
            _refused(exported, as_json=as_json)
            csv_out.write_text(exported.text, encoding="utf-8")
        if as_json:
            emit_json(report)
            return
        typer.echo(
            f"{report['lines']} statement line(s): {report['matched']} matched, "
            f"{report['missing_from_statement']} missing from the statement, "
            f"{report['unknown_to_ledger']} unknown to the ledger, {report['amount_mismatch']} amount or currency "
            f"mismatch(es), {report['status_mismatch']} status mismatch(es); {report['reversed']} reversal(s) applied."
        )
        for item in report["items"]:
            typer.echo(f"  {item['kind']:<24} {item['payment_ref']:<24} {item['message']}")
        if csv_out is not None:
            stderr.print(f"findings written to {csv_out}")

    @app.command("payments")
    def payments(
        status: str | None = typer.Option(None, "--status", help="Only payments in this status."),
        country: str | None = typer.Option(None, "--country", help="Only payments in this country."),
        finance_key: str = _finance_key_option(),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """List payments with their amount, currency, status, country and partner."""
        if status is not None and status not in PAYMENT_STATUSES:
            fail(f"--status must be one of {', '.join(PAYMENT_STATUSES)}", code=2, as_json=as_json)
        params = {k: v for k, v in {"status": status, "country": country and country.upper()}.items() if v}
        response = _call("GET", "/v1/payments", finance_key, as_json=as_json, params=params)
        _refused(response, as_json=as_json)
        listed = response.json()
        totals: dict[str, dict[str, int]] = {}
        for payment in listed:
            slot = totals.setdefault(payment["currency"], {"payments": 0, "amount_minor": 0})
            slot["payments"] += 1
            slot["amount_minor"] += payment["amount_minor"]
        if as_json:
            emit_json({"count": len(listed), "totals": totals, "payments": listed})
            return
        for payment in listed[:200]:
            typer.echo(
                f"{payment['payment_ref']}  {payment['status']:<16} {payment['country']}  "
                f"{_format_minor(payment['amount_minor'], payment['currency']):>22}  {payment['partner_id']}"
            )
        if len(listed) > 200:
            typer.echo(f"… and {len(listed) - 200} more (use --json for all)")
        for currency, slot in sorted(totals.items()):
            typer.echo(f"{slot['payments']} payment(s), {_format_minor(slot['amount_minor'], currency)}")

    @app.command("statement")
    def statement(
        finance_key: str = _finance_key_option(),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="Write the CSV here (default: stdout)."
        ),
    ) -> None:
        """Export the simulated provider's statement CSV (to reconcile against the ledger)."""
        response = _call("GET", "/v1/provider/statement", finance_key, as_json=False)
        _refused(response, as_json=False)
        if output is None:
            typer.echo(response.text, nl=False)
        else:
            output.write_text(response.text, encoding="utf-8")
            stderr.print(f"statement written to {output} ({len(response.text.splitlines()) - 1} line(s))")

    @app.command("overpayments")
    def overpayments(
        finance_key: str = _finance_key_option(),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Payments to recover: a person paid twice in a cycle, found when two records were merged."""
        response = _call("GET", "/v1/overpayments", finance_key, as_json=as_json)
        _refused(response, as_json=as_json)
        listed = response.json()
        if as_json:
            emit_json({"count": len(listed), "overpayments": listed})
            return
        if not listed:
            typer.echo("no overpayments")
        for item in listed:
            typer.echo(
                f"{item['payment_ref']} (kept {item['kept_payment_ref']}) cycle {item['cycle']}: "
                f"{_format_minor(item['amount_minor'], item['currency'])} to recover"
            )
