"""Kafka plumbing: the FastStream broker factory, batched publishing, topic bootstrap, consumer lag."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaPublishMessage

from shared.events import new_event_id
from shared.settings import Settings
from shared.topics import all_topic_names

_T = TypeVar("_T")


def make_broker(settings: Settings, *, client_id: str = "relief") -> KafkaBroker:
    """A broker that commits offsets only after a message was handled and never loses a publish.

    FastStream's Kafka default acknowledges a message when it arrives, so a crash mid-handler
    would lose it; NACK_ON_ERROR commits after success and seeks back on an error.

    No FastStream Prometheus middleware: it updated labelled metrics for every record published
    (measured: a fifth of the relay's publishing time); services count what they consume and
    publish per batch instead (`shared.metrics.PipelineMetrics`).
    """
    return KafkaBroker(
        settings.bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        compression_type=COMPRESSION if _snappy_available() else None,
        max_batch_size=512 * 1024,
        request_timeout_ms=30_000,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        graceful_timeout=15.0,
        id_generator=new_event_id,  # correlation ids; FastStream's default `uuid4` is a system call
    )


# Snappy, not LZ4: aiokafka compresses LZ4 at level 9 (LZ4HC) with no way to choose, which cost
# 8.7 ms of CPU per 374 KB record batch of registrations (the encoder alone was 4 % of intake's
# samples at 40,000 persons) against 0.98 ms for Snappy; Snappy's batches are 15 % larger (0.61 of the raw size, not 0.53).
COMPRESSION: Final = "snappy"


def _snappy_available() -> bool:
    try:
        import cramjam  # noqa: F401
    except ImportError:
        return False
    return True


# A publish batch stays under the producer's `max_batch_size` (512 KiB): payloads, keys and
# each record's own overhead (offsets, headers) counted generously.
BATCH_BYTES = 384 * 1024
RECORD_OVERHEAD_BYTES = 200


_MASK: Final = 0xFFFFFFFF
_M: Final = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), as aiokafka's
    `partitioner.murmur2` computes it, at half the cost: the 4-byte words are unpacked in one
    call and only the products are masked (a 64-character key: 23 -> 12 µs)."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data) if words else ():
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        tail = length - extra
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


# Below this many keys the per-key loop is cheaper than setting up the arrays.
_VECTOR_FROM = 16


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """`murmur2` of many keys at once: keys of one length are hashed together, a column of
    4-byte words at a time, in unsigned 32-bit arrays whose products wrap as the masks do.
    1,000 keys of 36 bytes: 0.8 ms against 7.6 for the per-key loop; a publishing service
    spent up to 7 % of its CPU hashing keys one at a time."""
    if len(keys) < _VECTOR_FROM:
        return [murmur2(key) for key in keys]
    import numpy as np

    multiplier = np.uint32(_M)
    hashes = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(index)
    for length, indexes in by_length.items():
        data = np.frombuffer(b"".join(keys[i] for i in indexes), dtype=np.uint8).reshape(len(indexes), length)
        h = np.full(len(indexes), 0x9747B28C ^ length, dtype=np.uint32)
        words = length >> 2
        if words:
            columns = np.ascontiguousarray(data[:, : words * 4]).view("<u4")
            for column in range(words):
                k = columns[:, column] * multiplier
                k ^= k >> np.uint32(24)
                k *= multiplier
                h *= multiplier
                h ^= k
        extra, tail = length & 3, words * 4
        if extra == 3:
            h ^= data[:, tail + 2].astype(np.uint32) << np.uint32(16)
        if extra >= 2:
            h ^= data[:, tail + 1].astype(np.uint32) << np.uint32(8)
        if extra:
            h ^= data[:, tail].astype(np.uint32)
            h *= multiplier
        h ^= h >> np.uint32(13)
        h *= multiplier
        h ^= h >> np.uint32(15)
        hashes[indexes] = h
    return [int(value) for value in hashes.tolist()]


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner gives a key among a topic's sorted partitions."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


class BrokerPublisher:
    """Sends many records as one batch per topic and partition, then waits for every
    acknowledgement (one round trip per batch).

    Each record's partition is the one the producer's default partitioner gives its key
    (`partition_of`: murmur2, as Kafka's own clients), so a key lands where a record-by-record publish put it
    and one person's events stay in order. A batch costs FastStream one command instead of one
    per record: measured 34 µs of CPU per record here against 76.
    """

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, from the producer's metadata (fetched once, then cached)."""
        # The aiokafka producer under FastStream's; FastStream publishes no way to ask it.
        producer = self.broker.config.producer._producer.producer  # type: ignore[attr-defined]
        return sorted(await producer.partitions_for(topic))

    async def send_many(self, records: Sequence[tuple[str, str | None, bytes]]) -> None:
        """Publish (topic, key, payload) records in order per partition; wait for every ack."""
        batches: dict[tuple[str, int], list[list[KafkaPublishMessage]]] = {}
        sizes: dict[tuple[str, int], int] = {}
        partitions: dict[str, list[int]] = {}
        for topic in {topic for topic, _, _ in records}:
            partitions[topic] = await self.partitions(topic)
        keys = [key.encode() if key else None for _, key, _ in records]
        hashes = iter(murmur2_many([key for key in keys if key is not None]))
        for (topic, _, payload), key_bytes in zip(records, keys, strict=True):
            among = partitions[topic]
            if key_bytes is None:  # no key, no order to keep: any partition
                where = (topic, random.choice(among))
            else:  # as `partition_of`, with the hashes made for the whole batch at once
                where = (topic, among[(next(hashes) & 0x7FFFFFFF) % len(among)])
            size = len(payload) + len(key_bytes or b"") + RECORD_OVERHEAD_BYTES
            chunks = batches.setdefault(where, [[]])
            if chunks[-1] and sizes[where] + size > BATCH_BYTES:
                chunks.append([])
                sizes[where] = 0
            chunks[-1].append(KafkaPublishMessage(payload, key=key_bytes))
            sizes[where] = sizes.get(where, 0) + size
        futures = []
        for (topic, partition), chunks in batches.items():
            for chunk in chunks:
                futures.append(
                    await self.broker.publish_batch(
                        *chunk,
                        topic=topic,
                        partition=partition,
                        headers={"content-type": "application/json"},
                        no_confirm=True,
                    )
                )
        if futures:
            await asyncio.gather(*futures)


def ensure_topics(
    settings: Settings, topics: Iterable[tuple[str, int]] | None = None, timeout: float = 60.0
) -> list[str]:
    """Create every topic the project uses (with the settings' prefix) when missing."""
    import time

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = [(settings.topic(name), partitions) for name, partitions in (topics or all_topic_names())]
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="relief-admin")
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, partitions, 1) for name, partitions in wanted if name not in existing]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=30_000)
            except TopicAlreadyExistsError:
                pass
        return [name for name, _ in wanted]
    finally:
        admin.close()


