"""SPEC §4: identity normalisation and keyed hashes."""

import hashlib
import hmac
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.identity import (
    NEAR_KEY_HEX,
    IdentityHasher,
    _normalise_any,
    age_on,
    deletion_neighbourhood,
    normalise_document_number,
    normalise_name,
)


@pytest.mark.parametrize(
    ("given", "family", "expected"),
    [
        ("Nguyễn Văn", "An", "AN NGUYEN VAN"),
        ("AN", "NGUYEN VAN", "AN NGUYEN VAN"),
        ("Nguyen Van An", None, "AN NGUYEN VAN"),
        ("Đặng Thị", "Hoa", "DANG HOA THI"),
        ("đặng thị hoa", "", "DANG HOA THI"),
        ("  Maria  ", "Dela Cruz", "CRUZ DELA MARIA"),
        ("Sí Thu", "Aung", "AUNG SI THU"),
        ("O'Brien", "Ｊｏｈｎ", "JOHN OBRIEN"),
    ],
)
def test_names_normalise_as_the_spec_says(given, family, expected):
    assert normalise_name(given, family) == expected


def test_vietnamese_with_and_without_marks_is_the_same_name():
    assert (
        normalise_name("Trần Thị Thu Hà")
        == normalise_name("Tran Thi Thu Ha")
        == normalise_name("HA THU THI TRAN")
    )


def test_thai_names_drop_combining_vowel_and_tone_marks_consistently():
    with_marks = normalise_name("สมชาย", "ใจดี")
    assert with_marks == normalise_name("ใจดี", "สมชาย")  # token order does not matter
    assert with_marks  # Thai consonants are letters and survive
    assert "\u0e48" not in with_marks  # the tone mark (a combining mark) is gone


def test_names_with_only_punctuation_normalise_to_nothing():
    assert normalise_name("--", "..") == ""


def test_document_numbers_compare_without_spaces_and_dashes_upper_cased():
    assert normalise_document_number(" c1234-567 8 ") == "C12345678"


def test_age_counts_completed_years():
    assert age_on(date(2008, 3, 1), date(2026, 2, 28)) == 17
    assert age_on(date(2008, 3, 1), date(2026, 3, 1)) == 18


def test_deletion_neighbourhood_of_two_names_one_edit_apart_overlaps():
    assert deletion_neighbourhood("AN NGUYEN") & deletion_neighbourhood("AN NGUYEM")  # substitution
    assert deletion_neighbourhood("AN NGUYEN") & deletion_neighbourhood("AN NGUYENN")  # insertion
    assert not deletion_neighbourhood("AN NGUYEN") & deletion_neighbourhood("BINH TRAN")


hasher = IdentityHasher("unit-test-secret-0123456789")
person = {"nationality": "VNM", "date_of_birth": date(1990, 5, 17), "id_type": "passport"}


def test_rule_one_same_document_after_normalisation_gives_the_same_key():
    a = hasher.keys_for(given_name="An", family_name="Nguyen", id_number="C1234567", **person)
    b = hasher.keys_for(given_name="Binh", family_name="Tran", id_number="c-1234 567", **person)
    assert a.document_key == b.document_key is not None
    assert a.name_key != b.name_key


def test_rule_two_same_name_dob_and_nationality_gives_the_same_name_key():
    a = hasher.keys_for(given_name="Nguyễn Văn", family_name="An", id_number="X1", **person)
    b = hasher.keys_for(given_name="AN", family_name="NGUYEN VAN", id_number="Y2", **person)
    assert a.name_key == b.name_key
    assert a.document_key != b.document_key


def test_another_nationality_is_another_person():
    a = hasher.keys_for(given_name="An", family_name="Nguyen", id_number="C1", **person)
    b = hasher.keys_for(
        given_name="An", family_name="Nguyen", id_number="C1", **{**person, "nationality": "KHM"}
    )
    assert a.name_key != b.name_key and a.document_key != b.document_key


def test_no_document_means_no_document_key_and_the_name_key_partitions():
    keys = hasher.keys_for(given_name="An", family_name=None, id_number=None, **{**person, "id_type": "none"})
    assert keys.document_key is None
    assert keys.partition_key == keys.name_key


def test_near_misses_share_a_near_key_but_not_a_name_key():
    a = hasher.keys_for(
        given_name="Siti", family_name="Rahmah", id_number=None, **{**person, "id_type": "none"}
    )
    b = hasher.keys_for(
        given_name="Siti", family_name="Rahma", id_number=None, **{**person, "id_type": "none"}
    )
    assert a.name_key != b.name_key
    assert set(a.near_keys) & set(b.near_keys)


def test_keys_depend_on_the_secret_and_reveal_nothing_raw():
    other = IdentityHasher("another-secret-0123456789abc")
    a = hasher.keys_for(given_name="An", family_name="Nguyen", id_number="C1234567", **person)
    b = other.keys_for(given_name="An", family_name="Nguyen", id_number="C1234567", **person)
    assert a.name_key != b.name_key
    assert "C1234567" not in a.document_key and "NGUYEN" not in a.name_key


# ---- the fast paths agree with the definitions --------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)), st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_names_take_a_shortcut_to_the_same_normal_form(given_name, family_name):
    assert normalise_name(given_name, family_name) == _normalise_any(f"{given_name} {family_name}")


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(min_size=1, max_size=200),
    given_name=st.text(min_size=1, max_size=30),
    nationality=st.sampled_from(["VNM", "KHM", "MMR", "THA"]),
    born=st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)),
    id_number=st.text(alphabet="AB12- ", min_size=1, max_size=12),
)
def test_keys_are_hmac_sha256_of_the_secret_bit_for_bit(secret, given_name, nationality, born, id_number):
    def reference(*parts: str) -> str:
        return hmac.new(secret.encode(), "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    keys = IdentityHasher(secret).keys_for(
        nationality=nationality, date_of_birth=born, given_name=given_name, family_name=None,
        id_type="passport", id_number=id_number,
    )  # fmt: skip
    name, birth = normalise_name(given_name), born.isoformat()
    assert keys.document_key == reference(
        "document", nationality, "passport", normalise_document_number(id_number)
    )
    assert keys.name_key == reference("name", nationality, birth, name)
    assert keys.block_key == reference("block", nationality, birth)
    assert keys.near_keys == tuple(
        sorted(reference("near", nationality, birth, v)[:NEAR_KEY_HEX] for v in deletion_neighbourhood(name))
    )
