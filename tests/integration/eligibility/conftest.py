"""Helpers for eligibility on the real broker: build rows as intake would, publish them, read decisions."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from shared.events import BeneficiaryRegistered, Event, parse_event
from shared.identity import IdentityHasher
from shared.settings import Settings
from shared.topics import BENEFICIARY_REGISTERED, ELIGIBILITY_DECIDED

TEST_SECRET = "test-identity-secret-0123456789abcdef"  # noqa: S105 - the make_settings fixture's test secret
_rows = itertools.count(1)
_hasher = IdentityHasher(TEST_SECRET)


@pytest.fixture
def row() -> Callable[..., BeneficiaryRegistered]:
    """A registered row from raw fields, hashed as intake hashes them (SPEC §4)."""

    def build(
        given_name: str = "An",
        family_name: str | None = "Nguyen",
        *,
        date_of_birth: date = date(1990, 5, 17),
        nationality: str = "VNM",
        id_type: str = "none",
        id_number: str | None = None,
        row_id: str | None = None,
        partner: str = "p1",
        **fields: Any,
    ) -> BeneficiaryRegistered:
        keys = _hasher.keys_for(
            nationality=nationality,
            date_of_birth=date_of_birth,
            given_name=given_name,
            family_name=family_name,
            id_type=id_type,
            id_number=id_number,
        )
        values: dict[str, Any] = {
            "row_id": row_id or f"row-{next(_rows)}",
            "batch_id": f"batch-{partner}",
            "partner_id": partner,
            "partner_name": f"Partner {partner.upper()}",
            "document_key": keys.document_key,
            "name_key": keys.name_key,
            "block_key": keys.block_key,
            "near_keys": list(keys.near_keys),
            "sex": "F",
            "age_years": 35,
            "nationality": nationality,
            "country": "MY",
            "household_size": 3,
            "vulnerabilities": ["job_loss"],
            "assistance": "cash_relief",
            "payout_method": "e_wallet",
            "payout_account_sealed": "sealed-account-blob",
            "registered_on": date(2026, 1, 20),
        }
        values.update(fields)
        return BeneficiaryRegistered(**values)

    return build


def publish(
    settings: Settings, events: Iterable[BeneficiaryRegistered], raw: Iterable[tuple[str, bytes]] = ()
) -> None:
    """Publish rows as intake does: keyed by the document key, else the name key."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5)
    topic = settings.topic(BENEFICIARY_REGISTERED.name)
    try:
        for event in events:
            producer.send(topic, key=(event.document_key or event.name_key).encode(), value=event.to_bytes())
        for key, payload in raw:
            producer.send(topic, key=key.encode(), value=payload)
        producer.flush(30)
    finally:
        producer.close()


class TopicReader:
    """Everything on a topic so far, read from its beginning and kept; `wait_for` reads on."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = KafkaConsumer(
            settings.topic(topic),
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self.records: list[tuple[str | None, Event]] = []
        self.raw: list[dict[str, Any]] = []

    def poll(self, seconds: float = 0.5) -> None:
        for records in self.consumer.poll(timeout_ms=int(seconds * 1000)).values():
            for record in records:
                key = record.key.decode() if record.key else None
                try:
                    self.records.append((key, parse_event(record.value)))
                except Exception:
                    import orjson

                    self.raw.append(orjson.loads(record.value))

    @property
    def events(self) -> list[Event]:
        return [event for _, event in self.records]

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 45.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if predicate(self.events):
                return self.events
        raise AssertionError(
            f"timed out; {len(self.events)} events read: {[e.event_type for e in self.events][-20:]}"
        )

    def wait_for_decisions(self, row_ids: Iterable[str], timeout: float = 45.0) -> dict[str, Any]:
        wanted = set(row_ids)
        self.wait_for(lambda events: wanted <= {getattr(e, "row_id", None) for e in events}, timeout)
        return self.decisions()

    def decisions(self) -> dict[str, Any]:
        return {e.row_id: e for e in self.events if e.event_type == "eligibility.decided"}  # type: ignore[attr-defined]

    def settle(self, seconds: float = 2.0) -> list[Event]:
        """Read on for a while, for tests that check nothing more arrives."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll(0.2)
        return self.events

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def decided_reader() -> Iterator[Callable[[Settings], TopicReader]]:
    readers: list[TopicReader] = []

    def open_reader(settings: Settings, topic: str = ELIGIBILITY_DECIDED.name) -> TopicReader:
        reader = TopicReader(settings, topic)
        readers.append(reader)
        return reader

    yield open_reader
    for reader in readers:
        reader.close()


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A service's /metrics as {(sample name, sorted labels): value}."""
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(url: str, name: str, **labels: str) -> float:
    return metrics(url).get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def kit() -> Any:
    """The helpers above, for test modules (conftest modules are not imported by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(publish=publish, metrics=metrics, metric=metric, wait_until=wait_until)
