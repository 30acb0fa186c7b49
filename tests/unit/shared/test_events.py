"""Events: versioned envelopes, and a single door that refuses anything malformed."""

from datetime import UTC, date

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import UPCASTERS, EligibilityDecided, PersonsMerged, PoisonMessage, parse_event


def test_an_event_round_trips_through_its_bytes():
    event = PersonsMerged(survivor_person_id="p1", merged_person_id="p2", cause="review", review_id="r1")
    assert parse_event(event.to_bytes()) == event
    envelope = orjson.loads(event.to_bytes())
    assert envelope["event_type"] == "persons.merged" and envelope["schema_version"] == 1
    assert envelope["event_id"] and envelope["occurred_at"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"event_type": "nope", "schema_version": 1}', "unknown event_type"),
        (b'{"event_type": "persons.merged", "schema_version": 2}', "unsupported schema_version"),
        (b'{"event_type": "persons.merged", "schema_version": 1, "event_id": "x"}', "invalid persons.merged"),
        (b"x" * 300_000, "exceeds"),
    ],
)
def test_malformed_messages_are_poison_with_a_reason(raw, reason):
    with pytest.raises(PoisonMessage, match=reason):
        parse_event(raw)


def test_an_event_on_the_wrong_topic_is_poison():
    event = PersonsMerged(survivor_person_id="p1", merged_person_id="p2", cause="review")
    with pytest.raises(PoisonMessage, match="does not belong"):
        parse_event(event.to_bytes(), allowed=())


def test_old_versions_are_upcast_when_read(monkeypatch):
    monkeypatch.setattr(PersonsMerged, "schema_version", 2)
    monkeypatch.setitem(UPCASTERS, ("persons.merged", 1), lambda body: {**body, "cause": "identity_rule"})
    old = b'{"event_type": "persons.merged", "schema_version": 1, "survivor_person_id": "a", "merged_person_id": "b", "cause": "review"}'
    assert parse_event(old).cause == "identity_rule"


def test_event_ids_stay_unique_whoever_seeds_the_random_module():
    import random
    import uuid

    from shared.events import new_event_id

    random.seed(7)
    first = [new_event_id() for _ in range(1000)]
    random.seed(7)
    second = [new_event_id() for _ in range(1000)]
    assert len(set(first) | set(second)) == 2000
    assert all(uuid.UUID(value).version == 4 for value in first)
    assert all(uuid.UUID(value).variant == uuid.RFC_4122 for value in first)
    assert all(str(uuid.UUID(value)) == value for value in first)  # the canonical text form


def test_a_version_1_registration_is_read_as_version_2_without_a_block():
    from shared.events import BeneficiaryRegistered

    old = {
        "event_type": "beneficiary.registered", "schema_version": 1, "row_id": "r1", "batch_id": "b1",
        "partner_id": "p1", "partner_name": "P", "document_key": None, "name_key": "k" * 64,
        "near_keys": ["n" * 64], "sex": "F", "age_years": 30, "nationality": "VNM", "country": "MY",
        "household_size": 2, "vulnerabilities": [], "assistance": "food_kit", "payout_method": None,
        "payout_account_sealed": None, "registered_on": "2026-01-20",
    }  # fmt: skip
    event = parse_event(old)
    assert isinstance(event, BeneficiaryRegistered)
    assert event.block_key is None and event.near_keys == ["n" * 64]
    assert event.envelope()["schema_version"] == 2
    body = {**old, "schema_version": 2}
    with pytest.raises(PoisonMessage, match="block_key"):
        parse_event(body)  # version 2 must say which block, even if none


@settings(max_examples=300)
@given(
    text=st.text(),
    words=st.lists(st.text(max_size=6), max_size=3),
    at=st.datetimes(timezones=st.just(UTC)),
    amount=st.none() | st.integers(0, 10**15),
)
def test_an_events_bytes_are_its_envelope_as_json(text, words, at, amount):
    event = EligibilityDecided(
        row_id="B1-1", batch_id="B1", partner_id="p1", partner_name=text, person_id="P1", decision="eligible",
        reasons=words, policy_version="v1", cycle="2026-11", assistance="cash_relief", country="MY", sex="F",
        age_years=34, household_size=3, registered_on=date(2026, 1, 2), amount_minor=amount, currency="MYR",
        payout_method="e_wallet", payout_account_sealed=None, occurred_at=at,
    )  # fmt: skip
    assert event.to_bytes() == orjson.dumps(event.envelope())
    assert parse_event(event.to_bytes()) == event  # straight from JSON
    assert parse_event(orjson.loads(event.to_bytes())) == event  # through a dictionary


