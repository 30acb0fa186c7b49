"""Accepted rows reach Kafka even when the broker is down at upload time (real PostgreSQL)."""

from __future__ import annotations

import json
import time

import httpx
from kafka import KafkaConsumer

from tests.integration.intake.intake_support import add_partner, bearer, csv_file, query, row

ROWS = 300


def read_topic(settings, topic: str, expected: int, timeout: float = 90.0) -> list:
    """Every record of the topic, reading on a little after `expected` arrived to catch duplicates."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=500,
    )
    records: list = []
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if len(records) >= expected and settle_until is None:
                settle_until = time.monotonic() + 3.0
            if settle_until is not None and time.monotonic() > settle_until:
                break
    finally:
        consumer.close()
    return records


def test_a_batch_accepted_while_kafka_is_down_is_published_once_when_it_returns(
    make_settings, postgres, start_service, kafka
):
    settings = make_settings(database="postgres", postgres_cluster=postgres)
    _, key = add_partner(settings, "CSO Thailand")
    intake = start_service("intake", settings)
    rows = [row(f"TH-{i:04d}", given_name=f"Somchai {chr(0x41 + i % 26)}", country="TH") for i in range(ROWS)]

    kafka.stop()
    try:
        response = httpx.post(
            f"{intake.url}/v1/batches", content=csv_file(rows), headers=bearer(key), timeout=60
        )
        assert response.status_code == 201, response.text
        batch_id = response.json()["batch_id"]
        assert response.json()["accepted"] == ROWS
        time.sleep(2)
        assert query(settings, "SELECT coalesce(sum(messages), 0) FROM outbox_batch") == [(ROWS,)]
    finally:
        kafka.start()

    records = read_topic(settings, settings.topic("beneficiary.registered"), ROWS)
    events = [json.loads(record.value) for record in records]
    row_ids = [event["row_id"] for event in events]
    assert len(records) == ROWS  # every row once: none lost, none twice
    assert set(row_ids) == {f"{batch_id}-{number}" for number in range(1, ROWS + 1)}
    assert all(
        record.key.decode() == event["document_key"] for record, event in zip(records, events, strict=True)
    )
    assert not any(b"Somchai" in record.value or b"EW-1" in record.value for record in records)
    deadline = time.monotonic() + 15
    while query(settings, "SELECT count(*) FROM outbox_batch") != [(0,)]:
        assert time.monotonic() < deadline, "the relay did not delete the published rows"
        time.sleep(0.5)
    topic = settings.topic("beneficiary.registered")
    published = f'relief_events_published_total{{topic="{topic}"}} {float(ROWS)}'
    assert published in httpx.get(f"{intake.url}/metrics").text  # counted once, after the broker's ack
    # Room for the two updates each row gets (decision, payment) beside it in its page.
    assert query(settings, "SELECT reloptions FROM pg_class WHERE relname = 'intake_beneficiary'") == [
        (["fillfactor=70"],)
    ]
