"""SQLModel round trips on the embedded default (SQLite) and on real PostgreSQL, outbox included."""

from datetime import datetime

import pytest
from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel, select

from shared.db import create_tables, make_engine, transaction
from shared.events import PersonsMerged, utc_now
from shared.outbox import (
    OUTBOX_TABLES,
    ProcessedEvent,
    StagedMessage,
    add_to_outbox,
    claim_new_events,
    outbox_backlog,
    staged_messages,
)


class ManyRow(SQLModel, table=True):
    """A table of every kind of column the bulk writers meet: generated id, text, optional text,
    bytes, a Python-side default and an optional time."""

    __tablename__ = "test_many_row"

    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(max_length=200)
    key: str | None = Field(default=None, max_length=200)
    event_id: str = Field(max_length=64)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utc_now)
    sent_at: datetime | None = Field(default=None)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path, test_id):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        cluster = request.getfixturevalue("postgres")
        url = f"postgresql+psycopg://relief@127.0.0.1:{cluster.port}/t{test_id}"
    engine = make_engine(url)
    create_tables(engine, [*OUTBOX_TABLES, ManyRow.__table__])
    yield engine
    engine.dispose()


def test_outbox_rows_and_processed_ids_round_trip(engine):
    event = PersonsMerged(survivor_person_id="p1", merged_person_id="p2", cause="identity_rule")
    with transaction(engine) as session:
        add_to_outbox(session, [("eligibility.decided", "p1", event)])
        assert claim_new_events(session, "reporting", ["e1", "e2", "e1"]) == {"e1", "e2"}
    with transaction(engine) as session:
        assert claim_new_events(session, "reporting", ["e2", "e3"]) == {"e3"}
        assert claim_new_events(session, "disbursement", ["e2"]) == {"e2"}  # per consumer
        assert staged_messages(session) == [StagedMessage("eligibility.decided", "p1", event.to_bytes())]
        assert outbox_backlog(session)[0] == 1


def test_each_transaction_stages_one_batch_and_the_messages_keep_their_order(engine):
    from shared.outbox import OutboxBatch

    events = [
        PersonsMerged(survivor_person_id=f"p{i}", merged_person_id="q", cause="review") for i in range(7)
    ]
    with transaction(engine) as session:
        assert add_to_outbox(session, []) == 0
        assert add_to_outbox(session, [("a", f"k{i}", e) for i, e in enumerate(events[:4])]) == 4
    with transaction(engine) as session:
        add_to_outbox(session, [("b", None if i % 2 else "kb", e) for i, e in enumerate(events[4:])])
    with transaction(engine) as session:
        assert len(session.exec(select(OutboxBatch)).all()) == 2
        staged = staged_messages(session)
        assert [(m.topic, m.key) for m in staged] == [
            ("a", "k0"), ("a", "k1"), ("a", "k2"), ("a", "k3"), ("b", "kb"), ("b", None), ("b", "kb")
        ]  # fmt: skip
        assert [m.payload for m in staged] == [e.to_bytes() for e in events]
        assert outbox_backlog(session)[0] == 7


def test_an_earlier_versions_unsent_rows_are_adopted_in_order_and_its_sent_ones_dropped(engine):
    """Earlier versions staged one `outbox_message` row per event, and before that kept sent rows
    marked: at start-up the unsent ones become staged batches, in order, ahead of anything new."""
    from datetime import UTC

    from sqlalchemy import func, insert

    from shared.outbox import _EARLIER, adopt_earlier_outbox

    assert adopt_earlier_outbox(engine) == 0  # a database that never had the table
    _EARLIER.create(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(_EARLIER),
            [
                {
                    "topic": "t",
                    "key": None if i == 3 else f"k{i}",
                    "payload": b"event %d" % i,
                    "sent_at": datetime.now(UTC) if i in (0, 2) else None,
                }
                for i in range(2500)
            ],
        )
    assert adopt_earlier_outbox(engine, per_batch=1000) == 2498
    assert adopt_earlier_outbox(engine) == 0
    with engine.begin() as connection:  # written later by a replica of the earlier version
        connection.execute(insert(_EARLIER), [{"topic": "t", "key": "late", "payload": b"late"}])
    assert adopt_earlier_outbox(engine) == 1
    event = PersonsMerged(survivor_person_id="p1", merged_person_id="p2", cause="identity_rule")
    with transaction(engine) as session:
        add_to_outbox(session, [("t", "new", event)])
    with transaction(engine) as session:
        staged = staged_messages(session)
        assert session.execute(select(func.count()).select_from(_EARLIER)).scalar_one() == 0
    assert [m.key for m in staged[:3]] == ["k1", None, "k4"]
    assert [m.payload for m in staged[:-2]] == [b"event %d" % i for i in range(2500) if i not in (0, 2)]
    assert staged[-2:] == [StagedMessage("t", "late", b"late"), StagedMessage("t", "new", event.to_bytes())]


