"""API keys, batch ownership and Idempotency-Key on the real service (real PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.integration.intake.intake_support import (
    add_partner,
    bearer,
    csv_file,
    events_staged,
    query,
    revoke,
    row,
)


def test_keys_roles_and_batch_ownership(make_settings, postgres, start_service):
    settings = make_settings(database="postgres", postgres_cluster=postgres)
    partner_a, key_a = add_partner(settings, "CSO A")
    _, key_b = add_partner(settings, "CSO B")
    _, finance_key = add_partner(settings, "Finance", role="finance")
    partner_r, key_r = add_partner(settings, "CSO Revoked")
    intake = start_service("intake", settings)
    url = f"{intake.url}/v1/batches"
    body = csv_file([row("A1"), row("A2")])

    assert httpx.get(f"{intake.url}/v1/whoami", headers=bearer(key_a)).json() == {
        "partner_id": partner_a,
        "name": "CSO A",
        "role": "partner",
    }
    assert httpx.get(f"{intake.url}/v1/whoami", headers=bearer(finance_key)).json()["role"] == "finance"

    missing = httpx.post(url, content=body)
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    for wrong in ("rk_pnobody_abcdef", "not-a-key", key_a + "x", key_a.replace(partner_a, "p00000000")):
        response = httpx.post(url, content=body, headers=bearer(wrong))
        assert response.status_code == 401, wrong
        assert response.json()["message"] == "unknown or revoked API key"

    assert httpx.get(f"{intake.url}/v1/whoami", headers=bearer(key_r)).status_code == 200
    revoke(settings, partner_r)
    assert httpx.get(f"{intake.url}/v1/whoami", headers=bearer(key_r)).status_code == 401
    assert httpx.post(url, content=body, headers=bearer(key_r)).status_code == 401

    refused = httpx.post(url, content=body, headers=bearer(finance_key))
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert "partner key" in refused.json()["message"]

    created = httpx.post(url, content=body, headers=bearer(key_a))
    assert created.status_code == 201
    batch_id = created.json()["batch_id"]
    own = httpx.get(f"{url}/{batch_id}", headers=bearer(key_a))
    assert (own.status_code, own.json()["accepted"]) == (200, 2)
    foreign = httpx.get(f"{url}/{batch_id}", headers=bearer(key_b))
    unknown = httpx.get(f"{url}/b-does-not-exist", headers=bearer(key_b))
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()  # nothing tells B that the batch exists
    assert httpx.get(f"{url}/{batch_id}", headers=bearer(key_r)).status_code == 401
    assert httpx.get(f"{url}/{batch_id}").status_code == 401
    # The progress summary needs no key and says nothing about anyone.
    assert httpx.get(f"{intake.url}/v1/progress").json() == {
        "accepted": 2,
        "rejected": 0,
        "final": 0,
        "pending": 2,
        "pending_approval": 0,
    }


def test_an_idempotency_key_gives_one_batch_per_body(make_settings, postgres, start_service):
    settings = make_settings(database="postgres", postgres_cluster=postgres)
    _, key = add_partner(settings, "CSO A")
    intake = start_service("intake", settings)
    url = f"{intake.url}/v1/batches"
    body = csv_file([row("A1"), row("A2", sex="?")])
    headers = {**bearer(key), "Content-Type": "text/csv", "Idempotency-Key": "upload-2026-03-01"}

    first = httpx.post(url, content=body, headers=headers)
    second = httpx.post(url, content=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    # The same file as a multipart upload is the same body (the boundary is not part of it).
    as_file = httpx.post(
        url,
        files={"file": ("batch.csv", body, "text/csv")},
        headers={**bearer(key), "Idempotency-Key": "upload-2026-03-01"},
    )
    assert as_file.json()["batch_id"] == first.json()["batch_id"]

    other = httpx.post(url, content=csv_file([row("A3")]), headers=headers)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert query(settings, "SELECT count(*) FROM intake_batch") == [(1,)]
    assert query(settings, "SELECT count(*) FROM intake_beneficiary") == [(1,)]
    assert events_staged(settings, intake.url) == 1  # the one accepted row's, once

    # Two identical requests racing with a fresh key still make one batch.
    race = {**headers, "Idempotency-Key": "race-1"}
    fresh = csv_file([row(f"C{i}") for i in range(200)])
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, content=fresh, headers=race, timeout=60), range(2)))
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json()["batch_id"] == answers[1].json()["batch_id"]
    assert query(settings, "SELECT count(*) FROM intake_batch") == [(2,)]
    assert query(settings, "SELECT count(*) FROM intake_beneficiary") == [(201,)]

    bad_key = httpx.post(url, content=body, headers={**headers, "Idempotency-Key": "x" * 201})
    assert (bad_key.status_code, bad_key.json()["code"]) == (422, "invalid_idempotency_key")
