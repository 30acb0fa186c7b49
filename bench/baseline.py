"""What the broker itself allows on this machine, measured on the same broker as the pipeline:

- raw produce and consume rates of one aiokafka client;
- four chained FastStream pass-through consumers with batch subscribers, no logic, no database:
  the practical ceiling of this design. Measured two ways: each hop republishing record by record
  (the ceiling as first defined here), and each hop republishing what it read as the services do
  (`BrokerPublisher.send_many`, one batch per partition), about twice as fast on this machine.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from shared.kafka import COMPRESSION, BrokerPublisher
from shared.service import settle_heap

PAYLOAD = b'{"event_type":"beneficiary.registered","schema_version":1,' + b'"x":"' + b"a" * 420 + b'"}'


async def _no_decoding(message: Any) -> None:
    return None


def _create_topics(bootstrap: str, names: list[str], partitions: int = 6) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        admin.close()


async def raw_rates(bootstrap: str, messages: int = 200_000) -> dict[str, float]:
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    _create_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=512 * 1024, compression_type=COMPRESSION)  # fmt: skip
    await producer.start()
    started = time.perf_counter()
    futures = []
    for index in range(messages):
        futures.append(await producer.send(topic, PAYLOAD, key=str(index % 997).encode()))
    await asyncio.gather(*futures)
    produce_seconds = time.perf_counter() - started
    await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=5000)  # fmt: skip
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    while seen < messages:
        batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
        seen += sum(len(records) for records in batches.values())
    await consumer.commit()
    consume_seconds = time.perf_counter() - started
    await consumer.stop()
    return {
        "messages": messages,
        "produce_per_second": round(messages / produce_seconds),
        "consume_per_second": round(messages / consume_seconds),
    }


async def passthrough_rate(
    bootstrap: str, messages: int = 100_000, hops: int = 4, *, batched: bool = False
) -> dict[str, Any]:
    """Records per second through `hops` chained batch consumers that only republish, under the
    services' own collector settings (`settle_heap`). `batched`: each hop republishes what it read
    through the services' publisher, in one batch per partition, instead of record by record."""
    settle_heap()
    run = uuid.uuid4().hex[:8]
    topics = [f"bench-hop-{run}-{index}" for index in range(hops + 1)]
    _create_topics(bootstrap, topics)
    broker = KafkaBroker(bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024,
                         compression_type=COMPRESSION, logger=None)  # fmt: skip
    publisher = BrokerPublisher(broker)
    arrived = 0
    done = asyncio.Event()

    def make_hop(source: str, target: str | None) -> None:
        @broker.subscriber(source, group_id=f"hop-{source}", batch=True, max_records=1000, batch_timeout_ms=100,
                           auto_offset_reset="earliest", decoder=_no_decoding)  # fmt: skip
        async def hop(body: Any, message: KafkaMessage) -> None:
            nonlocal arrived
            records = message.raw_message
            if target is None:
                arrived += len(records)
                if arrived >= messages:
                    done.set()
                return
            if batched:
                await publisher.send_many([(target, record.key.decode(), record.value) for record in records])
                return
            futures = [
                await broker.publish(record.value, target, key=record.key, no_confirm=True)
                for record in records
            ]
            await asyncio.gather(*futures)

    for index in range(hops):
        make_hop(topics[index], topics[index + 1] if index + 1 < hops else None)
    # The last hop republishes into the final topic and a counter reads it.
    await broker.start()
    await asyncio.sleep(3)  # let the groups join before the clock starts
    started = time.perf_counter()
    futures = [
        await broker.publish(PAYLOAD, topics[0], key=str(i % 997).encode(), no_confirm=True)
        for i in range(messages)
    ]
    await asyncio.gather(*futures)
    await asyncio.wait_for(done.wait(), timeout=600)
    seconds = time.perf_counter() - started
    await broker.stop()
    return {
        "messages": messages,
        "hops": hops,
        "republished": "in batches" if batched else "record by record",
        "seconds": round(seconds, 2),
        "records_per_second": round(messages / seconds),
    }
