"""Seeded delivery faults on the real topics: bad messages of every kind the consumers must refuse,
and duplicates and out-of-order copies of real events they must absorb without a trace.

Bad messages are made from a real record of the topic (so each one differs from a valid event in
exactly one way), and each carries the fragment its dead-letter reason must contain.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from shared.events import EVENT_TYPES, MAX_EVENT_BYTES, PoisonMessage, parse_event
from shared.settings import Settings
from shared.topics import TOPICS, Topic
from tests.fault.pipeline import produce, read_topic

BAD_KINDS = (
    "malformed-message",
    "oversized-message",
    "unknown-event-type",
    "unsupported-schema-version",
    "missing-field",
    "event-on-wrong-topic",
)
VALID_KINDS = ("duplicate-event", "out-of-order-event")


@dataclass(frozen=True)
class BadMessage:
    kind: str
    topic: Topic
    key: bytes | None
    value: bytes
    reason: str  # a fragment the dead-letter reason must contain


@dataclass(frozen=True)
class Published:
    message: BadMessage
    partition: int
    offset: int


def _envelopes(records: list[Any], topic: Topic) -> list[tuple[Any, dict[str, Any]]]:
    found = []
    for record in records:
        try:
            parse_event(record.value, allowed=topic.events)
        except PoisonMessage:
            continue
        found.append((record, orjson.loads(record.value)))
    return found


def bad_messages(
    rng: random.Random, topic: Topic, template: dict[str, Any], key: bytes | None
) -> list[BadMessage]:
    """One message of every bad kind, each derived from the real event `template`."""
    event_type = template["event_type"]
    cls = EVENT_TYPES[event_type]
    required = [name for name, field in cls.model_fields.items() if field.is_required() and name in template]
    dropped = rng.choice(required)
    foreign = rng.choice([t for other in TOPICS if other is not topic for t in other.events]).event_type

    def changed(**fields: Any) -> bytes:
        return orjson.dumps({**template, **fields})

    garbage = bytes(rng.getrandbits(8) for _ in range(rng.randint(8, 64)))
    too_big = MAX_EVENT_BYTES + rng.randint(1, 64 * 1024)
    return [
        BadMessage("malformed-message", topic, key, b'{"event_type": "' + event_type.encode() + b'", ' + garbage, "not JSON"),
        BadMessage("oversized-message", topic, key, changed(padding="x" * too_big), f"exceeds {MAX_EVENT_BYTES}"),
        BadMessage("unknown-event-type", topic, key, changed(event_type=f"{event_type}.renamed"), "unknown event_type"),
        BadMessage(
            "unsupported-schema-version", topic, key, changed(schema_version=cls.schema_version + rng.randint(1, 9)),
            "unsupported schema_version",
        ),
        BadMessage(
            "missing-field", topic, key, orjson.dumps({k: v for k, v in template.items() if k != dropped}),
            f"{dropped}: Field required",
        ),
        BadMessage("event-on-wrong-topic", topic, key, changed(event_type=foreign), "does not belong on this topic"),
    ]  # fmt: skip


@dataclass
class DeliveryFaults:
    """What one seed injects: the bad messages, and copies of valid events, on every consumed topic."""

    settings: Settings
    seed: int
    copies_per_topic: int = 12

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.bad: list[Published] = []
        self.copies: dict[str, int] = defaultdict(int)  # fault kind → valid events re-sent

    def inject(self) -> list[str]:
        """Publish everything on the live topics, in a seeded order; returns the fault kinds."""
        records: list[tuple[str, BadMessage | None, bytes | None, bytes]] = []
        for topic in TOPICS:
            name = self.settings.topic(topic.name)
            valid = _envelopes(read_topic(self.settings, name), topic)
            assert valid, f"no event on {topic.name} yet to derive faults from"
            record, template = self.rng.choice(valid)
            for message in bad_messages(self.rng, topic, template, record.key):
                records.append((name, message, message.key, message.value))
            for record, _ in self.rng.sample(valid, min(len(valid), self.copies_per_topic)):
                records.append((name, None, record.key, record.value))
                self.copies["duplicate-event"] += 1
            records += [(name, None, key, value) for key, value in self._out_of_order(valid)]
        self.rng.shuffle(records)
        positions = produce(self.settings, [(name, key, value) for name, _, key, value in records])
        for (_, message, _, _), (partition, offset) in zip(records, positions, strict=True):
            if message is not None:
                self.bad.append(Published(message, partition, offset))
        return [p.message.kind for p in self.bad] + [k for k, n in self.copies.items() for _ in range(n)]

    def _out_of_order(self, valid: list[tuple[Any, dict[str, Any]]]) -> list[tuple[bytes | None, bytes]]:
        """Whole histories of a few keys re-sent newest first, each under a fresh event id, so only
        the consumers' ordering rules (sequence, decision time, one decision per row) stand between
        these events and a changed outcome."""
        by_key: dict[bytes | None, list[dict[str, Any]]] = defaultdict(list)
        for record, envelope in valid:
            by_key[record.key].append(envelope)
        keys = self.rng.sample(sorted(by_key, key=lambda k: k or b""), min(len(by_key), 4))
        resent = []
        for key in keys:
            history = sorted(
                by_key[key], key=lambda e: (e.get("sequence", 0), e["occurred_at"]), reverse=True
            )
            for envelope in history:
                fresh = str(uuid.UUID(int=self.rng.getrandbits(128)))
                resent.append((key, orjson.dumps({**envelope, "event_id": fresh})))
                self.copies["out-of-order-event"] += 1
        return resent


def unexplained_dead_letters(
    settings: Settings, published: list[Published], letters: list[dict[str, Any]], groups_of: Any
) -> list[str]:
    """Each bad message dead-lettered once by every group reading its topic, with a reason naming
    the problem; nothing else dead-lettered. Returns what does not fit."""
    problems = []
    found: dict[tuple[str, int, int, str], list[str]] = defaultdict(list)
    for letter in letters:
        found[
            (letter["source_topic"], letter["partition"], letter["offset"], letter["consumer_group"])
        ].append(letter["reason"])
    expected = set()
    for item in published:
        name = settings.topic(item.message.topic.name)
        for group in groups_of(settings, item.message.topic.name):
            slot = (name, item.partition, item.offset, group)
            expected.add(slot)
            reasons = found.get(slot, [])
            if len(reasons) != 1 or item.message.reason not in reasons[0]:
                problems.append(f"{item.message.kind} on {item.message.topic.name} for {group}: {reasons}")
    for slot, reasons in found.items():
        if slot not in expected:
            problems.append(f"unexpected dead letter {slot}: {reasons}")
    return problems
