"""Helpers for intake's integration tests: partners, template rows, the service's own database."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from services.intake import handlers, store
from services.intake.domain import TEMPLATE_COLUMNS
from shared.db import create_tables, make_engine, transaction
from shared.settings import Settings

HEADER = ",".join(TEMPLATE_COLUMNS)


def add_partner(settings: Settings, name: str = "CSO One", role: str = "partner") -> tuple[str, str]:
    """Create a partner straight in intake's database, as `relief partners add` does."""
    engine = make_engine(settings.database_url_for("intake"))
    try:
        create_tables(engine, store.TABLES)
        with transaction(engine) as session:
            partner, key = handlers.register_partner(session, name=name, role=role, now=datetime.now(UTC))
        return partner.partner_id, key
    finally:
        engine.dispose()


def revoke(settings: Settings, partner_id: str) -> None:
    engine = make_engine(settings.database_url_for("intake"))
    try:
        with transaction(engine) as session:
            handlers.revoke_partner(session, partner_id, now=datetime.now(UTC))
    finally:
        engine.dispose()


def query(settings: Settings, sql: str, **params: object) -> list[tuple]:
    engine = make_engine(settings.database_url_for("intake"))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def row(ref: str, **changes: str) -> dict[str, str]:
    cells = {
        "partner_ref": ref,
        "given_name": "Siti",
        "family_name": "Aminah",
        "sex": "F",
        "date_of_birth": "1990-07-31",
        "nationality": "IDN",
        "country": "MY",
        "id_type": "passport",
        "id_number": f"A{ref}",
        "phone": "+60123456789",
        "household_size": "2",
        "vulnerabilities": "job_loss",
        "consent": "yes",
        "assistance": "cash_relief",
        "payout_method": "e_wallet",
        "payout_account": "EW-1",
        "registered_on": "2026-01-05",
    }
    cells.update(changes)
    return cells


def csv_line(cells: dict[str, str]) -> str:
    def quoted(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value

    return ",".join(quoted(cells[column]) for column in TEMPLATE_COLUMNS)


def csv_file(rows: list[dict[str, str]]) -> bytes:
    return ("\ufeff" + HEADER + "\r\n" + "".join(csv_line(cells) + "\r\n" for cells in rows)).encode()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def events_staged(settings: Settings, intake_url: str, timeout: float = 30.0) -> int:
    """How many events intake staged: the relay publishes each once (no crash here) and then
    deletes it, so once the outbox is empty, that is what its published counter says."""
    import time

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    while query(settings, "SELECT count(*) FROM outbox_batch") != [(0,)]:
        assert time.monotonic() < deadline, "the relay did not publish the staged events"
        time.sleep(0.2)
    page = httpx.get(f"{intake_url}/metrics", timeout=5).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(page)
            for sample in family.samples
            if sample.name == "relief_events_published_total"
        )
    )
