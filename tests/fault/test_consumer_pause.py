"""A disbursement replica frozen (SIGSTOP) mid-batch for longer than the consumer session timeout:
the group rebalances its partitions to the other replica, then the frozen one wakes (SIGCONT) with
its stale batch, its claimed payments and its lost membership. Nobody is paid twice, nothing is
lost, reach is exactly the ground truth."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import pytest

from relief_cli.drain import pipeline_state, wait_until_drained
from relief_cli.generator import generate_programme
from relief_cli.runner import create_partner, submit_batch
from relief_cli.stack import Stack
from shared.settings import Settings
from tests.fault.faults import fault_seeds
from tests.fault.pipeline import committed_lag, new_finance_key, outcome


def group_members(settings: Settings, service: str) -> int:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        described = admin.describe_groups([settings.group_id(service)])
    finally:
        admin.close()
    group = described[0] if isinstance(described, list) else next(iter(described.values()))
    members = group["members"] if isinstance(group, dict) else group.members
    return len(members)


def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Poll until `condition()` holds; returns how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - started


def run_with_paused_replica(seed: int, settings: Settings, persons: int) -> dict[str, Any]:
    rng = random.Random(seed)
    programme = generate_programme(persons, seed=seed)
    pause_after = rng.randrange(1, len(programme.batches) - 1)
    replica = rng.randrange(2)
    stack = Stack(settings, {"disbursement": 2})
    stack.start()
    frozen = next(m.process for m in stack.managed if m.service == "disbursement" and m.replica == replica)
    assert frozen is not None
    record: dict[str, Any] = {}
    try:
        finance_key = new_finance_key(settings, f"finance-{seed}")
        keys = {name: create_partner(settings, name)["api_key"] for name in programme.partners}
        wait_for(lambda: group_members(settings, "disbursement") == 2, 60, "both replicas in the group")
        for index, batch in enumerate(programme.batches):
            submit_batch(settings, keys[batch.partner_name], batch.to_csv())
            if index == pause_after:
                # Frozen as soon as the batch is accepted, while its events are on their way.
                frozen.send_signal(signal.SIGSTOP)
                record["pending_at_pause"] = int(pipeline_state(settings)["pending"])
                record["rebalance_seconds"] = wait_for(
                    lambda: group_members(settings, "disbursement") == 1,
                    120,
                    "the group to drop the frozen replica",
                )
                # The other replica now owns every partition: the batch drains without the frozen one
                # (its claimed payments are taken over once their lease runs out).
                record["drained_while_frozen"] = bool(
                    wait_until_drained(settings, 180, progress=False)["drained"]
                )
                frozen.send_signal(signal.SIGCONT)
                record["rejoin_seconds"] = wait_for(
                    lambda: group_members(settings, "disbursement") == 2, 120, "the woken replica to rejoin"
                )
            state = wait_until_drained(settings, 240, progress=False, settle=0.3)
            assert state["drained"], state
        result = outcome(settings, programme, state, finance_key)
        result["lag"] = committed_lag(settings)
    finally:
        frozen.send_signal(signal.SIGCONT)
        stack.stop()
    result.update(
        record, seed=seed, injected=[("consumer-paused-into-rebalance", record.get("pending_at_pause", 0))]
    )
    result["passed"] = result["passed"] and record.get("drained_while_frozen", False) and result["lag"] == 0
    return result


@pytest.mark.fault
@pytest.mark.parametrize("seed", fault_seeds(range(1, 4)))
def test_a_replica_paused_past_its_session_timeout_pays_nobody_twice(
    seed, make_settings, postgres, fault_results
):
    settings = make_settings(database="postgres", postgres_cluster=postgres, fsp_latency_ms=20)
    result = run_with_paused_replica(seed, settings, persons=240)
    fault_results.append(result)
    assert result["passed"], {k: v for k, v in result.items() if k not in ("reach", "books")}
