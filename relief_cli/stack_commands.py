"""`relief up`, `relief wait` and `relief demo`: running the whole programme."""

from __future__ import annotations

import shutil
import signal
import time
from typing import Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from relief_cli.drain import pipeline_state, wait_until_drained
from relief_cli.output import emit_json, fail, settings_or_exit, stderr
from relief_cli.runner import ProgrammeError, fetch_reach, run_programme
from relief_cli.stack import Stack, parse_replicas
from shared.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("wait")(wait)
    app.command("demo")(demo)


def up(
    replicas: str = typer.Option(
        None, "--replicas", help="Consumers per service, e.g. eligibility=2,disbursement=2"
    ),
) -> None:
    """Run the whole stack in the foreground until SIGINT or SIGTERM, then stop cleanly."""
    settings = settings_or_exit()
    try:
        stack = Stack(settings, parse_replicas(replicas))
    except ValueError as error:
        fail(str(error), code=2)
    signal.signal(signal.SIGTERM, stack.request_stop)
    signal.signal(signal.SIGINT, stack.request_stop)
    try:
        stack.start()
        for service in ("intake", "eligibility", "disbursement", "reporting"):
            stderr.print(f"  {service:<13} {stack.settings.service_url(service)}")
        stderr.print(f"  dashboard     {stack.settings.service_url('reporting')}/dashboard")
        stderr.print("relief: running; Ctrl-C stops everything")
        stack.run_forever()
    except RuntimeError as error:
        stack.stop()
        fail(str(error))
    stack.stop()
    stderr.print("relief: stopped")


def wait(
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait before giving up"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """Return once every accepted row has a final state and all consumer lag is 0 (exit 1 on timeout)."""
    settings = settings_or_exit()
    state = wait_until_drained(settings, timeout)
    result = {
        "drained": bool(state.get("drained")),
        "pending": state.get("pending"),
        **{k: v for k, v in state.items() if k not in ("drained", "pending")},
    }
    if as_json:
        emit_json(result)
    else:
        stderr.print("drained" if result["drained"] else f"not drained: {result}")
    raise typer.Exit(0 if result["drained"] else 1)


def _demo_settings(settings: Settings) -> Settings:
    run = time.strftime("%Y%m%d%H%M%S")
    update: dict[str, Any] = {"data_dir": settings.data_dir / "demo"}
    if not settings.local_kafka:
        update["topic_prefix"] = f"{settings.topic_prefix}demo{run}."
    if settings.database_url:
        base, _, query = settings.database_url.partition("?")
        update["database_url"] = f"{base}_demo{run}" + (f"?{query}" if query else "")
    return settings.model_copy(update=update)


EXPLANATIONS = {
    "beneficiaries_reached": "distinct people with at least one delivered assistance, however many partners or rows",
    "people_reached": "the same people plus their households (largest household size reported per person)",
    "duplicates_detected": "rows recognised as a person already helped in this cycle (not paid twice)",
}


def _print_report(reach: dict[str, Any], truth: dict[str, Any] | None, seconds: float, rows: int) -> None:
    from rich.table import Table

    stderr.print()
    stderr.print(f"[bold]Reach report[/] (as of {reach.get('as_of')})")
    for field, explanation in EXPLANATIONS.items():
        stderr.print(f"  [bold cyan]{reach.get(field, 0):>10,}[/]  {field}: {explanation}")
    for name in ("by_country", "by_sex", "by_age_band", "by_assistance", "by_partner"):
        groups = reach.get(name, {})
        table = Table(
            title=name.replace("_", " "), title_justify="left", show_header=False, box=None, padding=(0, 2)
        )
        for group, persons in groups.items():
            table.add_row(str(group), f"{persons:,}")
        stderr.print(table)
    money = Table(
        title="disbursed (paid payments, minor units)", title_justify="left", box=None, padding=(0, 2)
    )
    money.add_column("currency")
    money.add_column("amount_minor", justify="right")
    money.add_column("payments", justify="right")
    for currency, entry in reach.get("disbursed", {}).items():
        money.add_row(currency, f"{entry['amount_minor']:,}", f"{entry['payments']:,}")
    stderr.print(money)
    stderr.print(
        f"{rows:,} rows went through intake, eligibility, disbursement and reporting in {seconds:.1f} s."
    )
    if truth is not None:
        mismatches = [key for key in truth if key in reach and reach[key] != truth[key]]
        if mismatches:
            stderr.print(
                f"[bold red]differs from the generated programme's ground truth:[/] {', '.join(mismatches)}"
            )
        else:
            stderr.print("[green]Every figure matches the generated programme's ground truth.[/]")


def demo(
    persons: int = typer.Option(3000, "--persons", min=10, help="Distinct people in the generated programme"),
    seed: int = typer.Option(7, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the reach report as one JSON object"),
    keep_running: bool = typer.Option(
        False, "--keep-running", help="Leave the stack up afterwards (Ctrl-C stops)"
    ),
    timeout: float = typer.Option(900.0, "--timeout"),
) -> None:
    """Generate a realistic multi-partner programme, run it through all four services, print the reach."""
    from relief_cli.generator import generate_programme

    settings = _demo_settings(settings_or_exit())
    if settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)  # the demo starts from an empty programme every time
    programme = generate_programme(persons, seed=seed)
    stderr.print(
        f"relief demo: {len(programme.partners)} partners, {len(programme.batches)} batches, {programme.rows:,} rows for about {persons:,} people"
    )
    stack = Stack(settings)
    started = time.monotonic()
    try:
        stack.start()
        settings = stack.settings
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
        ) as bar:
            task = bar.add_task("batches submitted and decided", total=len(programme.batches))
            run_programme(settings, programme, timeout=timeout, on_batch=lambda *_: bar.advance(task))
        reach = fetch_reach(settings)
        elapsed = time.monotonic() - started
        truth = {k: v for k, v in programme.truth.items() if k not in ("accepted", "rejected")}
        state = pipeline_state(settings)
        if as_json:
            emit_json(
                {
                    **reach,
                    "ground_truth_matches": all(reach.get(k) == v for k, v in truth.items()),
                    "rows": programme.rows,
                    "accepted": state["accepted"],
                    "seconds": round(elapsed, 1),
                }
            )
        else:
            _print_report(reach, truth, elapsed, programme.rows)
        if keep_running:
            stderr.print(
                f"dashboard: {settings.service_url('reporting')}/dashboard   metrics: {settings.service_url('reporting')}/metrics"
            )
            signal.signal(signal.SIGTERM, stack.request_stop)
            signal.signal(signal.SIGINT, stack.request_stop)
            stack.run_forever()
    except (RuntimeError, ProgrammeError, httpx.HTTPError) as error:
        stack.stop()
        fail(str(error), as_json=as_json)
    finally:
        stack.stop()
