"""Database engines and sessions from settings: SQLite (WAL) by default, PostgreSQL via psycopg 3."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Column,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine, Result, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import Session, SQLModel

# Table option for small rows under a string primary key that are written far more than read in
# order: on SQLite the table is stored as its primary-key index (WITHOUT ROWID), one B-tree per
# insert instead of two. Other databases ignore it.
WITHOUT_ROWID: dict[str, Any] = {"sqlite_with_rowid": False}


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def ensure_postgres_database(url: str) -> None:
    """Create the service's PostgreSQL database when it does not exist yet.

    Its collation is "C": every text key here (row ids, payment references, keyed hashes, event
    ids) is compared byte by byte, as SQLite compares it, not through the operating system's locale.
    PostgreSQL sorts text under "C" with abbreviated keys, which it turns off for a libc locale:
    81,525 identity keys sorted in 75 ms instead of 120 ms; single-key index inserts and lookups
    measured the same within noise.
    """
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
            ).scalar()
            if not exists:
                try:
                    connection.execute(
                        text(f"CREATE DATABASE \"{parsed.database}\" TEMPLATE template0 LC_COLLATE 'C'")
                    )
                except (IntegrityError, DBAPIError) as error:
                    if "already exists" not in str(error):  # another replica created it first
                        raise
    finally:
        admin.dispose()


SQLITE_AUTOCHECKPOINT_PAGES = 10_000


# Planner settings for the services' sessions. Their look-ups fetch a few thousand rows by key
# from tables already in memory: at PostgreSQL's default cost of a random page (4, for disks that
# seek) the planner joined them by scanning every person in parallel workers, which on a busy
# machine only adds processes. 220,472 persons: eligibility's near-key look-up 90 -> 38 ms a batch,
# its reviewed pairs 59 -> 20 ms (and one process instead of three). They apply to the services'
# own sessions only, never to the server or its other users.
POSTGRES_PLANNER_OPTIONS = "-c random_page_cost=1.1 -c max_parallel_workers_per_gather=0"


def _with_planner_options(given: str | tuple[str, ...] | None) -> str:
    """The URL's own `options` (a deployment's search_path, say) kept, the planner's after them."""
    if not given:
        return POSTGRES_PLANNER_OPTIONS
    own = given if isinstance(given, str) else " ".join(given)
    return f"{own} {POSTGRES_PLANNER_OPTIONS}"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path:
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            # Let SQLAlchemy, not the driver, open transactions, so writers take the lock up front.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint every ~40 MB of log instead of SQLite's 4 MB: a batch wrote past 4 MB,
            # so every commit copied the log back and synced (measured: eligibility alone 1,449 →
            # 1,663 rows/s). The service's periodic TRUNCATE checkpoint still bounds the file.
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Identity and processed-event lookups land on random index pages: keep more in memory.
            cursor.execute("PRAGMA cache_size=-16384")  # KiB, per connection
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(connection: Any) -> None:
            # Writers queue at BEGIN instead of failing on a lock upgrade halfway through.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        ensure_postgres_database(url)
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={"options": _with_planner_options(make_url(url).query.get("options"))},
        )

        @event.listens_for(engine, "connect")
        def _binary_arrays(dbapi_connection: Any, _: Any) -> None:
            # Lists (the column arrays of `insert_many`) go in binary: psycopg's default text form
            # escapes every element in Python, the largest cost of a bulk insert of event payloads.
            # Lists of text skip psycopg's per-item dumping (`shared.pg_arrays`).
            from shared.pg_arrays import ListDumper

            dbapi_connection.adapters.register_dumper(list, ListDumper)

        return engine
    raise ValueError(f"RELIEF_DATABASE_URL: unsupported database URL scheme in {url.split(':', 1)[0]!r}")


