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


def test_reached_persons_carry_one_index_led_by_the_person(postgres, test_id, tmp_path):
    """Summaries are read and replaced by person; group sizes and breakdowns are kept counts. So the
    group memberships need one index, led by the person, and the summaries none beyond their key."""
    from sqlalchemy import inspect

    urls = [
        f"postgresql+psycopg://relief@127.0.0.1:{postgres.port}/t{test_id}_reporting_keys",
        f"sqlite:///{tmp_path / 'reporting.sqlite'}",
    ]
    for url in urls:
        engine = make_engine(url)
        try:
            create_tables(engine, store.TABLES)
            schema = inspect(engine)
            assert schema.get_pk_constraint("reach_person_group")["constrained_columns"][0] == "person_id"
            assert schema.get_indexes("reach_person_group") == [], url
            assert schema.get_indexes("reach_person") == [], url
        finally:
            engine.dispose()
