"""Crash faults lose nothing and pay nobody twice: services killed with SIGKILL, the broker and the
database restarted, in the middle of a programme. Driven by a seed (replay a failure exactly with
`RELIEF_FAULT_SEEDS=<seed> make test-faults`)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from relief_cli.drain import pipeline_state, wait_until_drained
from relief_cli.generator import generate_programme
from relief_cli.runner import create_partner, fetch_reach, run_programme
from relief_cli.stack import Stack
from tests.fault.faults import SERVICE_FAULTS, FaultPlan, Injector

SEEDS = [
    int(s) for s in os.environ.get("RELIEF_FAULT_SEEDS", ",".join(str(s) for s in range(1, 21))).split(",")
]


def run_with_faults(
    seed: int, settings: Any, kafka: Any, postgres: Any, persons: int, kinds: tuple[str, ...] | None = None
) -> dict[str, Any]:
    programme = generate_programme(persons, seed=seed)
    plan = FaultPlan.from_seed(seed, kinds=kinds) if kinds else FaultPlan.from_seed(seed)
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
    finance_key = create_partner(settings, f"finance-{seed}", role="finance")["api_key"]
    injector.start()
    try:
        run_programme(settings, programme, timeout=300)
        injector.stop()
        state = wait_until_drained(settings, 300, progress=False)
        reach = fetch_reach(settings)
        payments = httpx.get(
            f"{settings.service_url('disbursement')}/v1/payments",
            headers={"Authorization": f"Bearer {finance_key}"},
            timeout=30,
        ).json()
    finally:
        injector.stop()
        stack.stop()
    truth = {k: v for k, v in programme.truth.items() if k not in ("accepted", "rejected")}
    expected_paid = sum(entry["payments"] for entry in truth["disbursed"].values())
    paid = sum(1 for payment in payments if payment["status"] == "paid")
    result = {
        "seed": seed,
        "injected": in_flight,
        "errors": injector.errors,
        "lost": max(0, programme.truth["accepted"] - int(state.get("final", 0)))
        + int(state.get("pending") or 0),
        "double": max(0, paid - expected_paid),
        "exact": {k: reach.get(k) for k in truth} == truth,
        "drained": bool(state.get("drained")),
        "mismatch": {k: (reach.get(k), v) for k, v in truth.items() if reach.get(k) != v},
    }
    result["passed"] = (
        result["drained"]
        and result["exact"]
        and result["lost"] == 0
        and result["double"] == 0
        and not injector.errors
    )
    return result


@pytest.mark.fault
@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_crash_faults_lose_nothing_and_pay_nobody_twice(
    seed, make_settings, kafka, postgres, fault_results
):
    settings = make_settings(database="postgres", postgres_cluster=postgres, fsp_transient_failure_rate=0.2)
    result = run_with_faults(seed, settings, kafka, postgres, persons=500)
    fault_results.append(result)
    assert result["passed"], result


def test_killing_every_service_mid_programme_loses_nothing(make_settings, kafka, postgres):
    """The fast core of the fault suite, inside `make test`: one seed, service kills only."""
    settings = make_settings(database="postgres", postgres_cluster=postgres, fsp_transient_failure_rate=0.2)
    result = run_with_faults(101, settings, kafka, postgres, persons=250, kinds=SERVICE_FAULTS)
    assert len(result["injected"]) == 4
    assert result["passed"], result