async def test_a_relay_that_read_rows_before_another_emptied_the_outbox_deletes_only_those(engine):
    """Two replicas' relays on one database: one reads rows and is slow to publish them, the other
    publishes and deletes the same rows, new rows are staged (on SQLite they take the freed ids
    again); the slow relay's delete must leave the new rows for the next publish."""
    import asyncio

    from shared.outbox import OutboxRelay

    published: list[str | None] = []
    entered, gate = asyncio.Event(), asyncio.Event()

    class Slow:
        async def send_many(self, records):  # type: ignore[no-untyped-def]
            entered.set()
            await gate.wait()
            published.extend(key for _, key, _ in records)

    class Quick:
        async def send_many(self, records):  # type: ignore[no-untyped-def]
            published.extend(key for _, key, _ in records)

    def stage(keys: str) -> None:
        event = PersonsMerged(survivor_person_id="p1", merged_person_id="p2", cause="identity_rule")
        with transaction(engine) as session:
            add_to_outbox(session, [("t", key, event) for key in keys])

    stage("abc")
    slow = asyncio.create_task(OutboxRelay(engine, Slow()).publish_pending())
    await entered.wait()  # the slow relay holds a, b and c
    await OutboxRelay(engine, Quick()).publish_pending()
    stage("def")
    gate.set()
    await slow
    await OutboxRelay(engine, Quick()).publish_pending()
    assert set(published) == set("abcdef")  # at least once each: none lost
    with transaction(engine) as session:
        assert outbox_backlog(session)[0] == 0


def test_a_failed_transaction_leaves_nothing_behind(engine):
    with pytest.raises(RuntimeError), transaction(engine) as session:
        claim_new_events(session, "reporting", ["e9"])
        raise RuntimeError("crash between two writes")
    with transaction(engine) as session:
        assert claim_new_events(session, "reporting", ["e9"]) == {"e9"}


@pytest.mark.parametrize("first_commits", [True, False])
def test_two_replicas_claiming_one_event_apply_it_once(engine, first_commits):
    """The second claim waits for the first transaction: the id is its only if the first rolled back."""
    import threading

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: the second claim cannot start before the first ends")
    first = transaction(engine)
    session = first.__enter__()
    assert claim_new_events(session, "reporting", ["shared", "mine"]) == {"shared", "mine"}
    claimed: list[set[str]] = []

    def second() -> None:
        with transaction(engine) as other:
            claimed.append(claim_new_events(other, "reporting", ["theirs", "shared"]))

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive(), "the second claim should wait for the first transaction"
    if first_commits:
        first.__exit__(None, None, None)
    else:
        first.__exit__(RuntimeError, RuntimeError("crash"), None)
    thread.join(timeout=30)
    assert claimed == [{"theirs"} if first_commits else {"theirs", "shared"}]


