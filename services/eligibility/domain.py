"""Eligibility rules: who a row is (SPEC §4) and what the versioned policy grants (SPEC §5).

Pure functions and dataclasses: no I/O, no settings, no clock reads. The handlers load what these
need from the store, call them and save the outcome.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from shared.money import Money, MoneyError, transfer_amount

Outcome = Literal["eligible", "ineligible", "duplicate"]
ReviewStatus = Literal["open", "same_person", "distinct", "already_one_person"]
Resolution = Literal["same_person", "distinct"]
MergeCause = Literal["identity_rule", "review"]

# Reason codes are stable: decisions, reports and dashboards match on them.
NO_VULNERABILITY = "no_vulnerability"
ALREADY_ASSISTED = "already_assisted"
BUDGET_EXHAUSTED = "budget_exhausted"
COUNTRY_NOT_COVERED = "country_not_covered"
ASSISTANCE_NOT_COVERED = "assistance_not_covered"


def age_reason(minimum_age: int) -> str:
    """`age_under_18` under policy v1; the code names the policy's threshold."""
    return f"age_under_{minimum_age}"


# ---- policy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferValue:
    """One row of the transfer table, in whole major units as the policy states them."""

    currency: str
    base: int
    top_up: int


@dataclass(frozen=True)
class Policy:
    """A validated policy version (the data in `policies/<version>.json`)."""

    version: str
    cash_assistance: str
    minimum_age: int
    requires_vulnerability: bool
    transfer_values: Mapping[str, TransferValue]
    in_kind: frozenset[str]

    def cash_amount(self, country: str, household_size: int) -> Money | None:
        """SPEC §5 transfer value for a household in a country; None when the table has no row."""
        value = self.transfer_values.get(country)
        if value is None:
            return None
        return transfer_amount(value.currency, value.base, value.top_up, household_size)

    def currency_for(self, country: str) -> str | None:
        value = self.transfer_values.get(country)
        return value.currency if value else None


@dataclass(frozen=True)
class Applicant:
    """The facts of one row that the policy looks at (no identity, no personal data)."""

    assistance: str
    age_years: int
    vulnerabilities: tuple[str, ...]
    country: str
    household_size: int


@dataclass(frozen=True)
class Verdict:
    decision: Outcome
    reasons: tuple[str, ...] = ()
    amount: Money | None = None  # set only for an eligible cash row
    duplicate_of: str | None = None  # row_id of the approval a duplicate points to

    @property
    def approves(self) -> bool:
        return self.decision == "eligible"


def evaluate(
    applicant: Applicant,
    policy: Policy,
    *,
    prior_approval: str | None,
    budget_remaining_minor: int | None,
) -> Verdict:
    """Decide one row.

    `prior_approval` is the row_id of the person's earliest approval for the same assistance in
    the cycle (None when there is none); `budget_remaining_minor` is what is left of the country's
    ceiling in this cycle (None: no ceiling).

    Cash: every failing reason is listed. A person already approved makes the row `duplicate`
    pointing to that approval (the first approval wins); the budget is not consulted for such a
    row because no new approval is at stake. Otherwise any failing reason makes it `ineligible`,
    and `budget_exhausted` is listed whenever the amount would exceed what is left.
    In-kind: eligible unless the person already has that type in the cycle.
    """
    if applicant.assistance == policy.cash_assistance:
        return _evaluate_cash(applicant, policy, prior_approval, budget_remaining_minor)
    if applicant.assistance not in policy.in_kind:
        return Verdict("ineligible", (ASSISTANCE_NOT_COVERED,))
    if prior_approval is not None:
        return Verdict("duplicate", (ALREADY_ASSISTED,), duplicate_of=prior_approval)
    return Verdict("eligible")


def _evaluate_cash(
    applicant: Applicant, policy: Policy, prior_approval: str | None, budget_remaining_minor: int | None
) -> Verdict:
    reasons: list[str] = []
    if applicant.age_years < policy.minimum_age:
        reasons.append(age_reason(policy.minimum_age))
    if policy.requires_vulnerability and not any(v.strip() for v in applicant.vulnerabilities):
        reasons.append(NO_VULNERABILITY)
    if prior_approval is not None:
        reasons.append(ALREADY_ASSISTED)
        return Verdict("duplicate", tuple(reasons), duplicate_of=prior_approval)
    try:
        amount = policy.cash_amount(applicant.country, applicant.household_size)
    except MoneyError:
        amount = None
    if amount is None:
        reasons.append(COUNTRY_NOT_COVERED)
    elif budget_remaining_minor is not None and amount.amount_minor > budget_remaining_minor:
        reasons.append(BUDGET_EXHAUSTED)
    if reasons:
        return Verdict("ineligible", tuple(reasons))
    return Verdict("eligible", amount=amount)


