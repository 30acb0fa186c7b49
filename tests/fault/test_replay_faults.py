"""Replaying every topic from offset 0 changes nothing: after a programme has drained, the consumer
groups are reset to the beginning (services stopped, offsets reset, services started again), and
every topic's records are published a second time into the running services. Reach, payments,
the ledger and the provider's books stay exactly as they were, and no new event is emitted."""

from __future__ import annotations

import random
import signal
from typing import Any

import pytest

from relief_cli.drain import wait_until_drained
from relief_cli.generator import generate_programme
from relief_cli.runner import run_programme
from relief_cli.stack import Stack
from shared.settings import Settings
from shared.topics import SUBSCRIPTIONS, TOPICS
from tests.fault.faults import fault_seeds
from tests.fault.pipeline import committed_lag, new_finance_key, outcome, produce, read_topic, topic_sizes

REPLAYS = ("replay-from-zero", "republish-from-zero")


def reset_groups_to_zero(stack: Stack) -> int:
    """Stop every service, move every consumer group back to offset 0, start them again; returns
    the records each group now has to read again (summed)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient, OffsetSpec

    settings = stack.settings
    for managed in stack.managed:
        assert managed.process is not None
        managed.process.send_signal(signal.SIGTERM)
    for managed in stack.managed:
        assert managed.process is not None
        managed.process.wait(60)
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        for service, topics in SUBSCRIPTIONS.items():
            partitions = [
                TopicPartition(settings.topic(t.name), p)
                for t in topics
                for p in consumer.partitions_for_topic(settings.topic(t.name)) or ()
            ]
            answer = admin.reset_group_offsets(
                settings.group_id(service), dict.fromkeys(partitions, OffsetSpec.EARLIEST)
            )
            failed = {tp: a["error"] for tp, a in answer.items() if a["error"].errno != 0}
            assert not failed, failed
    finally:
        consumer.close()
        admin.close()
    to_read_again = committed_lag(settings)
    stack.supervise_once()  # restarts every stopped service
    stack.wait_healthy()
    return to_read_again


def republish_everything(settings: Settings, rng: random.Random) -> int:
    """Every record of every topic published again, topics interleaved in a seeded order (each
    partition's own order kept, as a mirror or a restore from backup would send them)."""
    streams = [
        [(settings.topic(t.name), r.key, r.value) for r in read_topic(settings, settings.topic(t.name))]
        for t in TOPICS
    ]
    records = []
    while any(streams):
        stream = rng.choice([s for s in streams if s])
        records.append(stream.pop(0))
    produce(settings, records)
    return len(records)


def snapshot(settings: Settings, programme: Any, finance_key: str) -> dict[str, Any]:
    state = wait_until_drained(settings, 300, progress=False)
    result = outcome(settings, programme, state, finance_key)
    result["reach"] = {k: v for k, v in result["reach"].items() if k != "as_of"}
    result["sizes"] = topic_sizes(settings)
    return result


def run_with_replays(
    seed: int,
    settings: Settings,
    persons: int,
    partners: int | None = None,
    replicas: dict[str, int] | None = None,
) -> dict[str, Any]:
    rng = random.Random(seed)
    programme = generate_programme(persons, seed=seed, partners=partners)
    replays = list(REPLAYS)
    rng.shuffle(replays)
    stack = Stack(settings, replicas or {})
    stack.start()
    runs: list[dict[str, Any]] = []
    try:
        finance_key = new_finance_key(settings, f"finance-{seed}")
        run_programme(settings, programme, timeout=240)
        before = snapshot(settings, programme, finance_key)
        for replay in replays:
            if replay == "replay-from-zero":
                read_again = reset_groups_to_zero(stack)
                added = 0
            else:
                read_again = added = republish_everything(settings, rng)
            after = snapshot(settings, programme, finance_key)
            grown = {name: after["sizes"][name] - before["sizes"][name] for name in before["sizes"]}
            runs.append(
                {
                    "replay": replay,
                    "read_again": read_again,
                    "added": added,
                    "new_records": sum(grown.values()) - added,
                    "reach_same": after["reach"] == before["reach"],
                    "books_same": after["books"] == before["books"],
                    "after": after,
                }
            )
            before = after
    finally:
        stack.stop()
    first = runs[0]["after"]
    result = {
        "seed": seed,
        "injected": [(run["replay"], 0) for run in runs],
        "lost": max(run["after"]["lost"] for run in runs),
        "double": max(run["after"]["double"] for run in runs),
        "exact": all(run["after"]["exact"] for run in runs),
        "runs": [{k: v for k, v in run.items() if k != "after"} for run in runs],
        "mismatch": first["mismatch"],
    }
    result["passed"] = all(
        run["after"]["passed"]
        and run["reach_same"]
        and run["books_same"]
        and run["new_records"] == 0
        and run["read_again"] > 0
        for run in runs
    )
    return result


def test_replaying_every_topic_from_zero_changes_nothing(make_settings):
    """The fast core variant: one seed, SQLite, one replica of each service, three partners."""
    result = run_with_replays(5, make_settings(), persons=60, partners=3)
    assert [run["replay"] for run in result["runs"]] and {run["replay"] for run in result["runs"]} == set(
        REPLAYS
    )
    assert result["passed"], result


@pytest.mark.fault
@pytest.mark.parametrize("seed", fault_seeds(range(1, 4)))
def test_seeded_replays_from_zero_change_nothing(seed, make_settings, postgres, fault_results):
    settings = make_settings(database="postgres", postgres_cluster=postgres, fsp_transient_failure_rate=0.1)
    result = run_with_replays(seed, settings, persons=300, replicas={"eligibility": 2, "disbursement": 2})
    fault_results.append(result)
    assert result["passed"], result
