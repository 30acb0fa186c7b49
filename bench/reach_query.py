"""How long the reach query takes on a programme-sized reporting database.

Fills reporting's tables directly with a generated programme (default 220,000 accepted rows:
about half cash, a few per cent duplicates and merges, some reversed and failed payments),
builds the per-person summaries as the consumers do, then times `store.query_reach` several
times and prints the median.

    .venv/bin/python -m bench.reach_query                      # SQLite file in a temp directory
    .venv/bin/python -m bench.reach_query --database-url postgresql+psycopg://relief@127.0.0.1:55433/bench
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import Session

from services.reporting import store
from services.reporting.domain import STATUS_RANK
from shared.db import create_tables, make_engine, make_reader
from shared.outbox import OUTBOX_TABLES

COUNTRIES = ("MY", "HK", "TH", "PH", "VN", "BD", "KH", "IN", "ID", "JP", "LA", "MM", "NP", "KR", "LK")
CURRENCY = {"MY": "MYR", "HK": "HKD", "TH": "THB", "PH": "PHP", "VN": "VND", "BD": "BDT", "KH": "KHR", "IN": "INR",
            "ID": "IDR", "JP": "JPY", "LA": "LAK", "MM": "MMK", "NP": "NPR", "KR": "KRW", "LK": "LKR"}  # fmt: skip
ASSISTANCE = ("cash_relief",) * 3 + ("food_kit", "hygiene_kit", "remediation", "safe_migration_info")


def generate(
    rows: int, seed: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    persons = int(rows * 0.93)
    decisions: list[dict[str, Any]] = []
    payments: list[dict[str, Any]] = []
    for number in range(rows):
        person = f"person-{rng.randrange(persons):07d}"
        country = rng.choice(COUNTRIES)
        assistance = rng.choice(ASSISTANCE)
        decision = rng.choices(("eligible", "ineligible", "duplicate"), (90, 6, 4))[0]
        row_id = f"row-{number:07d}"
        decisions.append(
            {"row_id": row_id, "person_id": person, "batch_id": f"batch-{number // 500}",
             "partner_id": f"partner-{number % 40}", "partner_name": f"Partner {number % 40:02d}",
             "decision": decision, "assistance": assistance, "country": country, "sex": rng.choice("FFMMX"),
             "age_years": rng.randint(15, 75), "household_size": rng.randint(1, 8),
             "registered_on": date(2026, 1, 1) + timedelta(days=rng.randrange(120)),
             "amount_minor": 40000, "currency": CURRENCY[country], "version": f"2026-01-01T00:00:00.000000|{number}"}
        )  # fmt: skip
        if assistance == "cash_relief" and decision == "eligible":
            status = rng.choices(("paid", "reversed", "failed", "sent"), (94, 2, 2, 2))[0]
            payments.append(
                {"payment_ref": f"pay-{number:07d}", "row_id": row_id, "person_id": person, "country": country,
                 "amount_minor": 40000, "currency": CURRENCY[country], "status": status,
                 "status_rank": STATUS_RANK[status], "sequence": 3}
            )  # fmt: skip
    roots = [
        {
            "person_id": f"person-{rng.randrange(persons):07d}",
            "root_id": f"person-{rng.randrange(persons):07d}",
        }
        for _ in range(rows // 50)
    ]
    unique_roots = list({root["person_id"]: root for root in roots}.values())
    return decisions, payments, unique_roots


def fill(url: str, rows: int) -> Any:
    engine = make_engine(url)
    create_tables(engine, [*store.TABLES, *OUTBOX_TABLES])
    decisions, payments, roots = generate(rows)
    with engine.begin() as connection:
        for table in store.TABLES:
            connection.execute(table.delete())
        for table, values in (
            (store.ReachRow.__table__, decisions),  # type: ignore[attr-defined]
            (store.ReachPayment.__table__, payments),  # type: ignore[attr-defined]
            (store.PersonRoot.__table__, roots),  # type: ignore[attr-defined]
        ):
            for start in range(0, len(values), 10_000):
                connection.execute(insert(table), values[start : start + 10_000])
    # The per-person summaries, built the way the consumers build them, a batch of persons at a time.
    persons = sorted({row["person_id"] for row in decisions} | {root["root_id"] for root in roots})
    started = time.perf_counter()
    with Session(engine) as session, session.begin():
        for start in range(0, len(persons), 5_000):
            store.refresh_persons(session, persons[start : start + 5_000])
    print(f"summarised {len(persons):,} persons in {time.perf_counter() - started:.1f}s")
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=220_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp directory")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = arguments.database_url or f"sqlite:///{Path(directory) / 'reporting.db'}"
        started = time.perf_counter()
        engine = fill(url, arguments.rows)
        print(
            f"filled {arguments.rows:,} rows on {engine.dialect.name} in {time.perf_counter() - started:.1f}s"
        )
        reader = make_reader(engine)
        timings = []
        reach = None
        for _ in range(arguments.repeat):
            started = time.perf_counter()
            with store.read_session(reader) as session:
                reach = store.query_reach(session)
            timings.append(time.perf_counter() - started)
        assert reach is not None
        print(
            f"reach query: median {statistics.median(timings) * 1000:.0f} ms, "
            f"best {min(timings) * 1000:.0f} ms over {arguments.repeat} runs; "
            f"beneficiaries_reached={reach.beneficiaries_reached:,} people_reached={reach.people_reached:,}"
        )
        if reader is not engine:
            reader.dispose()
        engine.dispose()


if __name__ == "__main__":
    main()
