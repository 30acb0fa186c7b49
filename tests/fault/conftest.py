"""Collects every fault run into docs/reliability.md, and prints the seeds that failed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

RESULTS: list[dict[str, Any]] = []
FAILED_TESTS: list[str] = []  # every failed fault test, also those that raised before recording a run
REPORT = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


@pytest.fixture
def fault_results() -> list[dict[str, Any]]:
    return RESULTS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and item.get_closest_marker("fault") is not None:
        FAILED_TESTS.append(item.name)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not RESULTS and not FAILED_TESTS:
        return
    by_fault: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"injected": 0, "in_flight": 0, "lost": 0, "double": 0, "exact": True, "runs": 0}
    )
    for run in RESULTS:
        for kind, in_flight in run["injected"]:
            entry = by_fault[kind]
            entry["injected"] += 1
            entry["in_flight"] += in_flight
        for kind in {kind for kind, _ in run["injected"]}:
            entry = by_fault[kind]
            entry["runs"] += 1
            entry["lost"] += run["lost"]
            entry["double"] += run["double"]
            entry["exact"] = entry["exact"] and run["exact"]
    failed = sorted({f"seed {run['seed']}" for run in RESULTS if not run["passed"]} | set(FAILED_TESTS))
    lines = [
        "# Reliability",
        "",
        "Produced by `make test-faults` (tests/fault/): each run submits a generated programme to the real",
        "stack (Kafka, PostgreSQL, four services, two replicas of eligibility and disbursement, a provider",
        "with transient failures) while a seeded plan kills services with SIGKILL and restarts the broker",
        "and the database. Further runs publish malformed, oversized, wrong-schema, duplicate and",
        "out-of-order messages on every consumed topic, replay every topic from offset 0, upload eight",
        "large batches at once while eligibility is stopped, and freeze a disbursement replica past its",
        "session timeout. After draining, every figure is checked against the programme's ground truth.",
        "",
        f"Runs: {len(RESULTS)} (seeds {', '.join(str(run['seed']) for run in RESULTS)}). Failed: {', '.join(failed) or 'none'}.",
        "",
        "| fault | times injected | rows in flight | rows lost | double payments | reach exact |",
        "|---|---|---|---|---|---|",
    ]
    for kind in sorted(by_fault):
        entry = by_fault[kind]
        lines.append(
            f"| {kind} | {entry['injected']} | {entry['in_flight']} | {entry['lost']} | {entry['double']} | {'yes' if entry['exact'] else 'no'} |"
        )
    lines += ["", "Rows in flight: accepted rows without a final state at the moment of each injection.", ""]
    REPORT.write_text("\n".join(lines))
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(
            f"fault runs: {len(RESULTS)}; failed: {', '.join(failed) or 'none'}; table in {REPORT}"
        )
