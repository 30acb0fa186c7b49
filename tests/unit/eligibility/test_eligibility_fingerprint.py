"""A row's fingerprint is the digest of its decision-relevant fields as sorted-key JSON: the stored
fingerprints of rows decided earlier must keep matching their redeliveries."""

import hashlib

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.eligibility.handlers import FINGERPRINT_EXCLUDES, fingerprint
from shared.events import BeneficiaryRegistered

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


@given(rows, text)
def test_the_sealed_account_and_the_event_id_do_not_change_it_and_a_field_does(event, other):
    assert fingerprint(event) == fingerprint(event.model_copy(update={"payout_account_sealed": other}))
    assert fingerprint(event) == fingerprint(event.model_copy(update={"event_id": "another"}))
    changed = event.model_copy(update={"partner_name": event.partner_name + "x"})
    assert fingerprint(changed) != fingerprint(event)
