"""The reach SQL on PostgreSQL equals the pure reference on random programmes applied in random
orders and batches (collation, upserts and window functions behave as on SQLite)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.reporting import store
from shared.db import create_tables, make_engine
from shared.outbox import OUTBOX_TABLES
from tests.unit.reporting.reporting_builders import apply, programmes, query, reference


def test_the_sql_reach_on_postgresql_equals_the_reference(postgres, test_id):
    engine = make_engine(f"postgresql+psycopg://relief@127.0.0.1:{postgres.port}/t{test_id}_reporting")
    create_tables(engine, [*store.TABLES, *OUTBOX_TABLES])
    tables = ", ".join(table.name for table in [*store.TABLES, *OUTBOX_TABLES])

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(events=programmes(), seed=st.integers(0, 2**32 - 1))
    def check(events, seed):
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables}"))
        rng = random.Random(seed)
        shuffled = events[:]
        rng.shuffle(shuffled)
        position = 0
        while position < len(shuffled):
            size = rng.randint(1, 6)
            apply(engine, shuffled[position : position + size])
            position += size
        assert query(engine) == reference(events)

    try:
        check()
    finally:
        engine.dispose()
