"""Puts a generated programme through a running stack the way partners would: over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_random_exponential,
)

from relief_cli.drain import PipelineProbe, wait_until_drained
from relief_cli.generator import Programme
from relief_cli.output import EXIT_UNAVAILABLE
from shared.settings import Settings


class ProgrammeError(RuntimeError):
    pass


def _last_result(state: RetryCallState) -> Any:
    """When the attempts run out, hand back the last answer so its error is reported."""
    assert state.outcome is not None
    return state.outcome.result()


def create_partner(
    settings: Settings, name: str, role: str = "partner", *, attempts: int = 30
) -> dict[str, Any]:
    """`relief partners add --json`, run as a user would run it; tried again while intake's
    database is unreachable (exit code 75: nothing was written)."""
    env = {**os.environ, **settings.child_environment()}

    @retry(
        retry=retry_if_result(lambda result: result.returncode == EXIT_UNAVAILABLE),
        wait=wait_random_exponential(multiplier=0.3, max=5),
        stop=stop_after_attempt(attempts),
        retry_error_callback=_last_result,
    )
    def add() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relief_cli.main", "partners", "add", "--name", name, "--role", role, "--json"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip

    result = add()
    if result.returncode != 0:
        raise ProgrammeError(f"creating partner {name!r} failed: {result.stderr.strip()[-500:]}")
    return dict(json.loads(result.stdout))


class _Unavailable(Exception):
    pass


def submit_batch(settings: Settings, api_key: str, csv_text: str, *, attempts: int = 30) -> dict[str, Any]:
    """Upload one batch; retry while intake is unreachable, under one Idempotency-Key, so a retry
    after a lost answer returns the first result instead of creating a second batch."""
    body = csv_text.encode()
    idempotency_key = hashlib.sha256(body).hexdigest()[:32]

    @retry(
        retry=retry_if_exception_type(_Unavailable),
        wait=wait_random_exponential(multiplier=0.3, max=5),
        stop=stop_after_attempt(attempts),
        reraise=True,
    )
    def post() -> httpx.Response:
        try:
            response = httpx.post(
                f"{settings.service_url('intake')}/v1/batches",
                content=body,
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "text/csv",
                    "Idempotency-Key": idempotency_key,
                },
                timeout=300.0,
            )
        except httpx.TransportError as error:
            raise _Unavailable(str(error)) from error
        if response.status_code in (429, 502, 503, 504):
            raise _Unavailable(f"intake answered {response.status_code}")
        return response

    try:
        response = post()
    except _Unavailable as error:
        raise ProgrammeError(f"intake unreachable: {error}") from None
    if response.status_code >= 400:
        raise ProgrammeError(f"batch refused ({response.status_code}): {response.text[:500]}")
    return dict(response.json())


def run_programme(
    settings: Settings,
    programme: Programme,
    *,
    timeout: float = 900.0,
    on_batch: Callable[[int, dict[str, Any]], None] | None = None,
    on_submitted: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Create the partners, then submit each batch and drain before the next.

    Partners submit one after another, as in the field; draining between batches makes "the first
    approval wins" follow submission order, so the outcome is exactly the programme's ground truth.
    Returns intake's answer for every batch.
    """
    keys = {name: create_partner(settings, name)["api_key"] for name in programme.partners}
    results = []
    with PipelineProbe(settings) as probe:
        for index, batch in enumerate(programme.batches):
            result = submit_batch(settings, keys[batch.partner_name], batch.to_csv())
            results.append(result)
            if on_submitted is not None:
                on_submitted(index, result)  # the batch's rows are now on their way (fault tests strike here)
            state = wait_until_drained(settings, timeout, progress=False, settle=0.3, probe=probe)
            if not state.get("drained"):
                raise ProgrammeError(f"the pipeline did not drain within {timeout:.0f}s: {state}")
            if on_batch is not None:
                on_batch(index, result)
    return results


def fetch_reach(settings: Settings) -> dict[str, Any]:
    response = httpx.get(f"{settings.service_url('reporting')}/v1/reach", timeout=30.0)
    response.raise_for_status()
    return dict(response.json())