def test_many_rows_go_in_in_order_with_defaults_conflicts_and_returning(engine):
    """`insert_many` (column arrays on PostgreSQL) keeps the rows' order in the generated ids,
    fills Python-side defaults, honours ON CONFLICT and RETURNING, and `one_of` finds them."""
    from sqlalchemy import insert
    from sqlalchemy.dialects import postgresql, sqlite

    from shared.db import insert_many, one_of

    rows = [
        {
            "topic": "t",
            "key": None if i % 7 == 0 else f"k{i}",
            "event_id": f"e{i}",
            "payload": bytes([i % 256]) * i,
        }
        for i in range(1500)
    ]
    with transaction(engine) as session:
        assert insert_many(session, insert(ManyRow), []) is None
        insert_many(session, insert(ManyRow), rows)
        stored = session.exec(select(ManyRow).order_by(ManyRow.id)).all()
        assert [(m.key, m.event_id, m.payload) for m in stored] == [
            (r["key"], r["event_id"], r["payload"]) for r in rows
        ]
        assert all(m.created_at is not None and m.sent_at is None for m in stored)
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        processed = dialect.insert(ProcessedEvent).on_conflict_do_nothing().returning(ProcessedEvent.event_id)
        first = insert_many(
            session, processed, [{"consumer": "c", "event_id": f"e{i}"} for i in range(0, 600, 2)]
        )
        assert first is not None and len(first.scalars().all()) == 300
        again = insert_many(
            session, processed, [{"consumer": "c", "event_id": f"e{i}"} for i in range(590, 610)]
        )
        assert again is not None and sorted(again.scalars()) == sorted(
            f"e{i}" for i in range(590, 610) if i % 2 or i >= 600
        )
        wanted = [f"e{i}" for i in range(0, 1500, 3)] + ["absent"]
        found = session.exec(select(ManyRow.event_id).where(one_of(session, ManyRow.event_id, wanted)))
        assert sorted(found) == sorted(wanted[:-1])


def test_many_rows_are_updated_by_key_and_a_repeated_key_keeps_its_last_values(engine):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from shared.db import insert_many, update_many

    table = ManyRow.__table__
    with transaction(engine) as session:
        insert_many(
            session,
            insert(ManyRow),
            [{"topic": "t", "key": f"k{i}", "event_id": f"e{i}", "payload": b"x"} for i in range(1200)],
        )
        update_many(session, table, "event_id", [])
        sent = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        changes = [
            {
                "event_id": f"e{i}",
                "key": None if i % 5 == 0 else f"new{i}",
                "sent_at": sent + timedelta(seconds=i),
            }
            for i in range(0, 1200, 2)
        ]
        changes.append({"event_id": "e4", "key": "last", "sent_at": sent})  # e4 again: the later row holds
        changes.append({"event_id": "absent", "key": "none", "sent_at": sent})  # no such row: nothing
        update_many(session, table, "event_id", changes)
    with transaction(engine) as session:
        stored = {m.event_id: m for m in session.exec(select(ManyRow)).all()}
    assert len(stored) == 1200
    for i in range(1200):
        message = stored[f"e{i}"]
        if i == 4:
            assert (message.key, message.sent_at.replace(tzinfo=UTC)) == ("last", sent)
        elif i % 2 == 0:
            expected = None if i % 5 == 0 else f"new{i}"
            assert (message.key, message.sent_at.replace(tzinfo=UTC)) == (
                expected,
                sent + timedelta(seconds=i),
            )
        else:
            assert (message.key, message.sent_at) == (f"k{i}", None)


def test_the_sqlite_log_is_folded_in_and_truncated(engine):
    from pathlib import Path

    from shared.db import checkpoint_wal

    if engine.dialect.name != "sqlite":
        assert checkpoint_wal(engine) is None
        return
    with transaction(engine) as session:
        claim_new_events(session, "reporting", [f"e{i}" for i in range(3000)])
    log = Path(f"{engine.url.database}-wal")
    assert log.stat().st_size > 0
    assert checkpoint_wal(engine) is not None
    assert log.stat().st_size == 0
    with transaction(engine) as session:
        assert claim_new_events(session, "reporting", ["e1", "new"]) == {"new"}


def test_sqlite_folds_its_log_back_every_few_thousand_pages_not_every_commit(engine):
    """A batch's commit past SQLite's default 1,000 pages no longer copies the log back and syncs."""

    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write-ahead log only")
    for start in range(0, 36_000, 3000):  # twelve commits of ~150 pages each
        with transaction(engine) as session:
            claim_new_events(
                session, "reporting", [f"{n:08d}{'x' * 140}" for n in range(start, start + 3000)]
            )
    raw = engine.raw_connection()
    try:
        _, frames, _ = raw.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        raw.close()
    assert frames > 1_500  # SQLite's default would have started its log again past 1,000


