"""The benchmark's statement statistics, on a real PostgreSQL cluster started with them."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import create_engine, text

from bench.run import reset_statement_statistics, top_statements
from shared.pg_local import LocalPostgres
from tests.conftest import TEST_ROOT, free_port


@pytest.fixture(scope="module")
def cluster():
    port = free_port()
    cluster = LocalPostgres(
        TEST_ROOT / f"pg-statements-{port}",
        port,
        server_settings={"shared_preload_libraries": "pg_stat_statements", "work_mem": "7MB"},
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def admin_url(cluster: LocalPostgres) -> str:
    return f"postgresql+psycopg://relief@127.0.0.1:{cluster.port}/postgres"


def run_in(cluster: LocalPostgres, database: str, *statements: str) -> None:
    admin = create_engine(admin_url(cluster), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    engine = create_engine(f"postgresql+psycopg://relief@127.0.0.1:{cluster.port}/{database}")
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    engine.dispose()


def test_the_server_starts_with_the_settings_it_was_given(cluster):
    engine = create_engine(admin_url(cluster))
    with engine.connect() as connection:
        assert connection.execute(text("SHOW work_mem")).scalar() == "7MB"
        assert connection.execute(text("SHOW shared_preload_libraries")).scalar() == "pg_stat_statements"
    engine.dispose()


def test_top_statements_name_the_costliest_statements_of_the_run_without_their_values(cluster):
    run_in(cluster, "bench7_before", "CREATE TABLE early (name text)", "INSERT INTO early VALUES ('before')")
    reset_statement_statistics(admin_url(cluster))
    run_in(
        cluster,
        "bench8_intake",
        "CREATE TABLE person (name text)",
        "INSERT INTO person SELECT 'Nguyen Van A' || g FROM generate_series(1, 20000) g",
        "SELECT count(*) FROM person WHERE name = 'Nguyen Van A17'",
    )
    run_in(cluster, "bench80_other", "CREATE TABLE elsewhere (n int)", "INSERT INTO elsewhere VALUES (1)")

    found = top_statements(admin_url(cluster), "bench8", 10)

    statements = found["statements"]
    queries = [s["query"] for s in statements]
    # only the named run's databases, only since the reset
    assert all(s["database"] == "intake" for s in statements)
    assert not any("early" in q or "elsewhere" in q for q in queries)
    insert = next(s for s in statements if s["query"].startswith("INSERT INTO person"))
    assert insert["rows"] == 20000 and insert["calls"] == 1
    assert insert["wal_mib"] > 0
    assert statements == sorted(statements, key=lambda s: s["seconds"], reverse=True)
    assert 0 < insert["share"] <= 1
    assert found["all_statements_seconds"] >= insert["seconds"]
    # the values the statements carried are not in the summary
    assert not any("Nguyen" in q for q in queries)
    assert any("SELECT count(*) FROM person WHERE name = $1" in q for q in queries)
