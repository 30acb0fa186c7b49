"""A row's fingerprint is the digest of its decision-relevant fields as sorted-key JSON: the stored
fingerprints of rows decided earlier must keep matching their redeliveries."""

import hashlib
from datetime import UTC, date, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.eligibility.handlers import FINGERPRINT_EXCLUDES, fingerprint
from shared.events import BeneficiaryRegistered, parse_event

text = st.text(min_size=1, max_size=40)
keys = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)

rows = st.builds(
    BeneficiaryRegistered,
    row_id=text,
    batch_id=text,
    partner_id=text,
    partner_name=st.text(max_size=60),
    document_key=st.none() | text,
    name_key=text,
    block_key=st.none() | text,
    near_keys=st.lists(keys, max_size=20),
    sex=st.sampled_from(["F", "M", "X"]),
    age_years=st.integers(0, 120),
    nationality=st.sampled_from(["VNM", "NPL", "IDN"]),
    country=st.sampled_from(["MY", "TH"]),
    household_size=st.integers(1, 30),
    vulnerabilities=st.lists(st.text(max_size=12), max_size=4),
    assistance=st.sampled_from(["cash_relief", "food_kit"]),
    payout_method=st.none() | st.sampled_from(["bank_transfer", "e_wallet", "cash_pickup"]),
    payout_account_sealed=st.none() | text,
    registered_on=st.dates(),
)


def by_definition(event: BeneficiaryRegistered) -> str:
    body = event.model_dump(mode="json", exclude=set(FINGERPRINT_EXCLUDES))
    body["near_keys"] = sorted(body["near_keys"])
    body["vulnerabilities"] = sorted(body["vulnerabilities"])
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@given(rows)
def test_the_fingerprint_is_the_digest_of_the_sorted_dump(event):
    assert fingerprint(event) == by_definition(event)


def test_a_stored_fingerprint_still_matches_its_row():
    """A digest taken once and kept: a change to how events are written must not move it."""
    event = BeneficiaryRegistered(
        event_id="e1", occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), row_id="B1-1", batch_id="B1",
        partner_id="p1", partner_name="Tenaganita", document_key=None, name_key="k" * 64, block_key="b" * 16,
        near_keys=["2" * 16, "1" * 16], sex="F", age_years=34, nationality="VNM", country="MY", household_size=3,
        vulnerabilities=["pregnant", "disability"], assistance="cash_relief", payout_method="e_wallet",
        payout_account_sealed="s", registered_on=date(2026, 1, 20),
    )  # fmt: skip
    assert fingerprint(event) == "17cceccb9ea7a19d5c0ade9630aa3b5100923a8a523ae058e1530dd6255009d6"
    assert fingerprint(parse_event(event.to_bytes())) == fingerprint(event)


@given(rows, text)
def test_the_sealed_account_and_the_event_id_do_not_change_it_and_a_field_does(event, other):
    assert fingerprint(event) == fingerprint(event.model_copy(update={"payout_account_sealed": other}))
    assert fingerprint(event) == fingerprint(event.model_copy(update={"event_id": "another"}))
    changed = event.model_copy(update={"partner_name": event.partner_name + "x"})
    assert fingerprint(changed) != fingerprint(event)
