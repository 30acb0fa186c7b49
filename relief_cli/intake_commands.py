"""`relief partners add|revoke`, `relief submit` and `relief status`: the intake side of the CLI."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer

from relief_cli.output import EXIT_UNAVAILABLE, emit_json, fail, settings_or_exit, stderr, unreachable
from shared.settings import Settings

PROGRESS_FROM_BYTES = 1024 * 1024  # show upload progress for files from 1 MiB
UPLOAD_CHUNK_BYTES = 256 * 1024
SEND_ATTEMPTS = 3
STATUS_KEYS = (
    "accepted",
    "rejected",
    "eligible",
    "ineligible",
    "duplicate",
    "paid",
    "failed",
    "reversed",
    "pending_approval",
    "pending",
)


class PartnerRole(StrEnum):
    partner = "partner"
    finance = "finance"


def _quiet_logs() -> None:
    """Logs go to stderr (structlog's default is stdout, which would spoil `--json`), warnings only."""
    from shared.logging import configure_logging

    configure_logging("relief-cli", "WARNING", "console")


def _intake_engine(settings: Settings) -> Any:
    """Intake's own database, with its tables, as the service itself opens it."""
    from sqlalchemy.exc import OperationalError

    _quiet_logs()
    from services.intake import store
    from shared.db import create_tables, make_engine

    try:
        engine = make_engine(settings.database_url_for("intake"))
        create_tables(engine, store.TABLES)
    except OperationalError as error:
        fail(
            f"cannot open intake's database: {str(error.orig or error).splitlines()[0]}",
            code=EXIT_UNAVAILABLE,
        )
    return engine


def _problem(response: httpx.Response) -> tuple[str, str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}", response.text[:300] or response.reason_phrase, None
    if isinstance(body, dict) and "message" in body:
        return str(body.get("code", "error")), str(body["message"]), body.get("column")
    return f"http_{response.status_code}", str(body)[:300], None


def _refused(code: str, message: str, column: str | None, *, as_json: bool) -> NoReturn:
    """The whole file was refused: nothing of it was stored. Exit code 1."""
    if as_json:
        emit_json(
            {
                "batch_id": None,
                "accepted": 0,
                "rejected": 0,
                "errors": [{"row": None, "column": column, "message": message}],
                "refused": True,
                "code": code,
            }
        )
        raise typer.Exit(1)
    fail(f"the whole file was refused: {message}")


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    """The file in chunks, with a progress bar on stderr for large files."""
    if size < PROGRESS_FROM_BYTES:
        yield path.read_bytes()
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress, path.open("rb") as handle:
        task = progress.add_task("upload", total=size)
        while chunk := handle.read(UPLOAD_CHUNK_BYTES):
            progress.advance(task, len(chunk))
            yield chunk
    stderr.print("uploaded; validating rows…")


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the `relief` application."""
    partners = typer.Typer(help="CSO partners and finance users, and their API keys.", no_args_is_help=True)
    app.add_typer(partners, name="partners")

    @partners.command("add")
    def partners_add(
        name: str = typer.Option(..., "--name", help="The organisation's or finance user's name."),
        role: PartnerRole = typer.Option(
            PartnerRole.partner, "--role", help="partner (uploads batches) or finance."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Create a partner (or a finance user) and print its API key once; only a hash is stored."""
        from services.intake import handlers
        from shared.db import transaction

        name = name.strip()
        if not 1 <= len(name) <= 200:
            fail("--name must be 1 to 200 characters", code=2, as_json=as_json)
        settings = settings_or_exit()
        engine = _intake_engine(settings)
        try:
            with transaction(engine) as session:
                partner, api_key = handlers.register_partner(
                    session, name=name, role=role.value, now=datetime.now(UTC)
                )
        finally:
            engine.dispose()
        if as_json:
            emit_json(
                {
                    "partner_id": partner.partner_id,
                    "name": partner.name,
                    "role": partner.role,
                    "api_key": api_key,
                }
            )
            return
        typer.echo(f"partner_id: {partner.partner_id}")
        typer.echo(f"api_key:    {api_key}")
        stderr.print("Keep this key now: it is shown once and only a hash of it is stored.")

    @partners.command("revoke")
    def partners_revoke(
        partner_id: str = typer.Argument(..., help="The partner_id printed by `relief partners add`."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Revoke a partner's API key: every later request with it is refused (401)."""
        from services.intake import handlers
        from shared.db import transaction

        settings = settings_or_exit()
        engine = _intake_engine(settings)
        try:
            with transaction(engine) as session:
                found = handlers.revoke_partner(session, partner_id, now=datetime.now(UTC))
        finally:
            engine.dispose()
        if not found:
            fail(f"no partner with id {partner_id}", as_json=as_json)
        if as_json:
            emit_json({"partner_id": partner_id, "revoked": True})
        else:
            typer.echo(f"revoked the API key of {partner_id}")

    @app.command("submit")
    def submit(
        file: Path = typer.Argument(..., help="A batch file: CSV (template v1) or a .json array of rows."),
        partner_key: str = typer.Option(..., "--partner-key", help="The partner's API key."),
        idempotency_key: str | None = typer.Option(
            None,
            "--idempotency-key",
            help="Resending with the same key returns the first result (default: new key).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Upload a batch to intake and print accepted and rejected rows.

        Exit code 1 when the whole file was refused (or no row was accepted).
        """
        settings = settings_or_exit()
        if not file.is_file():
            fail(f"no such file: {file}", as_json=as_json)
        size = file.stat().st_size
        if size > settings.max_upload_bytes:  # intake would refuse it; say so before sending it all
            limit = settings.max_upload_bytes
            _refused(
                "file_too_large",
                f"the file is larger than the limit of {limit:,} bytes ({limit / 1048576:.0f} MiB); "
                "split it into smaller files",
                None,
                as_json=as_json,
            )
        url = f"{settings.service_url('intake')}/v1/batches"
        headers = {
            "Authorization": f"Bearer {partner_key}",
            "Content-Type": "application/json" if file.suffix.lower() == ".json" else "text/csv",
            "Content-Length": str(size),
            # Sent every time, so a retry after a lost connection cannot create a second batch.
            "Idempotency-Key": idempotency_key or uuid.uuid4().hex,
        }
        response = None
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                response = httpx.post(
                    url,
                    content=_file_chunks(file, size),
                    headers=headers,
                    timeout=httpx.Timeout(600.0, connect=10.0),
                )
                break
            except httpx.TransportError as error:
                if attempt == SEND_ATTEMPTS:
                    unreachable("intake", url, error, as_json=as_json)
                stderr.print(f"intake did not answer ({type(error).__name__}); retrying…")
                time.sleep(attempt)
        assert response is not None
        if response.status_code in (413, 415, 422):
            _refused(*_problem(response), as_json=as_json)
        if response.status_code != 201:
            code, message, _ = _problem(response)
            fail(message, as_json=as_json, code=1, status=response.status_code, error_code=code)
        body = response.json()
        errors = [{"row": e["row"], "column": e["column"], "message": e["message"]} for e in body["errors"]]
        if as_json:
            emit_json(
                {
                    "batch_id": body["batch_id"],
                    "accepted": body["accepted"],
                    "rejected": body["rejected"],
                    "errors": errors,
                    "refused": False,
                    "replayed": response.headers.get("Idempotent-Replayed") == "true",
                }
            )
        else:
            typer.echo(f"batch {body['batch_id']}: {body['accepted']} accepted, {body['rejected']} rejected")
            for rejection in errors:
                where = f"row {rejection['row']}" + (
                    f", {rejection['column']}" if rejection["column"] else ""
                )
                typer.echo(f"  {where}: {rejection['message']}")
        if body["accepted"] == 0:
            raise typer.Exit(1)

    @app.command("status")
    def status(
        batch_id: str = typer.Argument(..., help="The batch_id printed by `relief submit`."),
        partner_key: str = typer.Option(
            ..., "--partner-key", help="The API key of the partner that sent it."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """A batch's progress: accepted and rejected rows, decisions and payments so far."""
        settings = settings_or_exit()
        url = f"{settings.service_url('intake')}/v1/batches/{batch_id}"
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {partner_key}"}, timeout=30.0)
        except httpx.TransportError as error:
            unreachable("intake", url, error, as_json=as_json)
        if response.status_code != 200:
            code, message, _ = _problem(response)
            fail(message, as_json=as_json, status=response.status_code, error_code=code)
        body = response.json()
        counts = {key: body[key] for key in STATUS_KEYS}
        if as_json:
            emit_json({"batch_id": body["batch_id"], **counts, "final": body["final"]})
            return
        typer.echo(f"batch {body['batch_id']}")
        for key in STATUS_KEYS:
            typer.echo(f"  {key:<17} {counts[key]}")
