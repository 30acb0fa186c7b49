"""`relief partners add|revoke`, `relief submit` and `relief status` against the running service."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.integration.intake.intake_support import HEADER, csv_file, row


def relief(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.child_environment()}
    return subprocess.run(
        [sys.executable, "-m", "relief_cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_partner_submits_a_file_and_follows_its_status(make_settings, start_service, tmp_path):
    settings = make_settings()
    added = relief(settings, "partners", "add", "--name", "CSO Philippines", "--json")
    assert added.returncode == 0, added.stderr
    partner = json.loads(added.stdout)
    assert partner["api_key"].startswith(f"rk_{partner['partner_id']}_")
    intake = start_service("intake", settings)
    assert intake.url == settings.service_url("intake")

    batch = tmp_path / "batch.csv"
    batch.write_bytes(csv_file([row("PH-1"), row("PH-2", phone="12345"), row("PH-3", consent="no")]))
    submitted = relief(settings, "submit", str(batch), "--partner-key", partner["api_key"], "--json")
    assert submitted.returncode == 0, submitted.stderr
    result = json.loads(submitted.stdout)
    assert (result["accepted"], result["rejected"]) == (1, 2)
    assert [(e["row"], e["column"]) for e in result["errors"]] == [(2, "phone"), (3, "consent")]
    assert "E.164" in result["errors"][0]["message"]

    human = relief(settings, "submit", str(batch), "--partner-key", partner["api_key"])
    assert "0 accepted, 3 rejected" in human.stdout
    assert "row 1, partner_ref: partner_ref is already used in an earlier batch" in human.stdout
    assert human.returncode == 1  # nothing accepted

    status = relief(settings, "status", result["batch_id"], "--partner-key", partner["api_key"], "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert {
        k: counts[k]
        for k in ("accepted", "rejected", "eligible", "ineligible", "duplicate", "paid", "failed", "pending")
    } == {
        "accepted": 1,
        "rejected": 2,
        "eligible": 0,
        "ineligible": 0,
        "duplicate": 0,
        "paid": 0,
        "failed": 0,
        "pending": 1,
    }

    big = tmp_path / "big.csv"  # over 1 MiB: uploaded in chunks with progress on stderr
    big.write_bytes(csv_file([row(f"PH-BIG-{i:05d}") for i in range(8000)]))
    assert big.stat().st_size > 1024 * 1024
    bulk = relief(settings, "submit", str(big), "--partner-key", partner["api_key"], "--json")
    assert bulk.returncode == 0, bulk.stderr
    assert (json.loads(bulk.stdout)["accepted"], json.loads(bulk.stdout)["errors"]) == (8000, [])
    assert "validating rows" in bulk.stderr

    refused_file = tmp_path / "wrong.csv"
    refused_file.write_text(HEADER + ",notes\nPH-9\n", encoding="utf-8")
    refused = relief(settings, "submit", str(refused_file), "--partner-key", partner["api_key"], "--json")
    assert refused.returncode == 1
    body = json.loads(refused.stdout)
    assert (body["batch_id"], body["accepted"], body["errors"][0]["column"]) == (None, 0, "notes")
    assert "unknown column 'notes'" in body["errors"][0]["message"]

    revoked = relief(settings, "partners", "revoke", partner["partner_id"], "--json")
    assert json.loads(revoked.stdout) == {"partner_id": partner["partner_id"], "revoked": True}
    after = relief(settings, "status", result["batch_id"], "--partner-key", partner["api_key"])
    assert after.returncode == 1 and "unknown or revoked API key" in after.stderr


def test_an_unreachable_database_or_service_is_exit_code_75_so_scripts_can_try_again(make_settings):
    from tests.conftest import free_port

    closed = free_port()  # nothing listens here
    settings = make_settings(database_url=f"postgresql+psycopg://relief@127.0.0.1:{closed}/relief")
    added = relief(settings, "partners", "add", "--name", "CSO Philippines", "--json")
    assert added.returncode == 75, (added.returncode, added.stderr)
    assert "cannot open intake's database" in added.stderr
    assert added.stdout == ""
    # no service runs at the settings' ports either: a refused connection is 75 too
    for args in (("status", "b_x", "--partner-key", "k"), ("payments", "--finance-key", "k"), ("report",)):
        answer = relief(settings, *args)
        assert answer.returncode == 75, (args, answer.returncode, answer.stderr)
        assert "cannot reach" in answer.stderr and "relief up" in answer.stderr
