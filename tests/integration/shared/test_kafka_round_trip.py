"""Events travel through the real Apache Kafka broker with FastStream, and survive a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import date

from kafka import KafkaAdminClient, KafkaConsumer

from services.reporting.health import measure_dead_letters
from shared.consumer import BatchConsumer
from shared.events import BeneficiaryRegistered, Event
from shared.kafka import BrokerPublisher, LagReader, consumer_lag, ensure_topics, make_broker
from shared.metrics import make_registry, pipeline_metrics
from shared.topics import BENEFICIARY_REGISTERED


def registered(index: int) -> BeneficiaryRegistered:
    return BeneficiaryRegistered(
        row_id=f"row-{index}",
        batch_id="b1",
        partner_id="p1",
        partner_name="Partner One",
        document_key=None,
        name_key=f"k{index}",
        block_key=f"b{index}",
        near_keys=[f"n{index}"],
        sex="F",
        age_years=30,
        nationality="VNM",
        country="MY",
        household_size=2,
        vulnerabilities=["job_loss"],
        assistance="cash_relief",
        payout_method="cash_pickup",
        payout_account_sealed=None,
        registered_on=date(2026, 1, 5),
    )


async def consume_until(settings, expected: int, seen: list[Event], timeout: float = 60.0) -> None:
    broker = make_broker(settings, client_id="relief-test")
    registry = make_registry()

    def apply(events: Sequence[Event]) -> None:
        seen.extend(events)

    BatchConsumer(
        broker=broker,
        settings=settings,
        topic=BENEFICIARY_REGISTERED,
        service="roundtrip",
        apply=apply,
        metrics=pipeline_metrics(registry),
    )
    await broker.start()
    try:
        async with asyncio.timeout(timeout):
            while len(seen) < expected:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # let the commit after the last batch happen
    finally:
        await broker.stop()


async def publish(settings, events: list[Event], extra: list[bytes] = ()) -> None:
    broker = make_broker(settings, client_id="relief-test-producer")
    await broker.connect()
    try:
        topic = settings.topic(BENEFICIARY_REGISTERED.name)
        records = [(topic, event.name_key, event.to_bytes()) for event in events]
        records += [(topic, "poison", payload) for payload in extra]
        await BrokerPublisher(broker).send_many(records)
    finally:
        await broker.stop()


async def test_events_round_trip_through_a_consumer_group_and_commit(make_settings):
    settings = make_settings()
    sent = [registered(i) for i in range(25)]
    await publish(
        settings, sent, extra=[b"not json", b'{"event_type": "beneficiary.registered", "schema_version": 9}']
    )
    seen: list[Event] = []
    await consume_until(settings, 25, seen)
    assert sorted(e.event_id for e in seen) == sorted(e.event_id for e in sent)
    assert seen[0] == next(e for e in sent if e.event_id == seen[0].event_id)
    lag = consumer_lag(
        settings, {settings.group_id("roundtrip"): [settings.topic(BENEFICIARY_REGISTERED.name)]}
    )
    assert sum(lag.values()) == 0, lag
    # The two poison messages went to the dead-letter topic with their reasons.
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.topic("beneficiary.registered.dlq"),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    reasons = sorted(__import__("json").loads(m.value)["reason"] for m in consumer)
    consumer.close()
    assert reasons[0].startswith("not JSON")
    assert "unsupported schema_version 9" in reasons[1]
    # Reporting's health counts them, with its kept reader as with a one-off one.
    with LagReader(settings) as reader:
        for _ in range(2):
            held = measure_dead_letters(settings, reader)
            assert held["beneficiary.registered.dlq"] == 2 and held["eligibility.decided.dlq"] == 0, held
    assert measure_dead_letters(settings)["beneficiary.registered.dlq"] == 2


async def test_a_broker_restart_loses_no_committed_message(make_settings, kafka):
    """...and a kept lag reader reads through the restart: a read may fail while the broker is
    away, the next one connects afresh."""
    settings = make_settings()
    group = {settings.group_id("roundtrip"): [settings.topic(BENEFICIARY_REGISTERED.name)]}
    sent = [registered(i) for i in range(10)]
    await publish(settings, sent)
    with LagReader(settings) as reader:
        assert sum(reader.read(group).values()) == 10  # never committed: counted from the start
        await asyncio.to_thread(kafka.stop)
        await asyncio.to_thread(kafka.start)
        seen: list[Event] = []
        await consume_until(settings, 10, seen)
        assert {e.event_id for e in seen} == {e.event_id for e in sent}
        lag = None
        for _ in range(5):
            try:
                lag = await asyncio.to_thread(reader.read, group)
                break
            except Exception:  # the connection the restart broke; the reader starts over
                await asyncio.sleep(1)
        assert lag is not None and sum(lag.values()) == 0, lag
        await publish(settings, [registered(10)])
        assert sum(reader.read(group).values()) == 1  # the same clients see what came after


def test_topics_are_created_with_their_partition_counts(make_settings):
    settings = make_settings()
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        described = {
            t.get("topic", t.get("name")): len(t["partitions"])
            for t in admin.describe_topics(
                [settings.topic("beneficiary.registered"), settings.topic("eligibility.decided.dlq")]
            )
        }
    finally:
        admin.close()
    assert described == {
        settings.topic("beneficiary.registered"): 6,
        settings.topic("eligibility.decided.dlq"): 1,
    }


async def test_batched_publishing_keeps_each_key_on_its_partition_and_in_order(make_settings, kafka):
    """Records go out as one batch per partition (several, past the batch size): every record once,
    each key on the partition a record-by-record publish gives it, in the order it was sent."""
    settings = make_settings()
    await asyncio.to_thread(ensure_topics, settings)
    topic = settings.topic(BENEFICIARY_REGISTERED.name)
    keys = [f"person-{index}" for index in range(60)]
    padding = "x" * 1000
    records = [
        (topic, keys[sequence % len(keys)], f'{{"sequence": {sequence}, "pad": "{padding}"}}'.encode())
        for sequence in range(3000)  # ~3 MB: more than one batch per partition
    ]
    broker = make_broker(settings, client_id="relief-test-producer")
    await broker.connect()
    try:
        await BrokerPublisher(broker).send_many(records)
        # Where a record-by-record publish puts each key, for comparison.
        single = {}
        for key in keys:
            metadata = await broker.publish(b"{}", topic, key=key.encode())
            single[key] = metadata.partition
    finally:
        await broker.stop()
    assert len(set(single.values())) > 1, "the keys should spread over several partitions"

    def read() -> list:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=5000,
        )
        try:
            return [message for message in consumer if message.value != b"{}"]
        finally:
            consumer.close()

    messages = await asyncio.to_thread(read)
    sequences = [json.loads(message.value)["sequence"] for message in messages]
    assert sorted(sequences) == list(range(3000))  # each once
    by_key: dict[str, list[int]] = {}
    for message, sequence in zip(messages, sequences, strict=True):
        key = message.key.decode()
        assert message.partition == single[key], key
        by_key.setdefault(key, []).append(sequence)
    assert all(found == sorted(found) for found in by_key.values())
    # What the broker stored is Snappy-compressed (record batch attributes, codec bits: 2).
    codecs = set()
    for segment in kafka.log_dir.glob(f"{topic}-*/*.log"):
        data = segment.read_bytes()
        position = 0
        while position + 61 <= len(data):
            length = int.from_bytes(data[position + 8 : position + 12], "big")
            codecs.add(int.from_bytes(data[position + 21 : position + 23], "big") & 0x7)
            position += 12 + length
    assert codecs == {2}, codecs