def test_a_new_postgresql_database_compares_text_by_bytes(postgres, test_id):
    from sqlalchemy import text

    engine = make_engine(f"postgresql+psycopg://relief@127.0.0.1:{postgres.port}/c{test_id}")
    try:
        with engine.connect() as connection:
            collation = connection.execute(
                text("SELECT datcollate FROM pg_database WHERE datname = current_database()")
            ).scalar_one()
            words = ["b", "B", "a-c", "ab", "é", "z"]
            ordered = connection.execute(
                text("SELECT w FROM unnest(CAST(:words AS text[])) AS w ORDER BY w"), {"words": words}
            ).scalars()
            assert collation == "C"
            assert list(ordered) == sorted(words, key=lambda word: word.encode())
    finally:
        engine.dispose()


def test_appended_rows_keep_every_value_and_a_duplicate_fails_as_a_statement_would(engine):
    """`append_rows` (binary COPY on PostgreSQL): each column type round-trips, the column types'
    own conversions run (a timestamp in another zone is stored as UTC), Python-side defaults
    fill left-out columns, and a duplicate key is an IntegrityError that leaves the session
    usable after rollback."""
    from datetime import UTC, date, datetime, timedelta, timezone

    from sqlalchemy import BigInteger, Boolean, Column, Date, Integer, LargeBinary, MetaData, String, Table
    from sqlalchemy.exc import IntegrityError
    from sqlmodel import Session

    from services.disbursement.store import UtcDateTime
    from shared.db import append_rows

    metadata = MetaData()
    table = Table(
        "append_probe",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("key", String(64), unique=True, nullable=False),
        Column("at", UtcDateTime, nullable=False),
        Column("born", Date),
        Column("amount", BigInteger),
        Column("payload", LargeBinary),
        Column("flag", Boolean),
        Column("note", String(20), default="filled"),
    )
    metadata.create_all(engine)
    plus_eight = timezone(timedelta(hours=8))
    rows = [
        {
            "key": f"k-{index}-é",
            "at": datetime(2026, 3, 1, 8, 0, index, tzinfo=plus_eight),
            "born": date(1990, 1, 1 + index),
            "amount": 2**40 + index,
            "payload": bytes([index, 0, 255]),
            "flag": index % 2 == 0,
        }
        for index in range(3)
    ]
    rows.append({"key": "k-none", "at": datetime(2026, 3, 1, tzinfo=UTC), "born": None, "amount": None,
                 "payload": None, "flag": None})  # fmt: skip
    with transaction(engine) as session:
        append_rows(session, table, rows)
    with Session(engine) as session:
        stored = session.execute(table.select().order_by(table.c.id)).mappings().all()
    assert [row["key"] for row in stored] == [row["key"] for row in rows]
    assert stored[1]["at"] == datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC)
    assert stored[1]["at"].utcoffset() == timedelta(0)
    for expected, got in zip(rows, stored, strict=True):
        for name in ("born", "amount", "payload", "flag"):
            assert got[name] == expected[name], name
        assert got["note"] == "filled"
    with pytest.raises(IntegrityError), transaction(engine) as session:
        append_rows(session, table, [{**rows[0], "key": "k-new"}, {**rows[1]}])
    with transaction(engine) as session:
        append_rows(session, table, [{**rows[0], "key": "k-after"}])
    with Session(engine) as session:
        keys = session.execute(table.select().with_only_columns(table.c.key)).scalars().all()
    assert "k-new" not in keys and "k-after" in keys
    metadata.drop_all(engine)