def _partitions(consumer: Any, topics: Sequence[str]) -> list[Any]:
    """Every partition of the topics, in order, as the consumer's metadata knows them (none for a
    topic that does not exist)."""
    from kafka import TopicPartition

    return [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in sorted(consumer.partitions_for_topic(topic) or ())
    ]


class LagReader:
    """Reads consumer lag with one admin client and one consumer, kept open between reads.

    A one-off read (`consumer_lag`) connects twice, probes versions and fetches metadata each
    time; a poller that keeps asking (reporting's health refresh, the benchmark's sampler) keeps
    a reader instead.
    After a failed read the clients are dropped, so the next read connects afresh (a restarted
    broker is not read through a dead connection).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: Any = None
        self._consumer: Any = None

    def __enter__(self) -> LagReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """Whether the reader holds clients (connected by a read, dropped by `close`)."""
        return self._admin is not None or self._consumer is not None

    def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client in (consumer, admin):
            if client is not None:
                with contextlib.suppress(Exception):  # closing a client of a broker that is gone
                    client.close()

    def read(self, subscriptions: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], int]:
        """(group, topic) → records not yet committed by that group, over every partition.

        `subscriptions` maps a consumer group to the (prefixed) topics it reads. A partition the
        group has never committed on counts from its start, so a group that has not begun is
        not "drained".
        """
        return self._asking(self._read, subscriptions)

    def held(self, topics: Sequence[str]) -> dict[str, int]:
        """Topic → records it holds now (end offsets minus start offsets, over its partitions);
        0 for a topic that does not exist. Reads with the same kept consumer as `read`."""
        return self._asking(self._held, topics)

    def _asking(self, ask: Callable[[Any], _T], question: Any) -> _T:
        """Ask through the kept clients; a failed ask drops them, so the next one connects afresh."""
        try:
            return ask(question)
        except Exception:
            self.close()
            raise

    def _held(self, topics: Sequence[str]) -> dict[str, int]:
        _, consumer = self._clients()
        sizes: dict[str, int] = {}
        for topic in topics:
            partitions = _partitions(consumer, [topic])
            if not partitions:
                sizes[topic] = 0
                continue
            starts = consumer.beginning_offsets(partitions)
            ends = consumer.end_offsets(partitions)
            sizes[topic] = sum(max(0, ends[p] - starts[p]) for p in partitions)
        return sizes

    def _clients(self) -> tuple[Any, Any]:
        from kafka import KafkaAdminClient, KafkaConsumer

        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.settings.bootstrap_servers, client_id="relief-lag"
            )
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.settings.bootstrap_servers,
                client_id="relief-lag",
                request_timeout_ms=15_000,  # a broker gone mid-read fails the read, not hangs it
            )
        return self._admin, self._consumer

    def _read(self, subscriptions: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], int]:
        admin, consumer = self._clients()
        lag: dict[tuple[str, str], int] = {}
        for group, topics in subscriptions.items():
            committed = admin.list_group_offsets({group: None}).get(group, {})
            partitions = _partitions(consumer, topics)
            starts = consumer.beginning_offsets(partitions) if partitions else {}
            ends = consumer.end_offsets(partitions) if partitions else {}
            for partition in partitions:
                position = committed.get(partition)
                offset = (
                    position.offset
                    if position is not None and position.offset >= 0
                    else starts.get(partition, 0)
                )
                key = (group, partition.topic)
                lag[key] = lag.get(key, 0) + max(0, ends.get(partition, 0) - offset)
        return lag


def consumer_lag(
    settings: Settings, subscriptions: Mapping[str, Sequence[str]]
) -> dict[tuple[str, str], int]:
    """One read of `LagReader.read`, with clients opened for it and closed after."""
    with LagReader(settings) as reader:
        return reader.read(subscriptions)
