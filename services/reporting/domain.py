"""Reach rules as pure functions: who counts as reached, how often, in which group.

`compute_reach` is the reference: reach from the facts received. The store keeps one summary
per reached person (`summarise_person`, refreshed for the persons each batch touches) and adds
the summaries up in SQL; tests hold the two to the same answer. Every rule depends only on the
set of facts received, never on their order: the latest decision per row, the newest status per
payment and the set of person merges.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

CASH = "cash_relief"
AGE_BANDS = ("0-17", "18-29", "30-44", "45-59", "60+")
SEXES = ("F", "M", "X")
BREAKDOWNS = ("by_country", "by_sex", "by_age_band", "by_partner", "by_assistance")

# A payment's newest status wins by `sequence`; equal sequences (never sent by a correct
# producer) are settled by this rank so that the answer still does not depend on arrival order.
STATUS_RANK = {"pending_approval": 1, "pending": 2, "sent": 3, "failed": 4, "paid": 5, "reversed": 6}

# Characters a spreadsheet reads as the start of a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class RowDecision(NamedTuple):
    """The decision on one accepted row, with the facts the report groups by.

    Named tuples, this and `PaymentState`: as immutable as a frozen dataclass, and made in
    0.4 µs instead of 2.5 (a frozen dataclass sets each field through `object.__setattr__`); a
    batch's refresh makes one for every row of every person it touched.
    """

    row_id: str
    person_id: str
    partner_name: str
    decision: str
    assistance: str
    country: str
    sex: str
    age_years: int
    household_size: int
    registered_on: date
    version: str  # orders two decisions on the same row: the greater one is the current one


class PaymentState(NamedTuple):
    """One payment as last reported by disbursement."""

    payment_ref: str
    row_id: str
    person_id: str
    country: str
    amount_minor: int
    currency: str
    status: str
    sequence: int


@dataclass(frozen=True)
class Disbursed:
    amount_minor: int
    payments: int


@dataclass(frozen=True)
class Reach:
    """SPEC §6 reach figures, without the timestamp (which is added when a document is made).

    Each breakdown maps a group to the persons reached in it; groups nobody was reached in are
    left out (the dashboard and the gauges show every sex and age band, zeros included).
    """

    beneficiaries_reached: int = 0
    people_reached: int = 0
    by_country: dict[str, int] = field(default_factory=dict)
    by_sex: dict[str, int] = field(default_factory=dict)
    by_age_band: dict[str, int] = field(default_factory=dict)
    by_partner: dict[str, int] = field(default_factory=dict)
    by_assistance: dict[str, int] = field(default_factory=dict)
    disbursed: dict[str, Disbursed] = field(default_factory=dict)
    duplicates_detected: int = 0
    overpayments_detected: int = 0


# ---- small rules ------------------------------------------------------------------------------


def age_band(age_years: int) -> str:
    """SPEC §6 bands: 0-17, 18-29, 30-44, 45-59, 60+."""
    if age_years < 18:
        return "0-17"
    if age_years < 30:
        return "18-29"
    if age_years < 45:
        return "30-44"
    if age_years < 60:
        return "45-59"
    return "60+"


def decision_version(occurred_at: datetime, event_id: str) -> str:
    """A sortable text key: later decisions on a row win, the event id settles equal times."""
    moment = occurred_at if occurred_at.tzinfo is not None else occurred_at.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}|{event_id}"


def is_newer_payment(candidate: PaymentState, current: PaymentState) -> bool:
    return (candidate.sequence, STATUS_RANK.get(candidate.status, 0)) > (
        current.sequence,
        STATUS_RANK.get(current.status, 0),
    )


def latest_decisions(decisions: Iterable[RowDecision]) -> dict[str, RowDecision]:
    """row_id → its current decision (the greatest version), whatever order they came in."""
    latest: dict[str, RowDecision] = {}
    for decision in decisions:
        current = latest.get(decision.row_id)
        if current is None or decision.version > current.version:
            latest[decision.row_id] = decision
    return latest


def latest_payments(payments: Iterable[PaymentState]) -> dict[str, PaymentState]:
    """payment_ref → its newest state, whatever order the status changes came in."""
    latest: dict[str, PaymentState] = {}
    for payment in payments:
        current = latest.get(payment.payment_ref)
        if current is None or is_newer_payment(payment, current):
            latest[payment.payment_ref] = payment
    return latest


def person_roots(merges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """person_id → the id that stands for its whole merged group, for every merged person.

    Merges are (survivor, merged) pairs. Sameness is transitive and symmetric, so the groups are
    the connected components of the pairs; each is named by its smallest id, which makes the
    answer the same whichever merge arrived first. Ids in no merge are absent: they stand for
    themselves.
    """
    parent: dict[str, str] = {}

    def find(person: str) -> str:
        root = person
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(person, person) != root:  # path compression
            parent[person], person = root, parent[person]
        return root

    for survivor, merged in merges:
        parent.setdefault(survivor, survivor)
        parent.setdefault(merged, merged)
        a, b = find(survivor), find(merged)
        if a != b:
            low, high = sorted((a, b))
            parent[high] = low
    return {person: find(person) for person in list(parent)}


def is_delivered(row: RowDecision, paid_rows: set[str] | frozenset[str]) -> bool:
    """Cash counts once its payment is paid (not reversed); in-kind help once it is approved."""
    return delivers(row.row_id, row.decision, row.assistance, paid_rows)


def delivers(row_id: str, decision: str, assistance: str, paid_rows: set[str] | frozenset[str]) -> bool:
    """`is_delivered` for a row known by these three facts."""
    if assistance == CASH:
        return row_id in paid_rows
    return decision == "eligible"


# ---- one person, and everyone ------------------------------------------------------------------


@dataclass(frozen=True)
class PersonReach:
    """What the report needs to know about one reached person (after merges)."""

    person_id: str  # the id standing for the person's merged group
    household_size: int  # the largest among their delivered rows
    sex: str  # from the first delivered row
    age_band: str  # age on the first delivered row
    countries: frozenset[str]
    partners: frozenset[str]
    assistance: frozenset[str]


def summarise_person(person_id: str, delivered_rows: Iterable[RowDecision]) -> PersonReach | None:
    """One person from their delivered rows; None when nothing was delivered to them.

    The first delivered row is the earliest registered_on, then the smallest row_id, so that
    sex and age band do not depend on the order rows arrived in.
    """
    rows = list(delivered_rows)
    if not rows:
        return None
    first = min(rows, key=lambda row: (row.registered_on, row.row_id))
    return PersonReach(
        person_id=person_id,
        household_size=max(row.household_size for row in rows),
        sex=first.sex,
        age_band=age_band(first.age_years),
        countries=frozenset(row.country for row in rows),
        partners=frozenset(row.partner_name for row in rows),
        assistance=frozenset(row.assistance for row in rows),
    )


def reached_persons(
    decisions: Iterable[RowDecision], payments: Iterable[PaymentState], merges: Iterable[tuple[str, str]] = ()
) -> dict[str, PersonReach]:
    """Every reached person, keyed by the id standing for their merged group."""
    roots = person_roots(merges)
    paid_rows = frozenset(p.row_id for p in payments if p.status == "paid")
    delivered: dict[str, list[RowDecision]] = {}
    for row in decisions:
        if is_delivered(row, paid_rows):
            delivered.setdefault(roots.get(row.person_id, row.person_id), []).append(row)
    persons: dict[str, PersonReach] = {}
    for person, rows in delivered.items():
        summary = summarise_person(person, rows)
        if summary is not None:
            persons[person] = summary
    return persons


def compute_reach(
    decisions: Iterable[RowDecision],
    payments: Iterable[PaymentState],
    merges: Iterable[tuple[str, str]] = (),
    overpayment_refs: Iterable[str] = (),
) -> Reach:
    """Reach from current row decisions and current payment states (SPEC §6); the reference.

    - a person (after merges) is reached when at least one of their rows is delivered;
    - people_reached adds, per person, the largest household_size among their delivered rows;
    - a person counts once in every country, partner and assistance group they were reached in;
    - sex and age band come from the person's first delivered row, so each person is in exactly
      one sex and one age-band group.
    """
    rows = list(decisions)
    states = list(payments)
    persons = reached_persons(rows, states, merges).values()

    by_country: dict[str, int] = {}
    by_partner: dict[str, int] = {}
    by_assistance: dict[str, int] = {}
    by_sex: dict[str, int] = {}
    by_age_band: dict[str, int] = {}
    for person in persons:
        for groups, members in (
            (by_country, person.countries),
            (by_partner, person.partners),
            (by_assistance, person.assistance),
        ):
            for group in members:
                groups[group] = groups.get(group, 0) + 1
        by_sex[person.sex] = by_sex.get(person.sex, 0) + 1
        by_age_band[person.age_band] = by_age_band.get(person.age_band, 0) + 1

    disbursed: dict[str, Disbursed] = {}
    for payment in states:
        if payment.status == "paid":
            so_far = disbursed.get(payment.currency, Disbursed(0, 0))
            disbursed[payment.currency] = Disbursed(
                so_far.amount_minor + payment.amount_minor, so_far.payments + 1
            )

    return Reach(
        beneficiaries_reached=len(persons),
        people_reached=sum(person.household_size for person in persons),
        by_country=dict(sorted(by_country.items())),
        by_sex=dict(sorted(by_sex.items())),
        by_age_band=dict(sorted(by_age_band.items())),
        by_partner=dict(sorted(by_partner.items())),
        by_assistance=dict(sorted(by_assistance.items())),
        disbursed=dict(sorted(disbursed.items())),
        duplicates_detected=sum(1 for row in rows if row.decision == "duplicate"),
        overpayments_detected=len(set(overpayment_refs)),
    )


# ---- documents and exports --------------------------------------------------------------------


def format_as_of(moment: datetime) -> str:
    """ISO 8601 in UTC to the second, e.g. `2026-01-05T10:00:00Z`."""
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reach_document(reach: Reach, as_of: datetime) -> dict[str, Any]:
    """The `/v1/reach` body. Groups are sorted, so equal reach gives byte-equal JSON."""
    return {
        "as_of": format_as_of(as_of),
        "beneficiaries_reached": reach.beneficiaries_reached,
        "by_age_band": dict(sorted(reach.by_age_band.items())),
        "by_assistance": dict(sorted(reach.by_assistance.items())),
        "by_country": dict(sorted(reach.by_country.items())),
        "by_partner": dict(sorted(reach.by_partner.items())),
        "by_sex": dict(sorted(reach.by_sex.items())),
        "disbursed": {
            currency: {"amount_minor": item.amount_minor, "payments": item.payments}
            for currency, item in sorted(reach.disbursed.items())
        },
        "duplicates_detected": reach.duplicates_detected,
        "overpayments_detected": reach.overpayments_detected,
        "people_reached": reach.people_reached,
    }


def suppress(count: int, min_cell: int | None) -> str:
    """Small-cell suppression: with min_cell N, counts 1 … N−1 read `<N`; 0 stays 0."""
    if min_cell is not None and min_cell > 1 and 0 < count < min_cell:
        return f"<{min_cell}"
    return str(count)


def csv_safe(cell: str) -> str:
    """A cell a spreadsheet will show as text, never run as a formula."""
    return f"'{cell}" if cell.startswith(FORMULA_PREFIXES) else cell


CSV_COLUMNS = (
    "figure",
    "breakdown",
    "group",
    "country",
    "sex",
    "age_band",
    "partner",
    "assistance",
    "currency",
    "persons",
    "value",
)
# HXL (Humanitarian Exchange Language) hashtags, one per column, for the optional second row.
HXL_TAGS = (
    "#indicator+name",
    "#meta+breakdown",
    "#meta+group",
    "#country+code",
    "#sex",
    "#age+range",
    "#org+name",
    "#activity+type",
    "#currency",
    "#reached",
    "#value",
)
_BREAKDOWN_COLUMN = {
    "by_country": "country",
    "by_sex": "sex",
    "by_age_band": "age_band",
    "by_partner": "partner",
    "by_assistance": "assistance",
}


def reach_csv(reach: Reach, *, min_cell: int | None = None, hxl: bool = False) -> str:
    """Reach as a flat CSV: totals first, then one line per (breakdown, group), then money.

    `persons` holds counts of people; `value` holds the other figures (rows marked duplicate,
    amounts in minor units, number of paid payments). Counts are suppressed below `min_cell`;
    amounts are not counts and are left as they are.
    """
    lines: list[dict[str, str]] = []

    def add(figure: str, breakdown: str, group: str = "", **cells: str) -> None:
        lines.append({"figure": figure, "breakdown": breakdown, "group": group, **cells})

    add("beneficiaries_reached", "total", persons=suppress(reach.beneficiaries_reached, min_cell))
    add("people_reached", "total", persons=suppress(reach.people_reached, min_cell))
    for breakdown in BREAKDOWNS:
        groups: dict[str, int] = getattr(reach, breakdown)
        column = _BREAKDOWN_COLUMN[breakdown]
        for group, persons in sorted(groups.items()):
            add(
                "beneficiaries_reached",
                breakdown,
                group,
                **{column: group},
                persons=suppress(persons, min_cell),
            )
    add("duplicates_detected", "total", value=suppress(reach.duplicates_detected, min_cell))
    add("overpayments_detected", "total", value=suppress(reach.overpayments_detected, min_cell))
    for currency, item in sorted(reach.disbursed.items()):
        add(
            "disbursed_amount_minor", "by_currency", currency, currency=currency, value=str(item.amount_minor)
        )
        add(
            "payments_paid",
            "by_currency",
            currency,
            currency=currency,
            value=suppress(item.payments, min_cell),
        )

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    if hxl:
        writer.writerow(HXL_TAGS)
    for line in lines:
        writer.writerow([csv_safe(line.get(column, "")) for column in CSV_COLUMNS])
    return buffer.getvalue()