def test_the_relay_walks_the_outbox_by_its_key_whatever_the_statistics_say(postgres, test_id):
    """Statistics taken while the outbox was empty (as after a vacuum of a drained outbox) must not
    turn the relay's claim into a sort of the whole table: PostgreSQL plans it on the primary key."""
    from sqlalchemy import text

    from shared.outbox import OutboxRelay

    engine = make_engine(f"postgresql+psycopg://relief@127.0.0.1:{postgres.port}/o{test_id}")
    create_tables(engine, OUTBOX_TABLES)
    with engine.connect() as connection:
        connection.execute(text("ANALYZE outbox_batch"))  # the statistics of an empty table
        connection.commit()
    event = PersonsMerged(survivor_person_id="p1", merged_person_id="p2", cause="identity_rule")
    for _ in range(5000):
        with transaction(engine) as session:
            add_to_outbox(session, [("t", "k", event)])
    *settings, query = OutboxRelay(engine, publisher=None, batches_per_claim=8).claim_statements()
    sql = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        for setting in settings:
            connection.execute(setting)
        plan = "\n".join(connection.execute(text(f"EXPLAIN {sql}")).scalars())
    engine.dispose()
    assert "Index Scan using outbox_batch_pkey" in plan, plan
    assert "Sort" not in plan, plan


