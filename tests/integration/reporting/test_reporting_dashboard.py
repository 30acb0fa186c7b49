"""The dashboard, rendered by headless Chromium (Debian's package), shows the headline figure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.reporting.reporting_feed import (
    expected_reach,
    programme,
    publish,
    reach_of,
    wait_until,
)


def install_chromium() -> str:
    if not shutil.which("chromium") and hasattr(os, "geteuid") and os.geteuid() == 0:
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=environment, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "fonts-dejavu-core"],
            env=environment, capture_output=True, timeout=900,
        )  # fmt: skip
    binary = shutil.which("chromium")
    if not binary:
        pytest.skip("Debian's chromium package could not be installed (apt-get install -y chromium failed)")
    return binary


def reporting_lag_measured(url: str) -> float | None:
    """Reporting's own consumer lag as its /metrics page last measured it (None before then)."""
    lag = [
        sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for sample in family.samples
        if sample.name == "relief_consumer_lag" and sample.labels.get("group") == "relief-reporting"
    ]
    return sum(lag) if len(lag) == 2 else None


def chromium(binary: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", f"--user-data-dir={profile}", *arguments,
            ],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip


async def test_the_dashboard_shows_the_headline_figure_in_a_real_browser(
    make_settings, start_service, tmp_path
):
    binary = install_chromium()
    settings = make_settings()
    events = programme(persons=900, seed=2026)
    await publish(settings, events)
    service = start_service("reporting", settings)
    expected = expected_reach(events)
    await wait_until(lambda: reach_of(service.url)["beneficiaries_reached"] == expected.beneficiaries_reached)
    # Pipeline health is measured every few seconds; wait until it has seen reporting caught up.
    await wait_until(lambda: reporting_lag_measured(service.url) == 0, timeout=30)

    dom = chromium(binary, "--dump-dom", f"{service.url}/dashboard")
    assert dom.returncode == 0, dom.stderr[-2000:]
    headline = re.search(r'id="beneficiaries-reached">([^<]*)<', dom.stdout)
    assert headline is not None, dom.stdout[:2000]
    assert headline.group(1) == f"{expected.beneficiaries_reached:,}"
    people = re.search(r'id="people-reached">([^<]*)<', dom.stdout)
    assert people is not None and people.group(1) == f"{expected.people_reached:,}"
    assert "Reach by country" in dom.stdout and "<svg" in dom.stdout
    assert "Pipeline health" in dom.stdout
    assert "http://" not in re.sub(
        r'xmlns="http://www.w3.org/2000/svg"', "", dom.stdout
    )  # nothing from elsewhere

    screenshot = tmp_path / "dashboard.png"
    shot = chromium(
        binary, f"--screenshot={screenshot}", "--window-size=1280,1000", f"{service.url}/dashboard"
    )
    assert screenshot.exists(), shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
