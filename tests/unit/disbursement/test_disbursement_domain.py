"""Disbursement rules with no I/O: payments, transitions, control totals, statements, merges."""

from __future__ import annotations

from datetime import date

import pytest

from services.disbursement import domain
from services.disbursement.domain import (
    DomainError,
    HeldPayment,
    LedgerPosition,
    StatementError,
    StatementLine,
    check_control_totals,
    escape_csv_cell,
    parse_statement,
    payment_for_decision,
    payment_reference,
    reconcile,
    resolve_merged_payments,
    retry_delay,
    transition,
)


def eligible_cash(**overrides: object) -> domain.NewPayment | None:
    values: dict[str, object] = {
        "decision": "eligible", "assistance": "cash_relief", "person_id": "person-1", "cycle": "C1",
        "amount_minor": 48000, "currency": "MYR", "approval_required": False,
    }  # fmt: skip
    values.update(overrides)
    return payment_for_decision(**values)  # type: ignore[arg-type]


# ---- payments ----------------------------------------------------------------------------


def test_a_payment_reference_is_stable_per_person_and_cycle_and_reveals_nothing():
    first = payment_reference("person-1", "C1")
    assert first == payment_reference("person-1", "C1")
    assert first != payment_reference("person-1", "C2")
    assert first != payment_reference("person-2", "C1")
    assert "person" not in first and first.startswith("PAY") and len(first) == 23


def test_an_eligible_cash_decision_becomes_a_pending_payment_of_exactly_the_decided_amount():
    payment = eligible_cash()
    assert payment is not None
    assert (payment.amount_minor, payment.currency, payment.status) == (48000, "MYR", "pending")
    assert payment.payment_ref == payment_reference("person-1", "C1")


@pytest.mark.parametrize(("currency", "amount"), [("VND", 2_800_000), ("JPY", 16_800), ("KRW", 100_000)])
def test_zero_decimal_currencies_keep_the_integer_amount_as_given(currency, amount):
    payment = eligible_cash(currency=currency, amount_minor=amount)
    assert payment is not None and payment.amount_minor == amount and isinstance(payment.amount_minor, int)


def test_with_approval_required_a_payment_waits_for_approval():
    payment = eligible_cash(approval_required=True)
    assert payment is not None and payment.status == "pending_approval"


@pytest.mark.parametrize(
    "overrides", [{"decision": "ineligible"}, {"decision": "duplicate"}, {"assistance": "food_kit"}]
)
def test_ineligible_duplicate_and_in_kind_decisions_create_no_payment(overrides):
    assert eligible_cash(**overrides) is None


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"amount_minor": None}, "missing_amount"),
        ({"currency": None}, "missing_amount"),
        ({"amount_minor": 0}, "invalid_amount"),
        ({"amount_minor": -5}, "invalid_amount"),
        ({"currency": "USD"}, "unknown_currency"),
    ],
)
def test_a_payable_decision_without_a_usable_amount_is_refused_with_a_stable_code(overrides, code):
    with pytest.raises(DomainError) as error:
        eligible_cash(**overrides)
    assert error.value.code == code


# ---- state machine -----------------------------------------------------------------------


def test_the_happy_path_numbers_each_ledger_entry():
    sent = transition("PAY1", "pending", 1, "sent")
    paid = transition("PAY1", sent.status, sent.sequence, "paid")
    reversed_ = transition("PAY1", paid.status, paid.sequence, "reversed", "statement:2026-02-01")
    assert [(s.status, s.sequence) for s in (sent, paid, reversed_)] == [
        ("sent", 2),
        ("paid", 3),
        ("reversed", 4),
    ]


@pytest.mark.parametrize(
    ("current", "target"),
    [("paid", "pending"), ("paid", "failed"), ("failed", "sent"), ("reversed", "paid"), ("pending", "paid"),
     ("pending_approval", "sent"), ("sent", "pending")],
)  # fmt: skip
def test_transitions_outside_the_state_machine_are_refused(current, target):
    with pytest.raises(DomainError) as error:
        transition("PAY1", current, 2, target)
    assert error.value.code == "invalid_transition"
    assert current in error.value.message and target in error.value.message


def test_retry_delays_grow_exponentially_with_jitter_and_are_capped():
    assert retry_delay(1, 0.0) == pytest.approx(0.05)
    assert retry_delay(1, 0.999999) == pytest.approx(0.1, rel=1e-3)
    assert retry_delay(4, 0.5) == pytest.approx(0.6)
    assert retry_delay(40, 1.0) == 60.0
    assert all(0.5 * 0.1 * 2 ** (n - 1) <= retry_delay(n, j) for n in range(1, 8) for j in (0.0, 0.3, 0.9))


# ---- control totals ----------------------------------------------------------------------

PENDING_MY = [(48000, "MYR"), (40000, "MYR"), (72000, "MYR")]


def test_matching_control_totals_approve_the_set():
    totals = check_control_totals(PENDING_MY, country="MY", cycle="C1", count=3, total_minor=160000)
    assert (totals.count, totals.total_minor, totals.currency) == (3, 160000, "MYR")


