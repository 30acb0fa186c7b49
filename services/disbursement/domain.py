"""Disbursement rules as pure functions: no I/O, no settings, no clock reads.

- the payment state machine (which transition is allowed, what sequence number it gets);
- which decisions become payments, and the stable reference of a payment;
- maker-checker control totals;
- statement parsing and reconciliation matching;
- what a merge of two persons does to their payments (cancel the unsent, flag the overpaid);
- the retry delay of a transient provider error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from shared.money import MINOR_UNIT_EXPONENTS

PaymentStatus = Literal["pending_approval", "pending", "sent", "paid", "failed", "reversed"]
StatementStatus = Literal["paid", "failed", "reversed"]

PENDING_APPROVAL: PaymentStatus = "pending_approval"
PENDING: PaymentStatus = "pending"
SENT: PaymentStatus = "sent"
PAID: PaymentStatus = "paid"
FAILED: PaymentStatus = "failed"
REVERSED: PaymentStatus = "reversed"

PAYMENT_STATUSES: tuple[PaymentStatus, ...] = (PENDING_APPROVAL, PENDING, SENT, PAID, FAILED, REVERSED)

# Every allowed move; anything else is a bug or a stale request, refused with `invalid_transition`.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING_APPROVAL: frozenset({PENDING, FAILED}),
    PENDING: frozenset({SENT, FAILED}),
    SENT: frozenset({PAID, FAILED}),
    PAID: frozenset({REVERSED}),
    FAILED: frozenset(),
    REVERSED: frozenset(),
}

UNSENT: frozenset[str] = frozenset({PENDING_APPROVAL, PENDING})
# A payment whose money has left, or may have left: the provider has the order.
AT_PROVIDER: frozenset[str] = frozenset({SENT, PAID})
LIVE: frozenset[str] = UNSENT | AT_PROVIDER
FINAL: frozenset[str] = frozenset({PAID, FAILED, REVERSED})
# Statuses kept in the ledger but not published on `disbursement.payments`: nobody downstream
# tells `sent` from `pending` (a row's progress and the dashboard's "in flight" count both), and
# the event would cost every consumer a read for nothing. The ledger and `/v1/payments` keep it.
UNPUBLISHED: frozenset[str] = frozenset({SENT})

MERGED_DUPLICATE = "merged_duplicate"


class DomainError(Exception):
    """A rule refused a request. `code` is stable (clients branch on it); `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- payments ----------------------------------------------------------------------------


def payment_reference(person_id: str, cycle: str) -> str:
    """The payment's stable, non-personal reference, derived from its key `(person, cycle)`.

    Deterministic, so two replicas creating the same payment compute the same reference and the
    database's uniqueness decides; it doubles as the idempotency key sent to the provider.
    """
    digest = hashlib.sha256(f"relief-payment\x1f{person_id}\x1f{cycle}".encode()).hexdigest()
    return f"PAY{digest[:20].upper()}"


@dataclass(frozen=True)
class NewPayment:
    """An eligible cash decision turned into a payment to create (if none exists for its key)."""

    payment_ref: str
    person_id: str
    cycle: str
    amount_minor: int
    currency: str
    status: PaymentStatus


def payment_for_decision(
    *,
    decision: str,
    assistance: str,
    person_id: str,
    cycle: str,
    amount_minor: int | None,
    currency: str | None,
    approval_required: bool,
) -> NewPayment | None:
    """An eligible `cash_relief` decision becomes a payment of exactly the decided amount.

    Eligibility owns the policy and the transfer values, so nothing is recomputed here; a
    decision that claims to be payable but carries no usable amount is refused.
    """
    if decision != "eligible" or assistance != "cash_relief":
        return None
    if amount_minor is None or currency is None:
        raise DomainError(
            "missing_amount", f"eligible cash decision for person {person_id} carries no amount"
        )
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise DomainError("invalid_amount", f"amount_minor must be a positive integer, got {amount_minor!r}")
    if currency not in MINOR_UNIT_EXPONENTS:
        raise DomainError("unknown_currency", f"currency {currency!r} is not a programme currency")
    return NewPayment(
        payment_ref=payment_reference(person_id, cycle),
        person_id=person_id,
        cycle=cycle,
        amount_minor=amount_minor,
        currency=currency,
        status=PENDING_APPROVAL if approval_required else PENDING,
    )


@dataclass(frozen=True)
class Transition:
    """One ledger entry: the payment moves to `status`, numbered `sequence`."""

    payment_ref: str
    status: PaymentStatus
    sequence: int
    reason: str | None = None


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def transition(
    payment_ref: str, current: str, sequence: int, target: PaymentStatus, reason: str | None = None
) -> Transition:
    """The next ledger entry of a payment, or `invalid_transition` when the move is not allowed."""
    if not can_transition(current, target):
        raise DomainError(
            "invalid_transition", f"payment {payment_ref} cannot move from {current} to {target}"
        )
    return Transition(payment_ref, target, sequence + 1, reason)


def retry_delay(
    attempt: int, jitter: float, *, base_seconds: float = 0.1, cap_seconds: float = 60.0
) -> float:
    """Exponential backoff with jitter after the `attempt`-th failed try (1-based).

    `jitter` in [0, 1) comes from the caller's random source; the delay lies in [½·d, d] where
    d = min(cap, base·2^(attempt−1)), so replicas retrying together spread out.
    """
    ceiling = min(cap_seconds, base_seconds * float(2 ** max(0, attempt - 1)))
    return ceiling * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


# ---- maker-checker -----------------------------------------------------------------------


@dataclass(frozen=True)
class ControlTotals:
    count: int
    total_minor: int
    currency: str


def check_control_totals(
    pending: Sequence[tuple[int, str]], *, country: str, cycle: str, count: int, total_minor: int
) -> ControlTotals:
    """The approver's count and total must equal the pending set's, exactly (SPEC §6).

    `pending` holds (amount_minor, currency) of every payment waiting for approval in the
    country and cycle. The refusal names which control total differs, not the expected figure:
    the checker must count independently, not copy the system's number.
    """
    if count < 0 or total_minor < 0:
        raise DomainError("invalid_control_totals", "count and total_minor must not be negative")
    if not pending:
        raise DomainError(
            "nothing_to_approve", f"no payments are waiting for approval in {country} for cycle {cycle}"
        )
    currencies = sorted({currency for _, currency in pending})
    if len(currencies) > 1:
        raise DomainError(
            "mixed_currencies",
            f"the payments waiting in {country} for cycle {cycle} are in several currencies "
            f"({', '.join(currencies)}); a single control total cannot cover them",
        )
    actual_count = len(pending)
    actual_total = sum(amount for amount, _ in pending)
    differs = []
    if count != actual_count:
        differs.append(f"count {count}")
    if total_minor != actual_total:
        differs.append(f"total_minor {total_minor} {currencies[0]}")
    if differs:
        raise DomainError(
            "control_totals_mismatch",
            f"approval refused: the payments waiting in {country} for cycle {cycle} do not match "
            f"the control totals given ({' and '.join(differs)} differ from the pending set); "
            "nothing was approved — list the pending payments, count again and resubmit",
        )
    return ControlTotals(actual_count, actual_total, currencies[0])


# ---- statements and reconciliation ------------------------------------------------------

STATEMENT_COLUMNS = ("payment_ref", "amount_minor", "currency", "status", "settled_on")
STATEMENT_STATUSES: tuple[StatementStatus, ...] = ("paid", "failed", "reversed")
# Any printable reference up to 64 characters: an odd one is a finding (unknown), not a parse error.
_REFERENCE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_INTEGER = re.compile(r"^[0-9]{1,18}$")
MAX_STATEMENT_ERRORS = 100


@dataclass(frozen=True)
class StatementLine:
    row: int  # 1-based data row number
    payment_ref: str
    amount_minor: int
    currency: str
    status: StatementStatus
    settled_on: date


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    message: str


class StatementError(DomainError):
    """The statement cannot be read; `errors` name each row and column."""

    def __init__(self, message: str, errors: Sequence[RowError] = ()) -> None:
        super().__init__("invalid_statement", message)
        self.errors = list(errors)


def parse_statement(text: str) -> list[StatementLine]:
    """Read a provider statement CSV; every bad cell is reported with its row and column.

    Row numbers count data rows from 1 (the header is row 0), as in batch rejections.
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise StatementError("the statement is empty: expected a header row " + ",".join(STATEMENT_COLUMNS))
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [cell.strip() for cell in next(reader)]
    missing = [column for column in STATEMENT_COLUMNS if column not in header]
    if missing:
        raise StatementError(
            f"the statement's header lacks the column(s) {', '.join(missing)}; "
            f"expected {','.join(STATEMENT_COLUMNS)}",
            [RowError(0, column, "missing column") for column in missing],
        )
    index = {column: header.index(column) for column in STATEMENT_COLUMNS}
    lines: list[StatementLine] = []
    errors: list[RowError] = []
    first_row_of: dict[str, int] = {}
    for row_number, cells in enumerate(reader, start=1):
        if not any(cell.strip() for cell in cells):
            continue  # a blank line, usually the file's end
        if len(cells) < len(header):
            errors.append(
                RowError(
                    row_number, STATEMENT_COLUMNS[0], f"expected {len(header)} cells, found {len(cells)}"
                )
            )
            continue
        values = {column: cells[position].strip() for column, position in index.items()}
        row_errors = _check_statement_row(row_number, values)
        reference = values["payment_ref"]
        if not row_errors and reference in first_row_of:
            row_errors.append(
                RowError(
                    row_number,
                    "payment_ref",
                    f"{reference} already appears on row {first_row_of[reference]}; "
                    "a statement lists each payment once, with its latest status",
                )
            )
        if row_errors:
            errors.extend(row_errors)
            if len(errors) >= MAX_STATEMENT_ERRORS:
                break
            continue
        first_row_of[reference] = row_number
        lines.append(
            StatementLine(
                row=row_number,
                payment_ref=reference,
                amount_minor=int(values["amount_minor"]),
                currency=values["currency"],
                status=values["status"],  # type: ignore[arg-type]
                settled_on=date.fromisoformat(values["settled_on"]),
            )
        )
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StatementError(f"row {first.row}, column {first.column}: {first.message}{more}", errors)
    return lines


def _check_statement_row(row: int, values: dict[str, str]) -> list[RowError]:
    errors: list[RowError] = []
    if not _REFERENCE.match(values["payment_ref"]):
        errors.append(RowError(row, "payment_ref", "must be 1–64 printable characters"))
    if not _INTEGER.match(values["amount_minor"]):
        errors.append(
            RowError(
                row, "amount_minor", f"must be a whole number of minor units, got {values['amount_minor']!r}"
            )
        )
    if not _CURRENCY.match(values["currency"]):
        errors.append(
            RowError(row, "currency", f"must be an ISO 4217 code such as MYR, got {values['currency']!r}")
        )
    if values["status"] not in STATEMENT_STATUSES:
        errors.append(RowError(row, "status", f"must be paid, failed or reversed, got {values['status']!r}"))
    try:
        date.fromisoformat(values["settled_on"])
        if not re.match(r"^\d{4}-\d{2}-\d{2}$", values["settled_on"]):
            raise ValueError
    except ValueError:
        errors.append(RowError(row, "settled_on", f"must be a date YYYY-MM-DD, got {values['settled_on']!r}"))
    return errors


@dataclass(frozen=True)
class LedgerPosition:
    """What the ledger says about one payment, as reconciliation needs it."""

    payment_ref: str
    amount_minor: int
    currency: str
    status: str
    submitted: bool  # the provider was asked to pay it, so its statement should list it


FindingKind = Literal["missing_from_statement", "unknown_to_ledger", "amount_mismatch", "status_mismatch"]
FINDING_KINDS: tuple[FindingKind, ...] = (
    "missing_from_statement",
    "unknown_to_ledger",
    "amount_mismatch",
    "status_mismatch",
)


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    payment_ref: str
    message: str
    row: int | None = None
    ledger_amount_minor: int | None = None
    ledger_currency: str | None = None
    ledger_status: str | None = None
    statement_amount_minor: int | None = None
    statement_currency: str | None = None
    statement_status: str | None = None


@dataclass(frozen=True)
class Reversal:
    payment_ref: str
    settled_on: date
    row: int


@dataclass
class ReconciliationReport:
    matched: int = 0
    findings: list[Finding] = field(default_factory=list)
    reversals: list[Reversal] = field(default_factory=list)

    def count(self, kind: FindingKind) -> int:
        return sum(1 for finding in self.findings if finding.kind == kind)


# The ledger status a statement status confirms.
_CONFIRMS: dict[str, frozenset[str]] = {
    "paid": frozenset({PAID}),
    "failed": frozenset({FAILED}),
    "reversed": frozenset({REVERSED}),
}


def reconcile(ledger: Iterable[LedgerPosition], statement: Sequence[StatementLine]) -> ReconciliationReport:
    """Match a provider statement against the ledger, line by line, by payment reference.

    - a statement line with no such payment: `unknown_to_ledger`;
    - a payment sent to the provider with no statement line: `missing_from_statement`;
    - amount or currency differ: `amount_mismatch` (no reversal is applied to such a line);
    - statuses differ: `status_mismatch`, except `reversed` on a `paid` payment with the same
      amount, which is a reversal to apply (listed in `reversals`, counted as matched).
    """
    report = ReconciliationReport()
    positions = {position.payment_ref: position for position in ledger}
    on_statement: set[str] = set()
    for line in statement:
        on_statement.add(line.payment_ref)
        position = positions.get(line.payment_ref)
        if position is None:
            report.findings.append(
                Finding(
                    "unknown_to_ledger",
                    line.payment_ref,
                    f"row {line.row}: the ledger has no payment {line.payment_ref}",
                    row=line.row,
                    statement_amount_minor=line.amount_minor,
                    statement_currency=line.currency,
                    statement_status=line.status,
                )
            )
            continue
        details = {
            "row": line.row,
            "ledger_amount_minor": position.amount_minor,
            "ledger_currency": position.currency,
            "ledger_status": position.status,
            "statement_amount_minor": line.amount_minor,
            "statement_currency": line.currency,
            "statement_status": line.status,
        }
        clean = True
        if (line.amount_minor, line.currency) != (position.amount_minor, position.currency):
            clean = False
            report.findings.append(
                Finding(
                    "amount_mismatch",
                    line.payment_ref,
                    f"row {line.row}: the statement says {line.amount_minor} {line.currency}, "
                    f"the ledger {position.amount_minor} {position.currency}",
                    **details,  # type: ignore[arg-type]
                )
            )
        if position.status not in _CONFIRMS[line.status]:
            if clean and line.status == REVERSED and position.status == PAID:
                report.reversals.append(Reversal(line.payment_ref, line.settled_on, line.row))
            else:
                clean = False
                report.findings.append(
                    Finding(
                        "status_mismatch",
                        line.payment_ref,
                        f"row {line.row}: the statement says {line.status}, the ledger {position.status}",
                        **details,  # type: ignore[arg-type]
                    )
                )
        if clean:
            report.matched += 1
    for reference, position in positions.items():
        if position.submitted and reference not in on_statement:
            report.findings.append(
                Finding(
                    "missing_from_statement",
                    reference,
                    f"the ledger has {reference} as {position.status} "
                    f"({position.amount_minor} {position.currency}); the statement does not list it",
                    ledger_amount_minor=position.amount_minor,
                    ledger_currency=position.currency,
                    ledger_status=position.status,
                )
            )
    return report


_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_csv_cell(value: object) -> str:
    """Spreadsheet formula injection: a text cell starting with = + - @ is prefixed with '."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


# ---- person merges -----------------------------------------------------------------------


@dataclass(frozen=True)
class HeldPayment:
    """A payment of one of the persons now known to be the same person, in one cycle."""

    payment_ref: str
    person_id: str
    status: str
    amount_minor: int
    currency: str
    created_order: int  # smaller = created earlier (position in creation order)


@dataclass(frozen=True)
class Overpayment:
    payment_ref: str  # the later payment, to recover
    kept_payment_ref: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class MergeResolution:
    kept: str | None
    cancel: list[str]
    overpaid: list[Overpayment]


def resolve_merged_payments(payments: Sequence[HeldPayment]) -> MergeResolution:
    """One person, one payment per cycle — after a merge, decide what happens to the others.

    The payment kept is the earliest one the provider already has (sent or paid), else the
    earliest created. Every other live payment not yet sent is cancelled (`failed`, reason
    `merged_duplicate`): cancelling beats recovering money. A second payment the provider
    already has cannot be cancelled: it is an overpayment to recover, never silent.
    Failed and reversed payments delivered nothing and are left alone.
    """
    live = sorted((p for p in payments if p.status in LIVE), key=lambda p: (p.created_order, p.payment_ref))
    if len(live) < 2:
        return MergeResolution(live[0].payment_ref if live else None, [], [])
    at_provider = [p for p in live if p.status in AT_PROVIDER]
    kept = at_provider[0] if at_provider else live[0]
    cancel = [p.payment_ref for p in live if p is not kept and p.status in UNSENT]
    overpaid = [
        Overpayment(p.payment_ref, kept.payment_ref, p.amount_minor, p.currency)
        for p in live
        if p is not kept and p.status in AT_PROVIDER
    ]
    return MergeResolution(kept.payment_ref, cancel, overpaid)
