"""Policy files are data, validated at start-up: errors name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.eligibility.domain import TransferValue
from services.eligibility.policy import POLICY_DIR, PolicyError, load_policy, load_policy_file
from shared.money import COUNTRY_CURRENCIES
from shared.settings import Settings

V1 = json.loads((POLICY_DIR / "v1.json").read_text())


def write(tmp_path: Path, body: object, name: str = "policy.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(body) if not isinstance(body, str) else body)
    return path


def test_the_bundled_v1_policy_is_the_spec_table():
    policy = load_policy_file(POLICY_DIR / "v1.json", expected_version="v1")
    assert policy.version == "v1"
    assert policy.minimum_age == 18 and policy.requires_vulnerability
    assert policy.in_kind == {"food_kit", "hygiene_kit", "remediation", "safe_migration_info"}
    assert policy.transfer_values["HK"] == TransferValue("HKD", 1000, 200)
    assert policy.transfer_values["VN"] == TransferValue("VND", 2_000_000, 400_000)
    assert policy.transfer_values["ID"] == TransferValue("IDR", 1_200_000, 240_000)
    assert {c: v.currency for c, v in policy.transfer_values.items()} == COUNTRY_CURRENCIES


def test_settings_select_the_bundled_version(tmp_path):
    assert load_policy(Settings(data_dir=tmp_path, policy_version="v1")).version == "v1"


def test_an_explicit_policy_file_carries_its_own_version(tmp_path):
    path = write(tmp_path, {**V1, "version": "v2-pilot"})
    assert load_policy(Settings(data_dir=tmp_path, policy_file=path)).version == "v2-pilot"


def test_an_unknown_version_names_the_missing_file_and_the_bundled_ones(tmp_path):
    with pytest.raises(PolicyError) as caught:
        load_policy(Settings(data_dir=tmp_path, policy_version="v7"))
    assert "v7.json" in str(caught.value) and "not found" in str(caught.value) and "v1" in str(caught.value)


def test_a_bundled_file_whose_version_differs_from_the_setting_is_refused(tmp_path):
    path = write(tmp_path, {**V1, "version": "v2"}, name="v3.json")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path, expected_version="v3")
    assert str(path) in str(caught.value) and "field version" in str(caught.value)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p["cash"].pop("minimum_age"), "cash.minimum_age"),
        (lambda p: p["cash"].update(minimum_age="18"), "cash.minimum_age"),
        (lambda p: p["transfer_values"]["HK"].update(currency="HKX"), "transfer_values.HK.currency"),
        (lambda p: p["transfer_values"]["MY"].update(base=-400), "transfer_values.MY.base"),
        (lambda p: p["transfer_values"]["TH"].update(top_up=600.5), "transfer_values.TH.top_up"),
        (
            lambda p: p["transfer_values"].update(hk={"currency": "HKD", "base": 1, "top_up": 0}),
            "transfer_values",
        ),
        (lambda p: p.update(in_kind=["food_kit", "cash_relief"]), "in_kind.1"),
        (lambda p: p.update(budget="unlimited"), "budget"),
        (lambda p: p.pop("version"), "version"),
    ],
)
def test_a_malformed_policy_names_the_file_and_the_field(tmp_path, mutate, field):
    body = json.loads(json.dumps(V1))
    mutate(body)
    path = write(tmp_path, body)
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"field {field}" in message


def test_a_policy_that_is_not_json_names_the_file(tmp_path):
    path = write(tmp_path, '{"version": "v1",')
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert str(path) in str(caught.value) and "not valid JSON" in str(caught.value)