@pytest.mark.parametrize(("count", "total", "named"), [(2, 160000, "count 2"), (3, 150000, "total_minor 150000"),
                                                       (4, 1, "count 4 and total_minor 1")])  # fmt: skip
def test_a_stale_count_or_total_refuses_the_approval_and_says_which(count, total, named):
    with pytest.raises(DomainError) as error:
        check_control_totals(PENDING_MY, country="MY", cycle="C1", count=count, total_minor=total)
    assert error.value.code == "control_totals_mismatch"
    assert named in error.value.message and "nothing was approved" in error.value.message
    # The checker must count independently: the refusal does not hand over the right figures.
    assert "160000" not in error.value.message and " 3 " not in error.value.message


def test_nothing_to_approve_and_mixed_currencies_are_refused():
    with pytest.raises(DomainError) as empty:
        check_control_totals([], country="TH", cycle="C1", count=0, total_minor=0)
    assert empty.value.code == "nothing_to_approve"
    with pytest.raises(DomainError) as mixed:
        check_control_totals([(1, "MYR"), (1, "THB")], country="MY", cycle="C1", count=2, total_minor=2)
    assert mixed.value.code == "mixed_currencies"


# ---- statements --------------------------------------------------------------------------

HEADER = "payment_ref,amount_minor,currency,status,settled_on\n"


def test_a_statement_is_parsed_into_lines_with_row_numbers():
    text = "\ufeff" + HEADER + "PAY1,48000,MYR,paid,2026-01-10\n\nPAY2,2800000,VND,reversed,2026-01-11\n"
    lines = parse_statement(text)
    assert lines == [
        StatementLine(1, "PAY1", 48000, "MYR", "paid", date(2026, 1, 10)),
        StatementLine(3, "PAY2", 2800000, "VND", "reversed", date(2026, 1, 11)),
    ]


def test_statement_columns_may_come_in_any_order_with_extra_ones():
    lines = parse_statement(
        "status,settled_on,currency,payment_ref,amount_minor,note\npaid,2026-01-10,MYR,PAY1,5,x\n"
    )
    assert lines[0].payment_ref == "PAY1" and lines[0].amount_minor == 5


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ("PAY1,480.00,MYR,paid,2026-01-10", "amount_minor", "whole number"),
        ("PAY1,48000,myr,paid,2026-01-10", "currency", "ISO 4217"),
        ("PAY1,48000,MYR,settled,2026-01-10", "status", "paid, failed or reversed"),
        ("PAY1,48000,MYR,paid,10/01/2026", "settled_on", "YYYY-MM-DD"),
        ("PAY1,48000,MYR,paid,2026-02-30", "settled_on", "YYYY-MM-DD"),
        ("P" * 65 + ",48000,MYR,paid,2026-01-10", "payment_ref", "1–64"),
    ],
)
def test_a_bad_statement_row_is_reported_with_its_row_and_column(row, column, fragment):
    with pytest.raises(StatementError) as error:
        parse_statement(HEADER + "PAY0,1,MYR,paid,2026-01-10\n" + row + "\n")
    assert error.value.code == "invalid_statement"
    assert [(e.row, e.column) for e in error.value.errors] == [(2, column)]
    assert error.value.message.startswith(f"row 2, column {column}:") and fragment in error.value.message


def test_a_statement_without_a_required_column_or_with_a_repeated_reference_is_refused():
    with pytest.raises(StatementError) as missing:
        parse_statement("payment_ref,amount_minor,currency,status\nPAY1,1,MYR,paid\n")
    assert "settled_on" in missing.value.message
    with pytest.raises(StatementError) as repeated:
        parse_statement(HEADER + "PAY1,1,MYR,paid,2026-01-10\nPAY1,1,MYR,paid,2026-01-10\n")
    assert repeated.value.errors[0].row == 2 and "already appears on row 1" in repeated.value.message
    with pytest.raises(StatementError) as empty:
        parse_statement("")
    assert "empty" in empty.value.message


# ---- reconciliation ----------------------------------------------------------------------


def position(
    ref: str, amount: int = 48000, currency: str = "MYR", status: str = "paid", submitted: bool = True
) -> LedgerPosition:
    return LedgerPosition(ref, amount, currency, status, submitted)


def line(
    row: int, ref: str, amount: int = 48000, currency: str = "MYR", status: str = "paid"
) -> StatementLine:
    return StatementLine(row, ref, amount, currency, status, date(2026, 1, 10))  # type: ignore[arg-type]


