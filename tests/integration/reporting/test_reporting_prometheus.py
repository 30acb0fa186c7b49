"""A real Prometheus server (Debian's package) scrapes the reporting service: PromQL gives the
same beneficiaries_reached as /v1/reach, and `promtool check metrics` accepts the /metrics page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.reporting.reporting_feed import (
    expected_reach,
    free_port,
    programme,
    publish,
    reach_of,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def install_prometheus() -> tuple[str, str]:
    """The prometheus and promtool binaries, installed from Debian's package when missing."""
    if (
        not (shutil.which("prometheus") and shutil.which("promtool"))
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
    ):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=environment, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
            env=environment, capture_output=True, timeout=900,
        )  # fmt: skip
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prometheus and promtool):
        pytest.skip(
            "Debian's prometheus package could not be installed (apt-get install -y prometheus failed)"
        )
    return prometheus, promtool


@pytest.fixture(scope="module")
def prometheus_binaries() -> tuple[str, str]:
    return install_prometheus()


class PrometheusServer:
    def __init__(self, binary: str, root: Path, targets: list[str]) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.config = root / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: relief\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        log = open(self.root / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready: " + (self.root / "prometheus.log").read_text()[-2000:])

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def prometheus_server(
    tmp_path: Path, prometheus_binaries
) -> Iterator[Callable[[list[str]], PrometheusServer]]:
    servers: list[PrometheusServer] = []

    def start(targets: list[str]) -> PrometheusServer:
        root = tmp_path / f"prometheus-{len(servers)}"
        root.mkdir()
        server = PrometheusServer(prometheus_binaries[0], root, targets)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


async def test_prometheus_scrapes_reach_equal_to_the_json_report(
    make_settings, start_service, prometheus_binaries, prometheus_server
):
    settings = make_settings()
    events = programme(persons=120, seed=11)
    await publish(settings, events)
    service = start_service("reporting", settings)
    expected = expected_reach(events)
    report = await wait_until(
        lambda: (
            (body := reach_of(service.url))["beneficiaries_reached"] == expected.beneficiaries_reached
            and body
        )
    )

    # promtool accepts the exposition page as served.
    page = httpx.get(f"{service.url}/metrics").text
    checked = subprocess.run(
        [prometheus_binaries[1], "check", "metrics"], input=page, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    server = prometheus_server([f"127.0.0.1:{settings.reporting_port}"])

    def scraped() -> list[dict]:
        return server.query("relief_beneficiaries_reached")

    result = await wait_until(scraped, timeout=30)
    assert int(float(result[0]["value"][1])) == report["beneficiaries_reached"]
    assert result[0]["metric"]["job"] == "relief"

    people = server.query("relief_people_reached")
    assert int(float(people[0]["value"][1])) == report["people_reached"]
    by_country = {
        r["metric"]["country"]: int(float(r["value"][1])) for r in server.query("relief_reached_by_country")
    }
    assert by_country == report["by_country"]
    disbursed = {
        r["metric"]["currency"]: int(float(r["value"][1])) for r in server.query("relief_disbursed_minor")
    }
    assert disbursed == {currency: item["amount_minor"] for currency, item in report["disbursed"].items()}

    # Whole-pipeline health: lag per consumer group and topic (reporting has read everything).
    def reporting_lag() -> list[dict]:
        lag = server.query('relief_consumer_lag{group="relief-reporting"}')
        return lag if lag and all(float(r["value"][1]) == 0 for r in lag) else []

    lag = await wait_until(reporting_lag, timeout=40)
    assert {r["metric"]["topic"] for r in lag} == {"eligibility.decided", "disbursement.payments"}
    groups = {r["metric"]["group"] for r in server.query("relief_consumer_lag")}
    assert groups == {"relief-intake", "relief-eligibility", "relief-disbursement", "relief-reporting"}
    dead = server.query("relief_dead_letter_messages")
    assert {r["metric"]["topic"] for r in dead} >= {"eligibility.decided.dlq", "disbursement.payments.dlq"}

    # Every query of the Grafana dashboard is valid PromQL on this server; the reach panels have data.
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "dashboards" / "relief.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            result = server.query(target["expr"])
            if "reach" in panel["title"].lower() and "over time" not in panel["title"].lower():
                assert result, f"no data for {panel['title']}: {target['expr']}"


def test_the_deployed_prometheus_configuration_and_alert_rules_are_valid(prometheus_binaries):
    promtool = prometheus_binaries[1]
    config = subprocess.run(
        [promtool, "check", "config", str(REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
