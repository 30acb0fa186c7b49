"""The real topics read and written as an operator would, and a drained stack checked against the
programme's ground truth: the pieces every fault test needs."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from typing import Any

import httpx
import orjson

from relief_cli.generator import Programme
from relief_cli.runner import create_partner, fetch_reach
from shared.kafka import consumer_lag
from shared.settings import Settings
from shared.topics import SUBSCRIPTIONS, TOPICS, consumer_subscriptions


def produce(settings: Settings, records: list[tuple[str, bytes | None, bytes]]) -> list[tuple[int, int]]:
    """Publish raw (topic, key, value) records as any producer could; returns (partition, offset) each."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", max_request_size=4 * 1024 * 1024
    )
    try:
        futures = [producer.send(topic, value=value, key=key) for topic, key, value in records]
        producer.flush()
        return [(meta.partition, meta.offset) for meta in (future.get(timeout=30) for future in futures)]
    finally:
        producer.close()


def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record of a (prefixed) topic, from the beginning to its current end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(p) < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within 60 s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def topic_sizes(settings: Settings) -> dict[str, int]:
    """Records ever written to each topic and dead-letter topic (end offsets summed over partitions)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        sizes: dict[str, int] = {}
        for topic in TOPICS:
            for name in (topic.name, topic.dead_letter):
                prefixed = settings.topic(name)
                partitions = [
                    TopicPartition(prefixed, p) for p in consumer.partitions_for_topic(prefixed) or ()
                ]
                sizes[name] = sum(consumer.end_offsets(partitions).values())
        return sizes
    finally:
        consumer.close()


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every dead-lettered message of every topic, as the `DeadLettered` bodies."""
    return [
        orjson.loads(record.value)
        for topic in TOPICS
        for record in read_topic(settings, settings.topic(topic.dead_letter))
    ]


def groups_reading(settings: Settings, topic_name: str) -> set[str]:
    return {
        settings.group_id(service)
        for service, topics in SUBSCRIPTIONS.items()
        if topic_name in {t.name for t in topics}
    }


def committed_lag(settings: Settings) -> int:
    return sum(consumer_lag(settings, consumer_subscriptions(settings.topic, settings.group_id)).values())


def finance(settings: Settings, path: str, key: str) -> Any:
    response = httpx.get(
        f"{settings.service_url('disbursement')}{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json() if path != "/v1/provider/statement" else response.text


def books(settings: Settings, finance_key: str) -> dict[str, Any]:
    """What finance sees: payments by status, the ledger's balances and the provider's statement."""
    payments = finance(settings, "/v1/payments", finance_key)
    statement = list(csv.DictReader(io.StringIO(finance(settings, "/v1/provider/statement", finance_key))))
    return {
        "payments": sorted(
            (p["payment_ref"], p["status"], p["amount_minor"], p["currency"]) for p in payments
        ),
        "balances": finance(settings, "/v1/balances", finance_key),
        "transfers_per_payment": Counter(line["payment_ref"] for line in statement),
        "provider_paid": sum(1 for line in statement if line["status"] in ("paid", "reversed")),
    }


def new_finance_key(settings: Settings, name: str = "finance") -> str:
    return str(create_partner(settings, name, role="finance")["api_key"])


def outcome(
    settings: Settings, programme: Programme, state: dict[str, Any], finance_key: str
) -> dict[str, Any]:
    """A drained stack against the ground truth: rows lost, people paid twice, reach exact."""
    reach = fetch_reach(settings)
    ledger = books(settings, finance_key)
    truth = {k: v for k, v in programme.truth.items() if k not in ("accepted", "rejected")}
    expected_paid = sum(entry["payments"] for entry in truth["disbursed"].values())
    paid = sum(1 for _, status, *_ in ledger["payments"] if status == "paid")
    balances_agree = all(b["ledger_net_minor"] == b["paid_minor"] for b in ledger["balances"].values())
    result = {
        "lost": max(0, programme.truth["accepted"] - int(state.get("final") or 0))
        + int(state.get("pending") or 0),
        "double": max(0, paid - expected_paid)
        + sum(count - 1 for count in ledger["transfers_per_payment"].values() if count > 1),
        "exact": {k: reach.get(k) for k in truth} == truth,
        "drained": bool(state.get("drained")),
        "balances_agree": balances_agree,
        "mismatch": {k: (reach.get(k), v) for k, v in truth.items() if reach.get(k) != v},
        "reach": reach,
        "books": ledger,
    }
    result["passed"] = (
        result["drained"]
        and result["exact"]
        and result["lost"] == 0
        and result["double"] == 0
        and balances_agree
    )
    return result
