"""The reporting service as a real process on PostgreSQL and the real broker: the reach it reports
from published decisions and payments, and that replaying every input topic changes nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import httpx
from kafka import KafkaAdminClient

from services.reporting.domain import reach_document
from shared.kafka import consumer_lag
from shared.topics import DISBURSEMENT_PAYMENTS, ELIGIBILITY_DECIDED
from tests.integration.reporting.reporting_feed import (
    expected_reach,
    programme,
    publish,
    reach_of,
    wait_until,
    without_as_of,
)


def reporting_lag(settings) -> int:
    topics = [settings.topic(ELIGIBILITY_DECIDED.name), settings.topic(DISBURSEMENT_PAYMENTS.name)]
    return sum(consumer_lag(settings, {settings.group_id("reporting"): topics}).values())


def figures(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "as_of"}


async def test_reach_is_deduplicated_exact_and_unchanged_by_replaying_every_input_topic(
    make_settings, postgres, start_service, test_id
):
    settings = make_settings("postgres", postgres)
    events = programme()
    expected = figures(reach_document(expected_reach(events), datetime.now(UTC)))
    await publish(settings, events)
    service = start_service("reporting", settings)

    await wait_until(lambda: reporting_lag(settings) == 0 and figures(reach_of(service.url)) == expected)
    first = httpx.get(f"{service.url}/v1/reach").content
    report = json.loads(first)

    # Anna, helped by Tenaganita in Malaysia and by Mission for Migrant Workers in Hong Kong, adds
    # one person to the total and one to each of her countries and partners.
    without_anna = reach_document(
        expected_reach([e for e in events if "anna" not in getattr(e, "person_id", "")]), datetime.now(UTC)
    )
    assert report["beneficiaries_reached"] == without_anna["beneficiaries_reached"] + 1
    assert report["by_country"]["MY"] == without_anna["by_country"]["MY"] + 1
    assert report["by_country"]["HK"] == without_anna["by_country"]["HK"] + 1
    assert report["by_partner"]["Tenaganita"] == without_anna["by_partner"]["Tenaganita"] + 1
    assert (
        report["by_partner"]["Mission for Migrant Workers"]
        == without_anna["by_partner"]["Mission for Migrant Workers"] + 1
    )
    assert report["people_reached"] == without_anna["people_reached"] + 5  # her largest household
    assert sum(report["by_sex"].values()) == report["beneficiaries_reached"]
    assert sum(report["by_country"].values()) > report["beneficiaries_reached"]  # some in two countries
    assert report["duplicates_detected"] > 0

    # Replay 1: every input event published again (a producer retry, an outbox republish).
    await publish(settings, events)
    await wait_until(lambda: reporting_lag(settings) == 0)
    assert without_as_of(httpx.get(f"{service.url}/v1/reach").content) == without_as_of(first)

    # Replay 2: a fresh instance with its own empty database reads both topics from offset 0.
    service.stop()
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        admin.delete_groups([settings.group_id("reporting")])
    finally:
        admin.close()
    fresh_settings = settings.model_copy(
        update={
            "database_url": f"postgresql+psycopg://relief@127.0.0.1:{postgres.port}/t{test_id}fresh",
            "data_dir": settings.data_dir.parent / "fresh",
        }
    )
    fresh = start_service("reporting", fresh_settings, replica=1)
    await wait_until(lambda: reporting_lag(fresh_settings) == 0 and figures(reach_of(fresh.url)) == expected)
    assert without_as_of(httpx.get(f"{fresh.url}/v1/reach").content) == without_as_of(first)

    # The CLI reads the same report; --json prints exactly one JSON object.
    environment = {**os.environ, **fresh_settings.child_environment()}
    printed = subprocess.run(
        [sys.executable, "-m", "relief_cli.main", "report", "--json"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=True,
    )
    assert figures(json.loads(printed.stdout)) == expected

    table = subprocess.run(
        [sys.executable, "-m", "relief_cli.main", "report"], capture_output=True, text=True,
        env={**environment, "COLUMNS": "160"}, timeout=60, check=True,
    )  # fmt: skip
    assert f"{expected['beneficiaries_reached']:,}" in table.stdout
    assert "distinct people with at least one delivered assistance" in table.stdout

    exported = subprocess.run(
        [sys.executable, "-m", "relief_cli.main", "report", "--csv", "--min-cell", "5", "--hxl"],
        capture_output=True, text=True, env=environment, timeout=60, check=True,
    )  # fmt: skip
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows[1][0].startswith("#indicator")
    persons = [row[rows[0].index("persons")] for row in rows[2:]]
    assert not any(value in {"1", "2", "3", "4"} for value in persons)


async def test_csv_export_suppresses_small_cells_and_carries_hxl_over_http(make_settings, start_service):
    settings = make_settings()
    events = programme(persons=30, seed=3)
    await publish(settings, events)
    service = start_service("reporting", settings)
    expected = expected_reach(events)
    await wait_until(lambda: reach_of(service.url)["beneficiaries_reached"] == expected.beneficiaries_reached)

    response = httpx.get(f"{service.url}/v1/reach.csv", params={"min_cell": 5, "hxl": 1})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows[0]["figure"].startswith("#")  # the HXL row
    by_country = {row["group"]: row["persons"] for row in rows[1:] if row["breakdown"] == "by_country"}
    for country, persons in expected.by_country.items():
        assert by_country[country] == ("<5" if 0 < persons < 5 else str(persons))

    plain = list(csv.DictReader(io.StringIO(httpx.get(f"{service.url}/v1/reach.csv").text)))
    assert plain[0]["figure"] == "beneficiaries_reached"
    assert plain[0]["persons"] == str(expected.beneficiaries_reached)

    assert httpx.get(f"{service.url}/v1/reach.csv", params={"min_cell": 0}).status_code == 422
