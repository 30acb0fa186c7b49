"""`/healthz`'s database check answers while a writer holds SQLite's write lock (a long batch)."""

import asyncio
import sqlite3
import time

from shared.db import create_tables
from shared.outbox import OUTBOX_TABLES
from shared.service import ServiceRuntime
from shared.settings import Settings


def test_the_database_check_does_not_queue_behind_a_writer(tmp_path):
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers="127.0.0.1:9", identity_secret="x" * 32)
    runtime = ServiceRuntime("reporting", settings, [])
    create_tables(runtime.engine, OUTBOX_TABLES)
    writer = sqlite3.connect(str(runtime.engine.url.database), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO processed_event (consumer, event_id) VALUES ('c', 'e')")
    try:
        started = time.monotonic()
        health = asyncio.run(asyncio.wait_for(runtime.health(), timeout=20))
        assert health["checks"]["database"] == "ok"
        assert time.monotonic() - started < 10
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        runtime.engine.dispose()
