"""The one way a service consumes a topic: batches, dead letters, retries, commit after apply.

A batch is parsed; anything `parse_event` refuses goes to the topic's dead-letter topic with the
reason. The rest is applied by the service's `apply` function in a worker thread (one database
transaction per batch). Database outages are retried with backoff until they pass, so nothing is
lost and nothing is skipped; any other error is narrowed down to the event that causes it, which
is dead-lettered so the partition keeps flowing. Offsets are committed only after all of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from tenacity import AsyncRetrying, retry_if_exception, stop_never, wait_random_exponential

from shared.db import is_transient
from shared.events import DeadLettered, Event, PoisonMessage, parse_event
from shared.kafka import BrokerPublisher
from shared.logging import get_logger
from shared.metrics import PipelineMetrics
from shared.settings import Settings
from shared.topics import Topic

log = get_logger(__name__)

MAX_DEAD_LETTER_PAYLOAD = 16 * 1024


@dataclass(frozen=True)
class Delivered:
    """A parsed event with where it came from."""

    event: Event
    partition: int
    offset: int


ApplyBatch = Callable[[Sequence[Event]], Any]


def _dead_letter(
    settings: Settings, topic: Topic, service: str, record: Any, reason: str
) -> tuple[str, str | None, bytes]:
    value = record.value or b""
    key = record.key.decode("utf-8", "replace") if record.key else None
    event = DeadLettered(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        consumer_group=settings.group_id(service),
        reason=reason[:1000],
        key=key,
        payload=value[:MAX_DEAD_LETTER_PAYLOAD].decode("utf-8", "replace"),
    )
    return settings.topic(topic.dead_letter), key, event.to_bytes()


class BatchConsumer:
    def __init__(
        self,
        *,
        broker: KafkaBroker,
        settings: Settings,
        topic: Topic,
        service: str,
        apply: ApplyBatch,
        metrics: PipelineMetrics,
        after_apply: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.service = service
        self.apply = apply
        self.metrics = metrics
        self.after_apply = after_apply
        self.publisher = BrokerPublisher(broker)
        self.topic_name = settings.topic(topic.name)
        broker.subscriber(
            self.topic_name,
            group_id=settings.group_id(service),
            batch=True,
            max_records=settings.consumer_batch_size,
            batch_timeout_ms=100,
            auto_offset_reset="earliest",
            max_poll_interval_ms=10 * 60 * 1000,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=min(3_000, settings.kafka_session_timeout_ms // 3),
            title=f"{service}:{topic.name}",
            decoder=_skip_decoding,
        )(self.handle)

    async def handle(self, body: Any, message: KafkaMessage) -> None:
        records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
        started = time.perf_counter()
        events: list[Event] = []
        dead: list[tuple[str, str | None, bytes]] = []
        for record in records:
            try:
                events.append(parse_event(record.value or b"", allowed=self.topic.events))
            except PoisonMessage as error:
                dead.append(_dead_letter(self.settings, self.topic, self.service, record, str(error)))
        if events:
            await self._apply_with_isolation(events, records, dead)
        if dead:
            await self.publisher.send_many(dead)
            self.metrics.dead_letters.labels(self.topic.name).inc(len(dead))
            log.warning("dead_lettered", topic=self.topic.name, count=len(dead))
        self.metrics.events_consumed.labels(self.topic.name, "applied").inc(len(events))
        self.metrics.batch_seconds.labels(self.topic.name).observe(time.perf_counter() - started)
        if self.after_apply is not None:
            self.after_apply()

    async def _apply_retrying(self, events: Sequence[Event]) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.2, max=10),
            stop=stop_never,
            reraise=True,
            before_sleep=lambda state: log.warning(
                "apply_retry",
                topic=self.topic.name,
                attempt=state.attempt_number,
                error=type(state.outcome.exception()).__name__ if state.outcome else None,
            ),
        ):
            with attempt:
                await asyncio.to_thread(self.apply, events)

    async def _apply_with_isolation(
        self, events: list[Event], records: Sequence[Any], dead: list[Any]
    ) -> None:
        try:
            await self._apply_retrying(events)
            return
        except Exception as error:
            if len(events) == 1:
                record = next(r for r in records if _event_id_of(r) == events[0].event_id)
                dead.append(
                    _dead_letter(
                        self.settings,
                        self.topic,
                        self.service,
                        record,
                        f"handler error: {type(error).__name__}: {error}"[:500],
                    )
                )
                log.error(
                    "event_dead_lettered",
                    topic=self.topic.name,
                    event_id=events[0].event_id,
                    error=type(error).__name__,
                )
                return
        middle = len(events) // 2
        await self._apply_with_isolation(events[:middle], records, dead)
        await self._apply_with_isolation(events[middle:], records, dead)


async def _skip_decoding(message: Any) -> None:
    """Records are parsed by `parse_event` from the raw bytes, so FastStream need not decode them."""
    return None


def _event_id_of(record: Any) -> str | None:
    try:
        return parse_event(record.value or b"").event_id
    except PoisonMessage:
        return None
