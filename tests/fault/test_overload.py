"""Overload: every partner uploads a large batch at the same moment while eligibility is stopped
(SIGSTOP), so nothing downstream drains. Intake keeps answering (201, or 503/429 with Retry-After,
retried under the same Idempotency-Key as partners' clients do), its memory stays bounded, and
once eligibility runs again every accepted row reaches its final state with reach exactly the
ground truth."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import pytest

from relief_cli.drain import wait_until_drained
from relief_cli.generator import Batch, Programme, generate_programme, reference_reach
from relief_cli.runner import submit_batch
from relief_cli.stack import Stack
from shared.settings import Settings
from tests.fault.pipeline import new_finance_key, outcome
from tests.integration.intake.intake_support import add_partner

RSS_LIMIT_BYTES = 600 * 1024 * 1024


def one_upload_per_partner(persons: int, seed: int) -> Programme:
    """A programme where each person has one row, one batch per partner: the outcome does not
    depend on which upload lands first, so concurrent uploads still have an exact ground truth."""
    programme = generate_programme(persons, seed=seed)
    seen: set[int] = set()
    by_partner: dict[int, Batch] = {}
    for batch in programme.batches:
        for row in batch.rows:
            if row.valid and row.person.index in seen:
                continue
            if row.valid:
                seen.add(row.person.index)
            by_partner.setdefault(batch.partner, Batch(batch.partner, batch.partner_name)).rows.append(row)
    batches = [by_partner[p] for p in sorted(by_partner)]
    return Programme(programme.partners, batches, reference_reach(batches))


class Watch:
    """Samples intake's resident memory and how long it takes to answer, while the burst runs."""

    def __init__(self, settings: Settings, pid: int) -> None:
        self.settings = settings
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self.slowest_answer = 0.0
        self.unanswered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            started = time.monotonic()
            try:
                status = httpx.get(
                    f"{self.settings.service_url('intake')}/v1/progress", timeout=30
                ).status_code
                if status not in (200, 429, 503):
                    self.unanswered.append(f"progress answered {status}")
            except httpx.HTTPError as error:
                self.unanswered.append(f"{type(error).__name__}: {error}")
            self.slowest_answer = max(self.slowest_answer, time.monotonic() - started)
            self._stop.wait(0.2)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)


def run_overload(settings: Settings, persons: int, seed: int) -> dict[str, Any]:
    programme = one_upload_per_partner(persons, seed)
    stack = Stack(settings)
    stack.start()
    eligibility = [m.process for m in stack.managed if m.service == "eligibility" and m.process]
    try:
        finance_key = new_finance_key(settings)
        keys = {name: add_partner(settings, name)[1] for name in programme.partners}
        intake = next(m.process for m in stack.managed if m.service == "intake" and m.process)
        for process in eligibility:
            process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with Watch(settings, intake.pid) as watch, ThreadPoolExecutor(len(programme.batches)) as pool:
            answers = list(
                pool.map(
                    lambda b: submit_batch(settings, keys[b.partner_name], b.to_csv()), programme.batches
                )
            )
        burst_seconds = time.monotonic() - started
        for process in eligibility:
            process.send_signal(signal.SIGCONT)
        state = wait_until_drained(settings, 900, progress=False)
        result = outcome(settings, programme, state, finance_key)
    finally:
        for process in eligibility:
            process.send_signal(signal.SIGCONT)
        stack.stop()
    result.update(
        uploads=len(answers),
        rows=programme.rows,
        accepted=[a["accepted"] for a in answers],
        expected_accepted=[b.accepted for b in programme.batches],
        peak_rss_mib=watch.peak_rss / 1048576,
        slowest_answer_seconds=watch.slowest_answer,
        unanswered=watch.unanswered,
        burst_seconds=burst_seconds,
    )
    return result


def check(result: dict[str, Any]) -> None:
    summary = {k: v for k, v in result.items() if k not in ("reach", "books")}
    assert result["accepted"] == result["expected_accepted"], summary
    assert result["unanswered"] == [], summary
    assert result["slowest_answer_seconds"] < 30, summary
    assert 0 < result["peak_rss_mib"] < RSS_LIMIT_BYTES / 1048576, summary
    assert result["passed"], summary


def test_eight_concurrent_uploads_while_eligibility_is_stopped_lose_nothing(make_settings):
    """The core variant: eight partners, about 100 rows each, on SQLite."""
    check(run_overload(make_settings(), persons=800, seed=11))


@pytest.mark.fault
def test_eight_concurrent_uploads_of_thousands_of_rows_lose_nothing(make_settings, postgres, fault_results):
    settings = make_settings(database="postgres", postgres_cluster=postgres)
    result = run_overload(settings, persons=20000, seed=12)
    fault_results.append(
        {**result, "seed": 12, "injected": [("overload-8-concurrent-uploads", sum(result["accepted"]))]}
    )
    check(result)