def make_reader(engine: Engine) -> Engine:
    """An engine for reads (reports, progress, key checks): a consistent snapshot, no write lock.

    `make_engine` starts every SQLite transaction with BEGIN IMMEDIATE (right for writers),
    which would make each read queue behind, and hold up, the consumers. A reader on SQLite
    opens a deferred transaction instead (a WAL snapshot); on PostgreSQL it reads at REPEATABLE
    READ, so the figures in one report are from one moment.
    """
    if engine.dialect.name != "sqlite":
        return engine.execution_options(isolation_level="REPEATABLE READ")
    if engine.url.database in (None, "", ":memory:"):
        return engine  # an in-memory database is only visible through its own engine
    reader = create_engine(engine.url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(reader, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(reader, "begin")
    def _begin_deferred(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return reader


def create_tables(engine: Engine, tables: Sequence[Table]) -> None:
    """Create the service's own tables (and only those) when missing.

    Replicas start together: on PostgreSQL an advisory lock makes them create the schema one
    after the other (concurrent CREATE TABLE of one name fails on the catalogue's unique index).
    """
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('relief-schema'))"))
        SQLModel.metadata.create_all(connection, tables=list(tables))


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        with session.begin():
            yield session


def serialise_writers(session: Session, name: str) -> None:
    """Serialise a critical section across processes for the rest of this transaction.

    SQLite already serialises writers (BEGIN IMMEDIATE); PostgreSQL takes an advisory lock that
    the commit or rollback releases.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying as they are: the database was away, busy or a race lost."""
    if isinstance(error, (OperationalError, IntegrityError)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return False


def wait_for_database(engine: Engine, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def insert_many(session: Session, statement: Any, rows: Sequence[Mapping[str, Any]]) -> Result[Any] | None:
    """Run an INSERT (with its ON CONFLICT and RETURNING clauses, if any) for many rows at once.

    On PostgreSQL the rows travel as one array per column, unnested by the server in their
    order: one statement whose text never changes, parsed once by the driver and planned
    cheaply, instead of a multi-row VALUES list rebuilt for every batch or one statement per
    row. Columns a row leaves out get their Python-side defaults, as with executemany.
    Elsewhere: the driver's executemany. Every row must have the same keys, and an ON CONFLICT
    DO UPDATE must not meet one key twice in a call (PostgreSQL refuses it in one statement).
    """
    if not rows:
        return None
    if session.get_bind().dialect.name != "postgresql":
        if statement._returning:  # rows to hand back: SQLAlchemy's own executemany
            return session.execute(statement, list(rows))
        _executemany(session, statement, rows, statement.table)
        return None
    table: Table = statement.table
    names = list(rows[0])
    arrays: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in names}
    for column, produce in _python_defaults(table, names):
        arrays[column.name] = [produce() for _ in rows]
    columns = [table.c[name] for name in arrays]
    source = (
        func.unnest(
            *[
                bindparam(f"many_{index}", arrays[column.name], type_=ARRAY(column.type))
                for index, column in enumerate(columns)
            ]
        )
        .table_valued(*[column.name for column in columns], with_ordinality="many_ordinal")
        .render_derived(name="many")
    )
    rows_in_order = select(*[source.c[column.name] for column in columns]).order_by(source.c.many_ordinal)
    return session.execute(
        statement.from_select([column.name for column in columns], rows_in_order, include_defaults=False)
    )


def append_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many rows that are new by construction (no ON CONFLICT, nothing returned).

    On PostgreSQL the rows go in by binary COPY: each value is encoded by the driver's compiled
    code and parsed by the server without a statement to plan. Measured on 1,000 outbox rows,
    against `insert_many`'s unnested arrays: 8.9 -> 4.3 ms of client CPU, 19 -> 11 ms in all.
    Values pass through the column types' own conversions first, as in a statement; a
    database error is raised as SQLAlchemy raises it (IntegrityError for a duplicate key, so
    callers retry or give up as before). Elsewhere: the driver's executemany.
    """
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        _executemany(session, insert(table), rows, table)
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    columns: list[list[Any]] = [[row[name] for row in rows] for name in names]
    for column, produce in _python_defaults(table, names):
        names.append(column.name)
        columns.append([produce() for _ in rows])
    for index, name in enumerate(names):
        convert = table.c[name].type.bind_processor(dialect)
        if convert is not None:
            columns[index] = [convert(value) for value in columns[index]]
    types = [_copy_type(table.c[name], dialect) for name in names]
    quote = dialect.identifier_preparer
    listed = ", ".join(quote.quote(name) for name in names)
    sql = f"COPY {quote.format_table(table)} ({listed}) FROM STDIN (FORMAT BINARY)"
    driver = connection.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            copy.set_types(types)
            for row in zip(*columns, strict=True):
                copy.write_row(row)
    except driver.Error as error:
        lost = dialect.is_disconnect(error, driver, None)
        if lost:
            connection.invalidate(error)
        raise DBAPIError.instance(sql, None, error, driver.Error, connection_invalidated=lost) from error


def _copy_type(column: Column[Any], dialect: Any) -> str:
    """The PostgreSQL type a binary COPY sends for `column`: `VARCHAR(64)` -> `varchar`."""
    return str(column.type.compile(dialect=dialect)).split("(", 1)[0].strip().lower()


def update_many(session: Session, table: Table, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Set each row's columns by its `key` column, for many rows at once.

    Every row has `key` and the same other keys (the columns to set). When one key comes twice,
    the later row holds, as statement-per-row would leave it. On PostgreSQL one statement:
    `UPDATE … FROM unnest(arrays) WHERE key = …`, whose text never changes; elsewhere the
    driver's executemany.
    """
    if not rows:
        return
    latest = list({row[key]: row for row in rows}.values())
    columns = [name for name in latest[0] if name != key]
    if session.get_bind().dialect.name != "postgresql":
        statement = (
            update(table)
            .where(table.c[key] == bindparam("where_key"))
            .values({name: bindparam(f"set_{name}") for name in columns})
        )
        _executemany(
            session,
            statement,
            [{"where_key": row[key], **{f"set_{name}": row[name] for name in columns}} for row in latest],
        )
        return
    names = [key, *columns]
    source = (
        func.unnest(
            *[
                bindparam(f"many_{index}", [row[name] for row in latest], type_=ARRAY(table.c[name].type))
                for index, name in enumerate(names)
            ]
        )
        .table_valued(*names)
        .render_derived(name="many")
    )
    session.execute(
        update(table).where(table.c[key] == source.c[key]).values({name: source.c[name] for name in columns})
    )


def _executemany(
    session: Session, statement: Any, rows: Sequence[Mapping[str, Any]], table: Table | None = None
) -> None:
    """The driver's executemany for a statement without RETURNING, its parameters bound by column.

    SQLAlchemy's own executemany builds a dictionary for every row and converts its values one by
    one; here the statement is compiled once for the rows' keys (and the Python-side defaults of
    `table`'s columns they leave out), each column's values go through its type's conversion as
    one list, and the driver gets plain tuples. Measured on SQLite, 100 transactions of 1,000
    ledger entries (7 columns): 12.3 -> 8.4 ms of CPU per 1,000 rows outside the driver (the
    rows' own building included), the driver's share unchanged. Events and error translation
    stay SQLAlchemy's (`exec_driver_sql`); a statement with RETURNING does not come here.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    columns: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in names}
    if table is not None:
        for column, produce in _python_defaults(table, names):
            columns[column.name] = [produce() for _ in rows]
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    prefetched = [*compiled.insert_prefetch, *compiled.update_prefetch]
    if compiled.positiontup is None or any(column.key not in columns for column in prefetched):
        session.execute(statement, list(rows))  # named parameters, or an onupdate: SQLAlchemy's way
        return
    ordered: list[Sequence[Any]] = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        values = columns[name] if name in columns else [bind.effective_value] * len(rows)
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)  # SQLite's DATETIME: text
        ordered.append([convert(value) for value in values] if convert is not None else values)
    connection.exec_driver_sql(compiled.string, list(zip(*ordered, strict=True)))


def _python_defaults(table: Table, given: Sequence[str]) -> list[tuple[Column[Any], Callable[[], Any]]]:
    """The columns left out of `given` that have a Python-side default, with a way to produce it."""
    found: list[tuple[Column[Any], Callable[[], Any]]] = []
    for column in table.columns:
        default = column.default
        if column.name in given or default is None:
            continue
        if getattr(default, "is_scalar", False):
            found.append((column, lambda value=default.arg: value))  # type: ignore[attr-defined, misc]
        elif getattr(default, "is_callable", False):
            found.append((column, lambda produce=default.arg: produce(None)))  # type: ignore[attr-defined, misc]
    return found


def one_of(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """`column IN values`; on PostgreSQL `column = ANY(array)`: one parameter and a statement
    text that stays the same whatever the count, so neither the driver nor the server parses a
    new statement for every batch."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(list(values))
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def checkpoint_wal(engine: Engine, *, wait_ms: int = 2000) -> tuple[int, int, int] | None:
    """Copy SQLite's write-ahead log into the database and truncate it (a no-op elsewhere).

    SQLite's own checkpoints after each commit never wait for readers, so a busy service whose
    writers and readers keep overlapping never gets to start its log again: the log of a
    220,000-person programme grew to 22 GB. This one waits up to `wait_ms` for readers (holding
    up writers for that long at most), then starts the log afresh. Returns SQLite's answer
    (busy, log frames, frames copied); busy is 1 when a reader outlasted the wait.
    """
    if not is_sqlite(engine) or engine.url.database in (None, "", ":memory:"):
        return None
    raw = engine.raw_connection()
    try:
        dbapi_connection: Any = raw.dbapi_connection
        dbapi_connection.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
        try:
            busy, frames, copied = dbapi_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            dbapi_connection.execute("PRAGMA busy_timeout=60000")
        return int(busy), int(frames), int(copied)
    finally:
        raw.close()
