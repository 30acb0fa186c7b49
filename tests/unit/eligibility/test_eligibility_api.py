"""The review queue over HTTP and from the `relief reviews` commands, with a stand-in for intake's key check."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from relief_cli import review_commands
from relief_cli.main import app as cli
from services.eligibility.api import STATUS_FILTERS, build_router
from shared.auth import AuthError, Principal, bearer_token
from shared.logging import configure_logging

KEYS = {
    "rk_pfin_secret": Principal("pfin", "Finance Officer", "finance"),
    "rk_pcso_secret": Principal("pcso", "CSO One", "partner"),
}


class FakeAuthenticator:
    """Answers like intake's /v1/whoami would for the keys above."""

    async def authenticate(self, authorization, *, role=None):
        principal = KEYS.get(bearer_token(authorization))
        if principal is None:
            raise AuthError(401, "unknown or revoked API key")
        if role is not None and principal.role != role:
            raise AuthError(403, f"this action needs a {role} key")
        return principal


FINANCE = {"Authorization": "Bearer rk_pfin_secret"}


@pytest.fixture(autouse=True)
def logs_on_stderr():
    """As in a service process: logs go to stderr, so stdout holds only the command's JSON."""
    configure_logging("eligibility", "WARNING")


@pytest.fixture
def api(harness, row):
    harness.apply(
        row("Siti", "Rahmah", nationality="IDN", partner="p1", country="HK"),
        row("Siti", "Rahma", nationality="IDN", partner="p2", country="MY"),
    )
    woken = []
    app = FastAPI()
    app.include_router(
        build_router(harness.eligibility, FakeAuthenticator(), after_commit=lambda: woken.append(1))
    )
    client = TestClient(app)
    client.woken = woken
    return client


def test_the_review_queue_needs_a_finance_key(api):
    assert api.get("/v1/reviews").status_code == 401
    assert (
        api.get("/v1/reviews", headers={"Authorization": "Bearer rk_nobody_x"}).json()["code"]
        == "unauthorized"
    )
    refused = api.get("/v1/reviews", headers={"Authorization": "Bearer rk_pcso_secret"})
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")


def test_open_flags_are_listed_with_both_persons_rows_partners_and_country(api):
    body = api.get("/v1/reviews", headers=FINANCE).json()
    assert body["count"] == 1
    [review] = body["reviews"]
    assert review["status"] == "open" and review["country"] == "MY"
    assert len(set(review["person_ids"])) == 2 and len(review["row_ids"]) == 2
    assert review["partners"] == ["Partner P1", "Partner P2"]
    assert [r["country"] for r in review["rows"]] == ["HK", "MY"]


def test_same_person_over_http_merges_and_records_who_and_why(api, harness):
    [review] = api.get("/v1/reviews", headers=FINANCE).json()["reviews"]
    response = api.post(
        f"/v1/reviews/{review['review_id']}",
        headers=FINANCE,
        json={"resolution": "same_person", "reason": "same employer letter"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        body["status"] == "same_person"
        and body["resolved_by"] == "pfin"
        and body["reason"] == "same employer letter"
    )
    assert body["merge"]["survivor_person_id"] == review["person_ids"][0]
    assert body["merge"]["merged_person_id"] == review["person_ids"][1]
    assert api.woken == [1]  # the outbox relay is told at once
    assert api.get("/v1/reviews", headers=FINANCE).json()["count"] == 0
    assert api.get("/v1/reviews?status=same_person", headers=FINANCE).json()["count"] == 1
    undo = api.post(
        f"/v1/reviews/{review['review_id']}", headers=FINANCE, json={"resolution": "distinct", "reason": "x"}
    )
    assert (undo.status_code, undo.json()["code"]) == (409, "already_one_person")


def test_a_malformed_decision_or_unknown_review_is_refused_plainly(api):
    [review] = api.get("/v1/reviews", headers=FINANCE).json()["reviews"]
    bad = api.post(
        f"/v1/reviews/{review['review_id']}", headers=FINANCE, json={"resolution": "maybe", "reason": "x"}
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_body")
    assert "resolution" in bad.json()["message"]
    empty = api.post(
        f"/v1/reviews/{review['review_id']}", headers=FINANCE, json={"resolution": "distinct", "reason": ""}
    )
    assert empty.status_code == 422
    missing = api.post("/v1/reviews/nope", headers=FINANCE, json={"resolution": "distinct", "reason": "x"})
    assert (missing.status_code, missing.json()["code"]) == (404, "review_not_found")
    assert api.get("/v1/reviews?status=whatever", headers=FINANCE).json()["code"] == "bad_status"
    assert api.get("/v1/reviews?limit=0", headers=FINANCE).json()["code"] == "bad_limit"
    assert api.get("/v1/reviews?status=all&limit=1", headers=FINANCE).json()["count"] == 1


def test_relief_reviews_list_and_resolve_print_one_json_object(api, monkeypatch):
    monkeypatch.setattr(review_commands, "_client", lambda settings: api)
    runner = CliRunner()
    listed = runner.invoke(cli, ["reviews", "list", "--finance-key", "rk_pfin_secret", "--json"])
    assert listed.exit_code == 0, listed.output
    [review] = json.loads(listed.stdout)["reviews"]
    resolved = runner.invoke(
        cli,
        ["reviews", "resolve", review["review_id"], "--distinct", "--reason", "different employers",
         "--finance-key", "rk_pfin_secret", "--json"],
    )  # fmt: skip
    assert resolved.exit_code == 0, resolved.output
    assert json.loads(resolved.stdout)["status"] == "distinct"


def test_relief_reviews_resolve_needs_exactly_one_resolution_and_reports_refusals(api, monkeypatch):
    monkeypatch.setattr(review_commands, "_client", lambda settings: api)
    runner = CliRunner()
    both = runner.invoke(
        cli,
        ["reviews", "resolve", "r1", "--distinct", "--same-person", "--reason", "x", "--finance-key", "k"],
    )
    assert both.exit_code == 2
    refused = runner.invoke(cli, ["reviews", "list", "--finance-key", "rk_pcso_secret", "--json"])
    assert refused.exit_code == 1
    assert json.loads(refused.stdout) == {
        "error": "this action needs a finance key",
        "status": 403,
        "reason": "forbidden",
    }


def test_every_review_status_fits_its_column_on_postgresql():
    # SQLite ignores VARCHAR lengths; PostgreSQL refused `already_one_person` in a 16-character column.
    from services.eligibility.store import Review

    length = Review.__table__.c.status.type.length  # type: ignore[attr-defined]
    statuses = [status for status in STATUS_FILTERS if status != "all"]
    assert "already_one_person" in statuses
    assert all(len(status) <= length for status in statuses)
