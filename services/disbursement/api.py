"""Finance HTTP routes: payments, approvals (maker-checker), reconciliations, overpayments.

Every route needs a finance key, checked with intake's `/v1/whoami`. Domain errors become
status codes here, in one place; the body is always `{"error": code, "message": text, ...}`.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from services.disbursement import domain, handlers, store
from services.disbursement.domain import PAYMENT_STATUSES, DomainError, StatementError
from services.disbursement.metrics import DisbursementMetrics
from services.disbursement.provider import SimulatedProvider
from shared.auth import AuthError, Principal
from shared.db import transaction
from shared.events import utc_now

# Domain error code → HTTP status. Anything not listed is a 409 (a rule refused the request).
STATUS_OF_CODE = {
    "invalid_statement": 422,
    "invalid_control_totals": 422,
    "unknown_payment": 404,
    "no_statement_here": 404,
}


@dataclass
class Context:
    """What the routes need, built once in `app.py`."""

    engine: Engine
    authenticator: Any  # `.authenticate(authorization, role=...)` → Principal
    cycle: str
    payments_topic: str
    max_upload_bytes: int
    metrics: DisbursementMetrics
    provider: Any
    after_commit: Callable[[], None]


def context(request: Request) -> Context:
    value: Context = request.app.state.disbursement
    return value


async def finance_user(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    principal: Principal = await context(request).authenticator.authenticate(authorization, role="finance")
    return principal


FinanceUser = Annotated[Principal, Depends(finance_user)]


def _json(payload: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, default=_default), status_code=status_code, media_type="application/json"
    )


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def error_response(code: str, message: str, status_code: int | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message, **extra}, status_code=status_code or STATUS_OF_CODE.get(code, 409)
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def auth_error(_: Request, error: AuthError) -> JSONResponse:
        code = {401: "unauthorized", 403: "forbidden"}.get(error.status, "auth_unavailable")
        return error_response(code, error.message, error.status)

    @app.exception_handler(StatementError)
    async def statement_error(_: Request, error: StatementError) -> JSONResponse:
        return error_response(error.code, error.message, 422, errors=[asdict(e) for e in error.errors])

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, error: DomainError) -> JSONResponse:
        return error_response(error.code, error.message)


class ErrorBody(BaseModel):
    error: str
    message: str


class FrameworkError(BaseModel):
    detail: str


# Every route needs a finance key; these answers are part of each route's contract.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, unknown or revoked API key"},
    403: {"model": ErrorBody, "description": "the key is not a finance key"},
    503: {"model": ErrorBody, "description": "the key cannot be checked: intake is unreachable"},
}

router = APIRouter(prefix="/v1", tags=["finance"], responses=AUTH_RESPONSES)

# A route's own refusals, in the same body. A 422 needs no entry: FastAPI documents one for every
# route with parameters, and its schema (an optional `detail`) admits ErrorBody as well.
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such payment or statement"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "refused: nothing was changed (the body says why)"}
}
# FastAPI's own answer when a JSON body cannot be read at all (e.g. it is not UTF-8).
UNREADABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": FrameworkError, "description": "the body could not be read as JSON"}
}


@router.get("/payments")
async def list_payments(
    request: Request,
    _: FinanceUser,
    status: Annotated[str | None, Query(description="one of " + ", ".join(PAYMENT_STATUSES))] = None,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None,
    cycle: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """Payments with `payment_ref`, `amount_minor`, `currency`, `status`, `country`, `partner_id`."""
    if status is not None and status not in PAYMENT_STATUSES:
        return error_response("invalid_status", f"status must be one of {', '.join(PAYMENT_STATUSES)}", 422)
    ctx = context(request)

    def read() -> list[dict[str, Any]]:
        with transaction(ctx.engine) as session:
            return store.list_payments(
                session, status=status, country=country, cycle=cycle, limit=limit, offset=offset
            )

    return _json(await asyncio.to_thread(read))


@router.get("/payments/{payment_ref}", responses=NOT_FOUND)
async def show_payment(request: Request, payment_ref: str, _: FinanceUser) -> Response:
    """One payment with its ledger history (every transition, in order)."""
    ctx = context(request)

    def read() -> dict[str, Any] | None:
        with transaction(ctx.engine) as session:
            found = store.payment(session, payment_ref)
            if found is None:
                return None
            body = {
                k: v
                for k, v in found._asdict().items()
                if k not in ("payout_account_sealed", "person_id", "due_at")
            }
            body["ledger"] = store.ledger_of(session, payment_ref)
            return body

    body = await asyncio.to_thread(read)
    if body is None:
        raise DomainError("unknown_payment", f"no payment {payment_ref}")
    return _json(body)


class ApprovalRequest(BaseModel):
    country: str = Field(pattern=r"^[A-Z]{2}$", description="programme country, ISO 3166-1 alpha-2")
    cycle: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="default: current cycle"
    )
    # Bounds are what the audit columns hold (INTEGER, BIGINT): beyond them a request is invalid,
    # not a server error.
    count: int = Field(ge=0, le=2**31 - 1, description="control total: number of payments being approved")
    total_minor: int = Field(ge=0, le=2**63 - 1, description="control total: their sum in minor units")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="optional: must match")


@router.post("/approvals", status_code=201, responses={**CONFLICT, **UNREADABLE_BODY})
async def approve(request: Request, body: ApprovalRequest, principal: FinanceUser) -> Response:
    """Approve a country's payments waiting for approval, against control totals (SPEC §6)."""
    ctx = context(request)
    cycle = body.cycle or ctx.cycle

    def run() -> handlers.ApprovalResult:
        with transaction(ctx.engine) as session:
            result = handlers.approve_pending(
                session, principal=principal, country=body.country, cycle=cycle, count=body.count,
                total_minor=body.total_minor, now=utc_now(), topic=ctx.payments_topic,
            )  # fmt: skip
            if body.currency is not None and body.currency != result.record["currency"]:
                raise DomainError(
                    "control_totals_mismatch",
                    f"approval refused: the payments waiting in {body.country} for cycle {cycle} are not in "
                    f"{body.currency}; nothing was approved",
                )
            return result

    def refuse(code: str) -> None:
        with transaction(ctx.engine) as session:
            handlers.record_refused_approval(
                session, principal=principal, country=body.country, cycle=cycle, count=body.count,
                total_minor=body.total_minor, code=code, now=utc_now(),
            )  # fmt: skip

    try:
        result = await asyncio.to_thread(run)
    except DomainError as error:
        await asyncio.to_thread(refuse, error.code)
        raise
    ctx.metrics.observe(result.applied)
    ctx.after_commit()
    record = result.record
    return _json({"approved": True, **record}, 201)