def test_bytes_that_open_like_an_event_but_break_it_get_the_reason():
    event = PersonsMerged(survivor_person_id="p1", merged_person_id="p2", cause="review")
    raw = event.to_bytes()
    with pytest.raises(PoisonMessage, match="invalid persons.merged: cause"):
        parse_event(raw.replace(b'"review"', b'"guess"'))
    with pytest.raises(PoisonMessage, match="invalid persons.merged: surprise"):
        parse_event(raw[:-1] + b',"surprise":1}')
    with pytest.raises(PoisonMessage, match="not JSON"):
        parse_event(raw[:-1])
    with pytest.raises(PoisonMessage, match="invalid persons.merged: merged_person_id: Field required"):
        parse_event(raw.replace(b'"merged_person_id":"p2",', b""))
    with pytest.raises(
        PoisonMessage, match="invalid persons.merged: occurred_at: Input should be a valid datetime"
    ):
        parse_event(raw.replace(b'"occurred_at":"', b'"occurred_at":"noon '))


def _registration(**changes):
    from shared.events import BeneficiaryRegistered

    fields = dict(
        row_id="r1", batch_id="b1", partner_id="p1", partner_name="P", document_key=None, name_key="k",
        block_key="b", near_keys=["n1", "n2"], sex="F", age_years=30, nationality="VNM", country="MY",
        household_size=2, vulnerabilities=[], assistance="food_kit", payout_method=None,
        payout_account_sealed=None, registered_on=date(2026, 1, 20),
    )  # fmt: skip
    return BeneficiaryRegistered(**{**fields, **changes})


def _with(event, **values):
    """The event's bytes with some values replaced, whatever the model would say about them."""
    body = {**orjson.loads(event.to_bytes()), **values}
    head, rest = event.to_bytes().split(b'"schema_version":2,', 1)
    assert head == b'{"event_type":"beneficiary.registered",'
    del body["event_type"], body["schema_version"]
    return head + b'"schema_version":2,' + orjson.dumps(body)[1:]


BROKEN = [
    ("age_years", -1), ("age_years", 121), ("age_years", 30.5),
    ("household_size", 0), ("household_size", 31), ("nationality", "vnm"), ("nationality", "VNMX"), ("nationality", "VNM\n"),
    ("country", "MYS"), ("block_key", ""), ("block_key", "b" * 65), ("near_keys", ["n"] * 513),
    ("near_keys", ["n", 2]), ("event_id", ""), ("event_id", "e" * 65), ("sex", "Q"), ("assistance", "cash"),
    ("payout_method", "cheque"), ("registered_on", "2026-13-01"), ("occurred_at", "yesterday"),
    ("row_id", None), ("vulnerabilities", "none"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), BROKEN)
def test_bytes_breaking_a_constraint_are_refused_on_the_fast_path_too(field, value):
    """The struct that decodes the newest envelope carries every constraint of the model."""
    raw = _with(_registration(), **{field: value})
    with pytest.raises(PoisonMessage, match=f"invalid beneficiary.registered: {field}"):
        parse_event(raw)


@pytest.mark.parametrize(
    ("field", "value"),
    [("age_years", 0), ("age_years", 120), ("household_size", 30), ("block_key", "b" * 64),
     ("near_keys", ["n"] * 512), ("event_id", "e" * 64), ("block_key", None), ("payout_method", "cash_pickup")],
)  # fmt: skip
def test_bytes_at_a_constraints_edge_are_read(field, value):
    event = parse_event(_with(_registration(), **{field: value}))
    assert getattr(event, field) == value
    assert parse_event(event.to_bytes()) == event
