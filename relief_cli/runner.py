"""Puts a generated programme through a running stack the way partners would: over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx

from relief_cli.drain import wait_until_drained
from relief_cli.generator import Programme
from shared.settings import Settings


class ProgrammeError(RuntimeError):
    pass


def create_partner(settings: Settings, name: str, role: str = "partner") -> dict[str, Any]:
    """`relief partners add --json`, run as a user would run it."""
    env = {**os.environ, **settings.child_environment()}
    result = subprocess.run(
        [sys.executable, "-m", "relief_cli.main", "partners", "add", "--name", name, "--role", role, "--json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if result.returncode != 0:
        raise ProgrammeError(f"creating partner {name!r} failed: {result.stderr.strip()[-500:]}")
    return dict(json.loads(result.stdout))


def submit_batch(settings: Settings, api_key: str, csv_text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{settings.service_url('intake')}/v1/batches",
        content=csv_text.encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "text/csv"},
        timeout=300.0,
    )
    if response.status_code >= 400:
        raise ProgrammeError(f"batch refused ({response.status_code}): {response.text[:500]}")
    return dict(response.json())


def run_programme(
    settings: Settings,
    programme: Programme,
    *,
    timeout: float = 900.0,
    on_batch: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Create the partners, then submit each batch and drain before the next.

    Partners submit one after another, as in the field; draining between batches makes "the first
    approval wins" follow submission order, so the outcome is exactly the programme's ground truth.
    Returns intake's answer for every batch.
    """
    keys = {name: create_partner(settings, name)["api_key"] for name in programme.partners}
    results = []
    for index, batch in enumerate(programme.batches):
        result = submit_batch(settings, keys[batch.partner_name], batch.to_csv())
        results.append(result)
        state = wait_until_drained(settings, timeout, progress=False, settle=0.3)
        if not state.get("drained"):
            raise ProgrammeError(f"the pipeline did not drain within {timeout:.0f}s: {state}")
        if on_batch is not None:
            on_batch(index, result)
    return results


def fetch_reach(settings: Settings) -> dict[str, Any]:
    response = httpx.get(f"{settings.service_url('reporting')}/v1/reach", timeout=30.0)
    response.raise_for_status()
    return dict(response.json())