@router.get("/approvals")
async def list_approvals(request: Request, _: FinanceUser) -> Response:
    """Every approval attempt, granted or refused, with who and when."""
    ctx = context(request)

    def read() -> list[dict[str, Any]]:
        with transaction(ctx.engine) as session:
            return store.list_approvals(session)

    return _json(await asyncio.to_thread(read))


async def _statement_text(request: Request, limit: int) -> str:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = next((value for value in form.values() if hasattr(value, "read")), None)
        if upload is None:
            raise StatementError("the upload holds no file: send the statement CSV as a file field")
        raw = await upload.read(limit + 1)
    else:
        raw = await request.body()
    if len(raw) > limit:
        raise StatementError(f"the statement exceeds {limit} bytes")
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise StatementError("the statement is not UTF-8 text") from None


REPORT_COLUMNS = (
    "kind", "payment_ref", "row", "ledger_amount_minor", "ledger_currency", "ledger_status",
    "statement_amount_minor", "statement_currency", "statement_status", "message",
)  # fmt: skip


def report_body(result: handlers.ReconciliationResult) -> dict[str, Any]:
    report = result.report
    return {
        "reconciliation_id": result.reconciliation_id,
        "lines": result.lines,
        "matched": report.matched,
        **{kind: report.count(kind) for kind in domain.FINDING_KINDS},
        "reversed": len(result.applied),
        "items": [asdict(finding) for finding in report.findings],
        "reversals": [
            {"payment_ref": r.payment_ref, "row": r.row, "settled_on": r.settled_on.isoformat()}
            for r in report.reversals
        ],
    }


def report_csv(body: dict[str, Any]) -> str:
    """The findings as CSV; every cell is escaped against spreadsheet formula injection."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for item in body["items"]:
        writer.writerow([domain.escape_csv_cell(item.get(column)) for column in REPORT_COLUMNS])
    return buffer.getvalue()


CSV_BODY = {"schema": {"type": "string"}}


@router.post(
    "/reconciliations",
    responses={
        200: {
            "description": "the discrepancy report: JSON, or CSV with `format=csv`",
            "content": {"application/json": {}, "text/csv": CSV_BODY},
        },
        **CONFLICT,
    },
)
async def reconcile(
    request: Request, principal: FinanceUser, format: Literal["json", "csv"] = "json"
) -> Response:
    """Match a provider statement CSV (`payment_ref,amount_minor,currency,status,settled_on`)."""
    ctx = context(request)
    text = await _statement_text(request, ctx.max_upload_bytes)
    lines = domain.parse_statement(text)

    def run() -> handlers.ReconciliationResult:
        with transaction(ctx.engine) as session:
            return handlers.reconcile_statement(
                session, lines, principal=principal, now=utc_now(), topic=ctx.payments_topic
            )

    result = await asyncio.to_thread(run)
    ctx.metrics.observe(result.applied)
    ctx.after_commit()
    body = report_body(result)
    if format == "csv":
        return Response(
            report_csv(body), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{result.reconciliation_id}.csv"'},
        )  # fmt: skip
    return _json(body)


@router.get("/overpayments")
async def list_overpayments(request: Request, _: FinanceUser) -> Response:
    """Second payments of one person in one cycle found after a merge: to recover."""
    ctx = context(request)

    def read() -> list[dict[str, Any]]:
        with transaction(ctx.engine) as session:
            return store.list_overpayments(session)

    return _json(await asyncio.to_thread(read))


@router.get("/balances")
async def balances(request: Request, _: FinanceUser) -> Response:
    """Per currency, the ledger's delivered sum next to the sum of paid payments (they agree)."""
    ctx = context(request)

    def read() -> dict[str, dict[str, int]]:
        with transaction(ctx.engine) as session:
            return store.balances(session)

    return _json(await asyncio.to_thread(read))


@router.get(
    "/provider/statement",
    response_class=Response,
    responses={200: {"description": "the statement CSV", "content": {"text/csv": CSV_BODY}}, **NOT_FOUND},
)
async def provider_statement(request: Request, _: FinanceUser) -> Response:
    """The simulated provider's statement CSV (what a real provider would send finance)."""
    ctx = context(request)
    if not isinstance(ctx.provider, SimulatedProvider):
        raise DomainError(
            "no_statement_here", "statements come from the payment provider, not from this service"
        )
    text = await asyncio.to_thread(ctx.provider.statement_csv)
    return Response(text, media_type="text/csv; charset=utf-8")
