"""Policy files: one JSON file per version under `policies/`, validated before the service starts.

A malformed file stops the service with a `PolicyError` that names the file and the field, so an
operator never runs a half-understood policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.eligibility.domain import Policy, TransferValue
from shared.money import MINOR_UNIT_EXPONENTS
from shared.settings import Settings

POLICY_DIR = Path(__file__).resolve().parent / "policies"

InKind = Literal["food_kit", "hygiene_kit", "remediation", "safe_migration_info"]


class PolicyError(ValueError):
    """The policy cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CashRulesFile(_Strict):
    assistance: Literal["cash_relief"]
    minimum_age: int = Field(ge=0, le=120)
    requires_vulnerability: bool


class TransferValueFile(_Strict):
    currency: str
    base: int = Field(gt=0)
    top_up: int = Field(ge=0)

    @field_validator("currency")
    @classmethod
    def known_currency(cls, value: str) -> str:
        if value not in MINOR_UNIT_EXPONENTS:
            raise ValueError(f"unknown currency {value!r}: use an ISO 4217 code of a programme currency")
        return value


class PolicyFile(_Strict):
    version: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    description: str = ""
    cash: CashRulesFile
    transfer_values: dict[str, TransferValueFile] = Field(min_length=1)
    in_kind: list[InKind]

    @field_validator("transfer_values")
    @classmethod
    def country_codes(cls, value: dict[str, TransferValueFile]) -> dict[str, TransferValueFile]:
        for country in value:
            if len(country) != 2 or not country.isalpha() or not country.isupper():
                raise ValueError(f"country {country!r} is not an ISO 3166-1 alpha-2 code")
        return value

    @model_validator(mode="after")
    def in_kind_listed_once(self) -> PolicyFile:
        if len(set(self.in_kind)) != len(self.in_kind):
            raise ValueError("in_kind lists an assistance type twice")
        return self

    def to_policy(self) -> Policy:
        return Policy(
            version=self.version,
            cash_assistance=self.cash.assistance,
            minimum_age=self.cash.minimum_age,
            requires_vulnerability=self.cash.requires_vulnerability,
            transfer_values={
                country: TransferValue(value.currency, value.base, value.top_up)
                for country, value in self.transfer_values.items()
            },
            in_kind=frozenset(self.in_kind),
        )


def policy_path(settings: Settings) -> Path:
    """`RELIEF_POLICY_FILE` when set, else the bundled file of `RELIEF_POLICY_VERSION`."""
    if settings.policy_file is not None:
        return settings.policy_file
    return POLICY_DIR / f"{settings.policy_version}.json"


def load_policy_file(path: Path, *, expected_version: str | None = None) -> Policy:
    """Read and validate one policy file; raise PolicyError naming the file and the field."""
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in POLICY_DIR.glob("*.json"))) or "none"
        raise PolicyError(f"policy file {path}: not found (bundled versions: {available})")
    try:
        raw = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise PolicyError(f"policy file {path}: not valid JSON: {error}") from None
    try:
        parsed = PolicyFile.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "(top level)"
            problems.append(f"field {field}: {item['msg']}")
        raise PolicyError(f"policy file {path}: " + "; ".join(problems)) from None
    if expected_version is not None and parsed.version != expected_version:
        raise PolicyError(
            f"policy file {path}: field version: is {parsed.version!r} but RELIEF_POLICY_VERSION "
            f"selects {expected_version!r}"
        )
    return parsed.to_policy()


def load_policy(settings: Settings) -> Policy:
    """The policy the settings select. An explicit file carries its own version."""
    path = policy_path(settings)
    expected = None if settings.policy_file is not None else settings.policy_version
    return load_policy_file(path, expected_version=expected)
