"""Crash faults lose nothing and pay nobody twice: services killed with SIGKILL, the broker and the
database restarted, in the middle of a programme. Driven by a seed (replay a failure exactly with
`RELIEF_FAULT_SEEDS=<seed> make test-faults`)."""

from __future__ import annotations

from typing import Any

import pytest

from relief_cli.drain import pipeline_state, wait_until_drained
from relief_cli.generator import generate_programme
from relief_cli.runner import run_programme
from relief_cli.stack import Stack
from tests.fault.faults import SERVICE_FAULTS, FaultPlan, Injector, fault_seeds
from tests.fault.pipeline import new_finance_key, outcome

SEEDS = fault_seeds(range(1, 13))
# A killed replica's partitions wait for its session to expire; 10 s keeps each run short.
FAST_FAILOVER = {"fsp_transient_failure_rate": 0.2, "kafka_session_timeout_ms": 10_000}


def run_with_faults(
    seed: int, settings: Any, kafka: Any, postgres: Any, persons: int, kinds: tuple[str, ...] | None = None
) -> dict[str, Any]:
    programme = generate_programme(persons, seed=seed)
    batches = len(programme.batches)
    plan = (
        FaultPlan.from_seed(seed, batches=batches, kinds=kinds)
        if kinds
        else FaultPlan.from_seed(seed, batches=batches)
    )
    stack = Stack(settings, {"eligibility": 2, "disbursement": 2})
    stack.start()
    injector = Injector(stack, plan, kafka=kafka, postgres=postgres)
    in_flight: list[tuple[str, int]] = []
    original_inject = injector.inject

    def inject_and_count(kind: str) -> None:
        try:
            pending = int(pipeline_state(stack.settings)["pending"])
        except Exception:
            pending = 0
        in_flight.append((kind, pending))
        original_inject(kind)

    injector.inject = inject_and_count  # type: ignore[method-assign]
    finance_key = new_finance_key(settings, f"finance-{seed}")
    injector.start()
    try:
        run_programme(settings, programme, timeout=300, on_submitted=injector.batch_submitted)
        injector.finish()
        state = wait_until_drained(settings, 300, progress=False)
        # The other replica may drain the pipeline while a killed one is still starting again;
        # the books are read from the services once every replica answers.
        stack.wait_healthy(120, restarting=True)
        result = outcome(settings, programme, state, finance_key)
    finally:
        injector.stop()
        stack.stop()
    result.update(seed=seed, injected=in_flight, errors=injector.errors)
    result["passed"] = result["passed"] and not injector.errors
    return result


@pytest.mark.fault
@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_crash_faults_lose_nothing_and_pay_nobody_twice(
    seed, make_settings, kafka, postgres, fault_results
):
    settings = make_settings(database="postgres", postgres_cluster=postgres, **FAST_FAILOVER)
    result = run_with_faults(seed, settings, kafka, postgres, persons=500)
    fault_results.append(result)
    assert result["passed"], result


def test_killing_every_service_mid_programme_loses_nothing(make_settings, kafka, postgres):
    """The fast core of the fault suite, inside `make test`: one seed, service kills only."""
    settings = make_settings(database="postgres", postgres_cluster=postgres, **FAST_FAILOVER)
    result = run_with_faults(101, settings, kafka, postgres, persons=250, kinds=SERVICE_FAULTS)
    assert len(result["injected"]) == 4
    assert result["passed"], result
