"""The main job end to end: a generated programme with known ground truth goes through the real
stack (real Kafka, real HTTP, four services as processes, two replicas of eligibility and of
disbursement), and every figure of /v1/reach equals the truth."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from relief_cli.generator import generate_programme
from relief_cli.runner import fetch_reach, run_programme
from relief_cli.stack import Stack
from services.reporting.health import check_services


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_programme_through_the_real_stack_reaches_exactly_the_ground_truth(
    database, make_settings, request
):
    cluster = request.getfixturevalue("postgres") if database == "postgres" else None
    settings = make_settings(database=database, postgres_cluster=cluster)
    programme = generate_programme(400, seed=21 if database == "sqlite" else 22)
    stack = Stack(settings, {"eligibility": 2, "disbursement": 2})
    stack.start()
    try:
        results = run_programme(settings, programme, timeout=240)
        assert [r["accepted"] for r in results] == [b.accepted for b in programme.batches]
        assert [r["rejected"] for r in results] == [b.rejected for b in programme.batches]
        reach = fetch_reach(settings)
        truth = {k: v for k, v in programme.truth.items() if k not in ("accepted", "rejected")}
        assert {k: reach[k] for k in truth} == truth
        assert reach["as_of"]
        # Every service kept serving, none restarted.
        assert all(managed.restarts == 0 for managed in stack.managed)
        for managed in stack.managed:
            assert httpx.get(f"http://{settings.host}:{managed.port}/healthz", timeout=5).status_code == 200
        # What the dashboard shows of each service comes from its /healthz answer alone.
        checks = asyncio.run(check_services(settings))
        assert all(check.up for check in checks.values()), checks
        assert all(
            check.outbox_backlog is not None and check.outbox_backlog >= 0 for check in checks.values()
        )
        assert all(check.outbox_oldest_seconds is not None for check in checks.values())
    finally:
        stack.stop()