def test_a_statement_with_a_missing_an_unknown_a_wrong_amount_and_a_wrong_currency_gives_exactly_four_findings():
    ledger = [position("PAY-A"), position("PAY-B"), position("PAY-C"), position("PAY-D"), position("PAY-E")]
    statement = [
        line(1, "PAY-A"),
        line(2, "PAY-B", amount=47000),  # wrong amount
        line(3, "PAY-C", currency="THB"),  # wrong currency
        line(4, "PAY-E"),
        line(5, "PAY-X"),  # unknown to the ledger; PAY-D is missing from the statement
    ]
    report = reconcile(ledger, statement)
    assert report.matched == 2
    assert sorted((f.kind, f.payment_ref) for f in report.findings) == [
        ("amount_mismatch", "PAY-B"),
        ("amount_mismatch", "PAY-C"),
        ("missing_from_statement", "PAY-D"),
        ("unknown_to_ledger", "PAY-X"),
    ]
    wrong_currency = next(f for f in report.findings if f.payment_ref == "PAY-C")
    assert (wrong_currency.ledger_currency, wrong_currency.statement_currency, wrong_currency.row) == (
        "MYR",
        "THB",
        3,
    )
    assert report.reversals == []


def test_a_reversal_of_a_paid_payment_is_applied_not_reported_as_a_mismatch():
    report = reconcile([position("PAY-A")], [line(1, "PAY-A", status="reversed")])
    assert report.findings == [] and report.matched == 1
    assert [r.payment_ref for r in report.reversals] == ["PAY-A"]
    # Uploading the same statement again finds the payment already reversed: nothing more to do.
    again = reconcile([position("PAY-A", status="reversed")], [line(1, "PAY-A", status="reversed")])
    assert again.findings == [] and again.reversals == [] and again.matched == 1


def test_a_reversal_with_a_different_amount_or_of_an_unpaid_payment_is_a_finding_not_applied():
    report = reconcile(
        [position("PAY-A"), position("PAY-B", status="failed")],
        [line(1, "PAY-A", amount=1, status="reversed"), line(2, "PAY-B", status="reversed")],
    )
    # PAY-A differs in amount and, since the reversal is not applied, in status too.
    assert sorted((f.kind, f.payment_ref) for f in report.findings) == [
        ("amount_mismatch", "PAY-A"), ("status_mismatch", "PAY-A"), ("status_mismatch", "PAY-B"),
    ]  # fmt: skip
    assert report.reversals == [] and report.matched == 0


def test_status_mismatches_and_payments_never_sent():
    ledger = [
        position("PAY-A", status="sent"),
        position("PAY-B", status="failed"),
        position("PAY-P", status="pending", submitted=False),
    ]
    report = reconcile(ledger, [line(1, "PAY-A"), line(2, "PAY-B", status="failed")])
    assert [(f.kind, f.payment_ref, f.ledger_status, f.statement_status) for f in report.findings] == [
        ("status_mismatch", "PAY-A", "sent", "paid")
    ]
    assert report.matched == 1  # PAY-B failed on both sides; PAY-P never went to the provider


@pytest.mark.parametrize("value", ["=1+1", "+44", "-2", "@SUM(A1)", "\tx"])
def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(value):
    assert escape_csv_cell(value) == "'" + value


def test_ordinary_csv_cells_are_left_alone():
    assert [escape_csv_cell(v) for v in ("PAY1", 48000, None, "a=b")] == ["PAY1", "48000", "", "a=b"]


# ---- merges ------------------------------------------------------------------------------


def held(ref: str, status: str, order: int, person: str = "p") -> HeldPayment:
    return HeldPayment(ref, person, status, 48000, "MYR", order)


def test_two_paid_payments_of_one_person_flag_the_later_one_as_an_overpayment():
    resolution = resolve_merged_payments(
        [held("PAY-S", "paid", 0, "survivor"), held("PAY-M", "paid", 1, "merged")]
    )
    assert resolution.kept == "PAY-S" and resolution.cancel == []
    assert resolution.overpaid == [domain.Overpayment("PAY-M", "PAY-S", 48000, "MYR")]


def test_an_unsent_duplicate_is_cancelled_rather_than_paid_and_recovered():
    resolution = resolve_merged_payments([held("PAY-S", "paid", 0), held("PAY-M", "pending", 1)])
    assert (resolution.kept, resolution.cancel, resolution.overpaid) == ("PAY-S", ["PAY-M"], [])
    # Even when the unsent one was created first, the one already at the provider is kept.
    resolution = resolve_merged_payments([held("PAY-M", "pending_approval", 0), held("PAY-S", "sent", 1)])
    assert (resolution.kept, resolution.cancel, resolution.overpaid) == ("PAY-S", ["PAY-M"], [])


def test_two_unsent_payments_keep_the_earliest_and_failed_ones_are_left_alone():
    resolution = resolve_merged_payments(
        [held("PAY-S", "pending", 0), held("PAY-M", "pending", 1), held("PAY-F", "failed", 2)]
    )
    assert (resolution.kept, resolution.cancel, resolution.overpaid) == ("PAY-S", ["PAY-M"], [])
    lone = resolve_merged_payments([held("PAY-S", "failed", 0), held("PAY-M", "paid", 1)])
    assert (lone.kept, lone.cancel, lone.overpaid) == ("PAY-M", [], [])
