"""Delivery faults on every consumed topic: malformed, oversized and wrong-schema messages go to the
dead-letter topic with a reason naming what is wrong, while duplicates and out-of-order copies of
real events change nothing; the programme around them still reaches exactly its ground truth and
nobody is paid twice. Driven by a seed (`RELIEF_FAULT_SEEDS=<seed> make test-faults` replays one)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from relief_cli.drain import pipeline_state, wait_until_drained
from relief_cli.generator import generate_programme
from relief_cli.runner import run_programme
from relief_cli.stack import Stack
from tests.fault.delivery import DeliveryFaults, unexplained_dead_letters
from tests.fault.faults import fault_seeds
from tests.fault.pipeline import dead_letters, groups_reading, new_finance_key, outcome


def run_with_delivery_faults(
    seed: int,
    settings: Any,
    persons: int,
    partners: int | None = None,
    replicas: dict[str, int] | None = None,
) -> dict[str, Any]:
    rng = random.Random(seed)
    programme = generate_programme(persons, seed=seed, partners=partners)
    # After a seeded batch has drained, the faults go in as soon as the next batch is accepted,
    # so bad messages and copies are interleaved with that batch's own events.
    after_batch = rng.randrange(0, len(programme.batches) - 1)
    faults = DeliveryFaults(settings, seed)
    injected: list[tuple[str, int]] = []
    errors: list[str] = []
    stack = Stack(settings, replicas or {})
    stack.start()

    def inject_with_next_batch(accepted_before: int) -> None:
        try:
            state = pipeline_state(settings)
            while state["accepted"] == accepted_before:
                time.sleep(0.05)
                state = pipeline_state(settings)
            kinds = faults.inject()
            injected.extend((kind, int(state["pending"])) for kind in kinds)
        except Exception as error:  # reported in the result, never hidden
            errors.append(f"{type(error).__name__}: {error}")

    injector: list[threading.Thread] = []

    def on_batch(index: int, _: dict[str, Any]) -> None:
        if index == after_batch:
            accepted = int(pipeline_state(settings)["accepted"])
            thread = threading.Thread(target=inject_with_next_batch, args=(accepted,), daemon=True)
            thread.start()
            injector.append(thread)

    try:
        finance_key = new_finance_key(settings, f"finance-{seed}")
        run_programme(settings, programme, timeout=240, on_batch=on_batch)
        for thread in injector:
            thread.join(120)
        state = wait_until_drained(settings, 240, progress=False)
        result = outcome(settings, programme, state, finance_key)
        letters = dead_letters(settings)
    finally:
        stack.stop()
    result.update(
        seed=seed,
        injected=injected,
        errors=errors,
        dead_letter_problems=unexplained_dead_letters(settings, faults.bad, letters, groups_reading),
        dead_letters=len(letters),
        restarts=sum(managed.restarts for managed in stack.managed),
    )
    result["passed"] = (
        result["passed"]
        and bool(injected)
        and not errors
        and not result["dead_letter_problems"]
        and result["restarts"] == 0
    )
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("reach", "books", "injected")}


def test_bad_duplicate_and_out_of_order_messages_on_every_topic_change_nothing(make_settings):
    """The fast core variant: one seed, SQLite, one replica of each service, four partners."""
    result = run_with_delivery_faults(7, make_settings(), persons=100, partners=4)
    kinds = {kind for kind, _ in result["injected"]}
    assert kinds == {
        "malformed-message", "oversized-message", "unknown-event-type", "unsupported-schema-version",
        "missing-field", "event-on-wrong-topic", "duplicate-event", "out-of-order-event",
    }  # fmt: skip
    # Six bad messages on each topic, dead-lettered once by every group reading it: eligibility
    # reads beneficiary.registered; disbursement, reporting and intake eligibility.decided;
    # reporting and intake disbursement.payments.
    assert result["dead_letters"] == 6 * 1 + 6 * 3 + 6 * 2
    assert result["passed"], summary(result)


@pytest.mark.fault
@pytest.mark.parametrize("seed", fault_seeds(range(1, 6)))
def test_seeded_delivery_faults_are_dead_lettered_and_absorbed(seed, make_settings, postgres, fault_results):
    settings = make_settings(database="postgres", postgres_cluster=postgres, fsp_transient_failure_rate=0.1)
    result = run_with_delivery_faults(
        seed, settings, persons=300, replicas={"eligibility": 2, "disbursement": 2}
    )
    fault_results.append(result)
    assert result["passed"], summary(result)
