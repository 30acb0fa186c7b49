"""SQLModel round trips on the embedded default (SQLite) and on real PostgreSQL, outbox included."""

import pytest
from sqlmodel import select

from shared.db import create_tables, make_engine, transaction
from shared.events import PersonsMerged
from shared.outbox import OUTBOX_TABLES, OutboxMessage, add_to_outbox, claim_new_events, outbox_backlog


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path, test_id):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        cluster = request.getfixturevalue("postgres")
        url = f"postgresql+psycopg://relief@127.0.0.1:{cluster.port}/t{test_id}"
    engine = make_engine(url)
    create_tables(engine, OUTBOX_TABLES)
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
        stored = session.exec(select(OutboxMessage)).one()
        assert (stored.topic, stored.key, stored.payload) == ("eligibility.decided", "p1", event.to_bytes())
        assert outbox_backlog(session)[0] == 1


def test_a_failed_transaction_leaves_nothing_behind(engine):
    with pytest.raises(RuntimeError), transaction(engine) as session:
        claim_new_events(session, "reporting", ["e9"])
        raise RuntimeError("crash between two writes")
    with transaction(engine) as session:
        assert claim_new_events(session, "reporting", ["e9"]) == {"e9"}
