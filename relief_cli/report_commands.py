"""`relief report`: the reach report (SPEC §6) from the reporting service, as a table, JSON or CSV."""

from __future__ import annotations

import sys
from typing import Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from relief_cli.output import emit_json, fail, settings_or_exit, unreachable

EXPLANATIONS = {
    "beneficiaries_reached": "distinct people with at least one delivered assistance, each counted once",
    "people_reached": "those people plus their households (largest household size each reported)",
    "duplicates_detected": "rows stopped as a second approval for someone already approved",
    "overpayments_detected": "payments found to pay one person twice after identity merges",
}
BREAKDOWN_TITLES = {
    "by_country": "Reached by country",
    "by_sex": "Reached by sex (from each person's first delivered assistance)",
    "by_age_band": "Reached by age band (age at each person's first delivered assistance)",
    "by_partner": "Reached by partner (a person helped by two partners counts in both)",
    "by_assistance": "Reached by type of assistance",
}


def _get(url: str, params: dict[str, Any], as_json: bool) -> httpx.Response:
    try:
        response = httpx.get(url, params=params, timeout=30.0)
    except httpx.HTTPError as error:
        unreachable("reporting", url, error, as_json=as_json)
    if response.status_code != 200:
        fail(f"the reporting service answered {response.status_code}: {response.text[:300]}", as_json=as_json)
    return response


def print_report(report: dict[str, Any], console: Console) -> None:
    headline = Table(title=f"Reach as of {report.get('as_of', '?')}", title_justify="left", show_header=True)
    headline.add_column("figure", style="bold")
    headline.add_column("value", justify="right", style="bold cyan")
    headline.add_column("what it means", style="dim")
    for figure, explanation in EXPLANATIONS.items():
        if figure in report:
            headline.add_row(figure.replace("_", " "), f"{report[figure]:,}", explanation)
    console.print(headline)

    for breakdown, title in BREAKDOWN_TITLES.items():
        groups: dict[str, int] = report.get(breakdown) or {}
        table = Table(title=title, title_justify="left")
        table.add_column(breakdown.removeprefix("by_").replace("_", " "))
        table.add_column("persons", justify="right")
        for group, persons in groups.items():
            table.add_row(group, f"{persons:,}")
        if not groups:
            table.add_row("—", "0")
        console.print(table)

    money = Table(title="Disbursed (payments paid, amounts in minor units)", title_justify="left")
    money.add_column("currency")
    money.add_column("amount (minor units)", justify="right")
    money.add_column("payments", justify="right")
    for currency, item in (report.get("disbursed") or {}).items():
        money.add_row(currency, f"{item['amount_minor']:,}", f"{item['payments']:,}")
    console.print(money)


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the `relief` application."""

    @app.command()
    def report(
        as_json: bool = typer.Option(False, "--json", help="print the reach report as one JSON object"),
        as_csv: bool = typer.Option(False, "--csv", help="print the flat CSV export instead"),
        min_cell: int | None = typer.Option(
            None, "--min-cell", min=1, help="CSV: show counts from 1 to N-1 as <N (small-cell suppression)"
        ),
        hxl: bool = typer.Option(False, "--hxl", help="CSV: add an HXL hashtag row under the header"),
    ) -> None:
        """The deduplicated number of people reached, with breakdowns and money paid."""
        settings = settings_or_exit()
        base = settings.service_url("reporting")
        if as_csv and not as_json:  # --json always means exactly one JSON object
            params: dict[str, Any] = {"hxl": "1"} if hxl else {}
            if min_cell is not None:
                params["min_cell"] = min_cell
            sys.stdout.write(_get(f"{base}/v1/reach.csv", params, as_json=False).text)
            sys.stdout.flush()
            return
        response = _get(f"{base}/v1/reach", {}, as_json=as_json)
        body = orjson.loads(response.content)
        if as_json:
            emit_json(body)
            return
        print_report(body, Console())