def test_the_bulk_writers_store_exactly_what_sqlalchemys_own_statements_store(engine):
    """`append_rows`, `insert_many` and `update_many` bind their rows by column, not through
    SQLAlchemy's per-row executemany: the stored values, read back raw from the driver (text on
    SQLite, so a timestamp's exact form shows), are the same byte for byte, literal values and
    Python-side defaults included."""
    from datetime import date, datetime, timedelta, timezone

    from sqlalchemy import Boolean, Column, Date, Integer, MetaData, String, Table, bindparam, insert, update
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    from services.disbursement.store import UtcDateTime
    from shared.db import append_rows, insert_many, update_many

    metadata = MetaData()

    def probe(name: str) -> Table:
        return Table(
            name,
            metadata,
            Column("key", String(64), primary_key=True),
            Column("at", UtcDateTime, nullable=False),
            Column("born", Date),
            Column("count", Integer),
            Column("flag", Boolean),
            Column("note", String(20), default="filled"),
        )

    theirs, ours = probe("bulk_theirs"), probe("bulk_ours")
    metadata.create_all(engine)
    plus_eight = timezone(timedelta(hours=8))
    rows = [
        {"key": f"k{index}", "at": datetime(2026, 3, 1, 8, 0, index, 1234 * index, tzinfo=plus_eight),
         "born": date(1990, 1, 1 + index) if index else None, "count": index, "flag": index % 2 == 0}
        for index in range(4)
    ]  # fmt: skip
    dialect_insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def upsert(table: Table):  # a conflict updates one column from the row, one to a constant
        statement = dialect_insert(table)
        return statement.on_conflict_do_update(
            index_elements=[table.c.key], set_={"count": statement.excluded.count, "note": "again"}
        )

    again = [{**row, "count": row["count"] + 10} for row in rows[:2]]
    later = [{"key": "k1", "at": datetime(2027, 1, 1, tzinfo=plus_eight), "flag": None}]
    with transaction(engine) as session:
        session.execute(insert(theirs), rows[:3])
        session.execute(upsert(theirs), again + rows[3:])
        session.execute(
            update(theirs)
            .where(theirs.c.key == bindparam("k"))
            .values(at=bindparam("a"), flag=bindparam("f")),
            [{"k": row["key"], "a": row["at"], "f": row["flag"]} for row in later],
        )
    with transaction(engine) as session:
        append_rows(session, ours, rows[:3])
        insert_many(session, upsert(ours), again + rows[3:])
        update_many(session, ours, "key", later)

    def raw(table: Table) -> list[tuple]:
        with engine.connect() as connection:
            return list(connection.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY key"))

    assert raw(ours) == raw(theirs)
    assert len(raw(ours)) == 4
    metadata.drop_all(engine)


def test_key_look_ups_joined_to_a_large_table_use_its_index(postgres, test_id):
    """The services' sessions plan for tables in memory and without parallel workers: looking up a
    few thousand rows by key and joining each to its owner walks the owner's index, never scans
    every owner (at PostgreSQL's own defaults this plan is a parallel scan of the large table)."""
    from sqlalchemy import text

    # A deployment's own connection options in the URL are kept alongside the planner's.
    engine = make_engine(
        f"postgresql+psycopg://relief@127.0.0.1:{postgres.port}/k{test_id}"
        "?options=-c%20application_name%3Drelief-lookups"
    )
    try:
        with engine.begin() as connection:
            connection.execute(
                text("CREATE TABLE owner (owner_id text PRIMARY KEY, survivor_id text NOT NULL)")
            )
            connection.execute(
                text(
                    "CREATE TABLE entry (block text, row_id text, owner_id text NOT NULL, PRIMARY KEY (block, row_id))"
                )
            )
            connection.execute(
                text("INSERT INTO owner SELECT 'o' || i, 's' || i FROM generate_series(1, 250000) AS i")
            )
            connection.execute(
                text(
                    "INSERT INTO entry SELECT md5(i::text), 'r' || i, 'o' || i FROM generate_series(1, 250000) AS i"
                )
            )
            connection.execute(text("ANALYZE owner"))
            connection.execute(text("ANALYZE entry"))
        blocks = [row[0] for row in engine.connect().execute(text("SELECT block FROM entry LIMIT 3000"))]
        look_up = text(
            "EXPLAIN SELECT e.block, o.survivor_id FROM entry e JOIN owner o ON o.owner_id = e.owner_id"
            " WHERE e.block = ANY(:blocks)"
        )
        with engine.connect() as connection:
            settings = {
                name: connection.execute(text(f"SHOW {name}")).scalar_one()
                for name in ("random_page_cost", "max_parallel_workers_per_gather", "application_name")
            }
            plan = "\n".join(connection.execute(look_up, {"blocks": blocks}).scalars())
        assert settings == {
            "random_page_cost": "1.1",
            "max_parallel_workers_per_gather": "0",
            "application_name": "relief-lookups",
        }
        assert "Seq Scan on owner" not in plan and "Gather" not in plan, plan
        assert "Index Scan using owner_pkey" in plan, plan
    finally:
        engine.dispose()


def test_lists_of_text_reach_postgresql_whole(postgres, test_id):
    """Bulk statements send text columns as arrays: the server gets every item, nulls and all."""
    from sqlalchemy import String, bindparam, text
    from sqlalchemy.dialects.postgresql import ARRAY

    engine = make_engine(f"postgresql+psycopg://relief@127.0.0.1:{postgres.port}/t{test_id}")
    items = ["row-1", "", None, "Nguyễn Thị Ánh", 'quote " and , comma {x}', "row-1"]
    try:
        with engine.connect() as connection:
            sent = bindparam("items", items, type_=ARRAY(String))
            back = connection.execute(text("SELECT :items").bindparams(sent)).scalar_one()
            assert back == items
            found = connection.execute(
                text(
                    "SELECT count(*) FROM unnest(CAST(:probe AS text[])) AS v(x) WHERE x = ANY(:items)"
                ).bindparams(
                    bindparam("probe", ["row-1", "absent", "Nguyễn Thị Ánh"], type_=ARRAY(String)), sent
                )
            ).scalar_one()
            assert found == 2
    finally:
        engine.dispose()


def test_lists_of_text_are_encoded_as_the_database_expects(postgres, test_id):
    """A database in another encoding than UTF-8 gets its own bytes, as psycopg would send them."""
    from sqlalchemy import String, bindparam, create_engine, text
    from sqlalchemy.dialects.postgresql import ARRAY

    base = f"postgresql+psycopg://relief@127.0.0.1:{postgres.port}"
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            text(
                f"CREATE DATABASE t{test_id}_latin1 TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        )
    admin.dispose()
    engine = make_engine(f"{base}/t{test_id}_latin1")
    items = ["Ánh", "São Tomé", None, "Müller"]
    try:
        with engine.connect() as connection:
            sent = bindparam("items", items, type_=ARRAY(String))
            assert connection.execute(text("SELECT :items").bindparams(sent)).scalar_one() == items
            lengths = connection.execute(
                text(
                    "SELECT array_agg(octet_length(x) ORDER BY n) FROM unnest(:items) WITH ORDINALITY AS v(x, n)"
                ).bindparams(sent)
            ).scalar_one()
            assert lengths == [3, 8, None, 6]  # one byte a letter in LATIN1, not UTF-8's two
    finally:
        engine.dispose()