def budget_refused() -> Verdict:
    """The verdict when the reservation itself is refused by the database."""
    return Verdict("ineligible", (BUDGET_EXHAUSTED,))


# ---- identity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowIdentity:
    """A row's keyed hashes (SPEC §4): rule 1, rule 2 and the near-miss neighbourhood."""

    document_key: str | None
    name_key: str
    near_keys: tuple[str, ...]

    @property
    def identity_keys(self) -> tuple[str, ...]:
        """The keys that make two rows the same person (rules 1 and 2)."""
        return (self.document_key, self.name_key) if self.document_key else (self.name_key,)


@dataclass(frozen=True)
class PersonStanding:
    """What choosing a survivor needs to know about a person (a root of the identity graph)."""

    person_id: str
    created_order: int
    first_approval_order: int | None = None


@dataclass(frozen=True)
class Merge:
    survivor_person_id: str
    merged_person_id: str


@dataclass(frozen=True)
class IdentityPlan:
    person_id: str  # the person the row belongs to once the plan is carried out
    is_new_person: bool
    merges: tuple[Merge, ...]  # persons the row proved to be one, merged into person_id
    keys_to_attach: tuple[str, ...]  # identity keys seen for the first time


def choose_survivor(persons: Iterable[PersonStanding]) -> PersonStanding:
    """The person with the earliest approval survives a merge; with no approval, the earliest created.

    Keeping the earliest approval's person means a merge never moves or repeats an approval.
    """
    return min(
        persons,
        key=lambda p: (
            p.first_approval_order is None,
            p.first_approval_order or 0,
            p.created_order,
            p.person_id,
        ),
    )


def resolve_identity(
    row: RowIdentity,
    known_keys: Mapping[str, str],
    persons: Mapping[str, PersonStanding],
    new_person_id: str,
) -> IdentityPlan:
    """Which person a row is, given the persons its identity keys already point to.

    `known_keys` maps each already known identity key of the row to its current person (the
    survivor of earlier merges); `persons` describes those persons. Sameness is transitive: a row
    whose keys point to two persons proves them one, and they are merged into the survivor.
    """
    matched = {known_keys[key] for key in row.identity_keys if key in known_keys}
    unknown = tuple(key for key in row.identity_keys if key not in known_keys)
    if not matched:
        return IdentityPlan(new_person_id, True, (), unknown)
    survivor = choose_survivor(persons[person_id] for person_id in matched)
    others = sorted(
        (persons[person_id] for person_id in matched if person_id != survivor.person_id),
        key=lambda p: (p.created_order, p.person_id),
    )
    merges = tuple(Merge(survivor.person_id, other.person_id) for other in others)
    return IdentityPlan(survivor.person_id, False, merges, unknown)


@dataclass(frozen=True)
class NearMatch:
    """Another person sharing a near key with a row: the possible duplicate and one of its rows."""

    person_id: str
    row_id: str


def possible_duplicates(
    person_id: str, near_matches: Iterable[NearMatch], already_reviewed: Collection[str]
) -> tuple[NearMatch, ...]:
    """Persons to flag for review against `person_id`: one flag per other person.

    Never the row's own person (its own spellings share near keys), and never a person already
    paired with it in a review, whatever that review's state: a `distinct` decision keeps the two
    apart for good and an open flag is not raised twice.
    """
    chosen: dict[str, NearMatch] = {}
    for match in near_matches:
        if match.person_id == person_id or match.person_id in already_reviewed:
            continue
        current = chosen.get(match.person_id)
        if current is None or match.row_id < current.row_id:
            chosen[match.person_id] = match
    return tuple(chosen[key] for key in sorted(chosen))


# ---- review ----------------------------------------------------------------------------------


class ReviewError(Exception):
    """A review decision that cannot be recorded; `code` is stable, `message` plain language."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ReviewOutcome:
    status: ReviewStatus
    merge: bool  # the two persons are to be merged now


def resolve_review(resolution: str, reason: str, *, already_one_person: bool) -> ReviewOutcome:
    """A reviewer's decision on a flagged pair; a later decision may replace an earlier one.

    `same_person` merges the two persons (unless they already are one); `distinct` keeps them
    apart and stops the pair being flagged again. Once merged, two persons cannot be declared
    distinct: a merge has been announced downstream and has no undo.
    """
    if not reason.strip():
        raise ReviewError("reason_required", "a review decision needs a reason")
    if resolution == "same_person":
        return ReviewOutcome("same_person", merge=not already_one_person)
    if resolution == "distinct":
        if already_one_person:
            raise ReviewError(
                "already_one_person",
                "these two records are already one person (merged by a review or an identity rule); "
                "a merge cannot be undone",
            )
        return ReviewOutcome("distinct", merge=False)
    raise ReviewError("unknown_resolution", f"resolution must be same_person or distinct, not {resolution!r}")
