"""The review queue end to end: real intake checks the finance key, `relief reviews` drives eligibility,
and a reviewer's `same_person` goes out on the broker as PersonsMerged."""

from __future__ import annotations

import json
import subprocess
import sys

from shared.events import PersonsMerged

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]


def relief(settings, *args: str) -> tuple[int, dict]:
    env = {**__import__("os").environ, **settings.child_environment()}
    done = subprocess.run(
        [sys.executable, "-m", "relief_cli.main", *args, "--json"],
        env=env, cwd=REPO_ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"not one JSON object: {done.stdout!r} / {done.stderr[-2000:]!r}") from error


def test_a_reviewers_same_person_on_a_flagged_pair_merges_them_and_is_published(
    make_settings, start_service, row, decided_reader, kit
):
    settings = make_settings()
    start_service("intake", settings)
    start_service("eligibility", settings)
    code, finance = relief(settings, "partners", "add", "--name", "Finance Officer", "--role", "finance")
    assert code == 0, finance
    code, partner = relief(settings, "partners", "add", "--name", "CSO One")
    assert code == 0, partner

    reader = decided_reader(settings)
    siti = row("Siti", "Rahmah", nationality="IDN", partner="p1", country="HK")
    sity = row("Siti", "Rahma", nationality="IDN", partner="p2", country="MY")
    kit.publish(settings, [siti])
    reader.wait_for_decisions([siti.row_id])
    kit.publish(settings, [sity])
    decided = reader.wait_for_decisions([sity.row_id])
    first, second = decided[siti.row_id], decided[sity.row_id]
    assert first.person_id != second.person_id
    assert first.decision == second.decision == "eligible"  # both paid as far as anyone knew

    code, refused = relief(settings, "reviews", "list", "--finance-key", partner["api_key"])
    assert (code, refused["status"]) == (1, 403)
    code, listed = relief(settings, "reviews", "list", "--finance-key", finance["api_key"])
    assert code == 0, listed
    [review] = listed["reviews"]
    assert review["row_ids"] == [siti.row_id, sity.row_id]
    assert review["person_ids"] == [first.person_id, second.person_id]
    assert review["partners"] == ["Partner P1", "Partner P2"] and review["country"] == "MY"

    code, resolved = relief(
        settings, "reviews", "resolve", review["review_id"], "--same-person",
        "--reason", "same employer and phone on both forms", "--finance-key", finance["api_key"],
    )  # fmt: skip
    assert code == 0, resolved
    assert resolved["status"] == "same_person"
    assert resolved["resolved_by"] == finance["partner_id"]
    assert resolved["history"][0]["reason"] == "same employer and phone on both forms"

    events = reader.wait_for(lambda events: any(isinstance(e, PersonsMerged) for e in events))
    [merged] = [e for e in events if isinstance(e, PersonsMerged)]
    assert (merged.survivor_person_id, merged.merged_person_id) == (first.person_id, second.person_id)
    assert (merged.cause, merged.review_id) == ("review", review["review_id"])
    [key] = [k for k, e in reader.records if isinstance(e, PersonsMerged)]
    assert key == first.person_id

    # From now on the second spelling is the first person, already assisted.
    again = row("Siti", "Rahma", nationality="IDN", partner="p3", country="MY")
    kit.publish(settings, [again])
    later = reader.wait_for_decisions([again.row_id])[again.row_id]
    assert (later.person_id, later.decision, later.duplicate_of) == (
        first.person_id,
        "duplicate",
        siti.row_id,
    )
    code, still_open = relief(settings, "reviews", "list", "--finance-key", finance["api_key"])
    assert still_open["count"] == 0
