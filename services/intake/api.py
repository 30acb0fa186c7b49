"""Intake's HTTP routes (SPEC §3) and the one place where errors become status codes.

Every error a user sees is `{"code": ..., "message": ...}`: a stable code and a plain sentence.
Uploads are spooled to a temporary file while their size and SHA-256 are taken, then validated
row by row in a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from tempfile import SpooledTemporaryFile
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Histogram
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.intake import domain, handlers
from services.intake.parser import Format
from shared.auth import AuthError

SPOOL_IN_MEMORY_BYTES = 1024 * 1024
MULTIPART_ALLOWANCE_BYTES = 64 * 1024  # boundaries and part headers around the file
CSV_MEDIA_TYPES = {
    "",
    "text/csv",
    "application/csv",
    "text/plain",
    "application/vnd.ms-excel",
    "application/octet-stream",
}
JSON_MEDIA_TYPES = {"application/json", "text/json"}
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")

STATUS_BY_REFUSAL = {"file_too_large": 413, "too_many_rows": 413, "unsupported_media_type": 415}


# ---- schemas --------------------------------------------------------------------------------


class Problem(BaseModel):
    code: str
    message: str
    column: str | None = None


class WhoAmI(BaseModel):
    partner_id: str
    name: str
    role: str


class RowProblem(BaseModel):
    row: int
    column: str | None
    code: str
    message: str


class BatchReceiptOut(BaseModel):
    batch_id: str
    accepted: int
    rejected: int
    errors: list[RowProblem]
    created_at: datetime


class BatchStatusOut(BaseModel):
    batch_id: str
    created_at: datetime
    accepted: int
    rejected: int
    eligible: int
    ineligible: int
    duplicate: int
    paid: int
    failed: int
    reversed: int
    pending_approval: int
    final: int
    pending: int
    errors: list[RowProblem]


class ProgressOut(BaseModel):
    accepted: int
    rejected: int
    final: int
    pending: int
    pending_approval: int


def _errors_out(errors: list[domain.RowError]) -> list[dict[str, Any]]:
    return [{"row": e.row, "column": e.column, "code": e.code, "message": e.message} for e in errors]


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _utc(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat() if moment.tzinfo is None else moment.isoformat()


# ---- receiving a file -----------------------------------------------------------------------


def _too_large(limit: int) -> domain.FileRefused:
    return domain.FileRefused(
        "file_too_large",
        f"the file is larger than the limit of {limit:,} bytes ({limit / 1048576:.0f} MiB); split it into smaller files",
    )


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


def _digest(file_format: Format) -> Any:
    # The format is part of what was sent: the same bytes as CSV and as JSON are different files.
    digest = hashlib.sha256()
    digest.update(file_format.encode() + b"\n")
    return digest


async def receive_upload(request: Request, limit: int) -> handlers.Upload:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        return await _receive_multipart(request, limit)
    if media_type in JSON_MEDIA_TYPES:
        file_format: Format = "json"
    elif media_type in CSV_MEDIA_TYPES:
        file_format = "csv"
    else:
        raise domain.FileRefused(
            "unsupported_media_type",
            "send the batch as text/csv, application/json or a multipart/form-data file upload",
        )
    _check_declared_length(request, limit)
    spool: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
    digest = _digest(file_format)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            digest.update(chunk)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return handlers.Upload(spool, file_format, digest.hexdigest(), size)


async def _receive_multipart(request: Request, limit: int) -> handlers.Upload:
    _check_declared_length(request, limit + MULTIPART_ALLOWANCE_BYTES)

    async def bounded() -> AsyncIterator[bytes]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + MULTIPART_ALLOWANCE_BYTES:
                raise _too_large(limit)
            yield chunk

    parser = MultiPartParser(request.headers, bounded(), max_files=1, max_fields=20, max_part_size=64 * 1024)  # type: ignore[arg-type]
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise domain.FileRefused(
            "malformed_upload",
            f"the multipart upload cannot be read ({error.message}); send exactly one file",
        ) from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise domain.FileRefused(
            "no_file", "the multipart upload has no file: send the batch as the 'file' field"
        )
    upload = files[0]
    is_json = (upload.content_type or "").split(";", 1)[0].strip().lower() in JSON_MEDIA_TYPES or (
        upload.filename or ""
    ).lower().endswith(".json")
    file_format: Format = "json" if is_json else "csv"

    def measure() -> tuple[str, int]:
        digest = _digest(file_format)
        size = 0
        upload.file.seek(0)
        while chunk := upload.file.read(1024 * 1024):
            size += len(chunk)
            digest.update(chunk)
        upload.file.seek(0)
        return digest.hexdigest(), size

    sha256, size = await run_in_threadpool(measure)
    if size > limit:
        upload.file.close()
        raise _too_large(limit)
    return handlers.Upload(upload.file, file_format, sha256, size)


# ---- routes ---------------------------------------------------------------------------------

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "A batch in template v1 (SPEC §2): CSV with a header row, a JSON array of row objects, "
        "or either one as the `file` field of a multipart upload.",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, unknown or revoked API key"},
    403: {"model": Problem, "description": "the key's role may not do this"},
}


def build_router(
    ctx: handlers.IntakeContext, *, max_upload_bytes: int, wake_relay: Callable[[], None]
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["intake"])

    async def authenticate(authorization: str | None, role: str | None = None) -> Any:
        return await run_in_threadpool(handlers.authenticate, ctx.reader, authorization, role=role)  # type: ignore[arg-type]

    @router.get("/whoami", response_model=WhoAmI, responses={401: _ERRORS[401]})
    async def whoami(authorization: str | None = Header(default=None)) -> dict[str, str]:
        """Who a key belongs to; the other services check keys here."""
        principal = await authenticate(authorization)
        return {"partner_id": principal.partner_id, "name": principal.name, "role": principal.role}

    @router.post(
        "/batches",
        status_code=201,
        response_model=BatchReceiptOut,
        openapi_extra=_UPLOAD_BODY,
        responses={
            **_ERRORS,
            409: {"model": Problem, "description": "the Idempotency-Key was used with another file"},
            413: {"model": Problem, "description": "the file exceeds the size or row limit"},
            415: {"model": Problem, "description": "unsupported content type"},
            422: {"model": Problem, "description": "the whole file is refused (encoding, columns, form)"},
        },
    )
    async def submit_batch(
        request: Request,
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
    ) -> Response:
        """Upload a batch: valid rows are accepted, every rejected row is listed with its problems."""
        principal = await authenticate(authorization, role="partner")
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            return _json(
                {
                    "code": "invalid_idempotency_key",
                    "message": "Idempotency-Key must be 1 to 200 visible ASCII characters",
                },
                422,
            )
        upload = await receive_upload(request, max_upload_bytes)
        try:
            receipt = await run_in_threadpool(
                handlers.submit_batch,
                ctx,
                principal,
                upload,
                idempotency_key=idempotency_key,
                now=datetime.now(UTC),
            )
        finally:
            upload.body.close()
        if not receipt.replayed:
            wake_relay()
        body = {
            "batch_id": receipt.batch_id,
            "accepted": receipt.accepted,
            "rejected": receipt.rejected,
            "errors": _errors_out(receipt.errors),
            "created_at": _utc(receipt.created_at),
        }
        headers = {"Idempotent-Replayed": "true"} if receipt.replayed else None
        return _json(body, 201, headers)

    @router.get(
        "/batches/{batch_id}",
        response_model=BatchStatusOut,
        responses={**_ERRORS, 404: {"model": Problem, "description": "no such batch for this partner"}},
    )
    async def batch_status(batch_id: str, authorization: str | None = Header(default=None)) -> Response:
        """A batch's progress; only the partner that sent it can see it."""
        principal = await authenticate(authorization, role="partner")
        report = await run_in_threadpool(handlers.batch_report, ctx.reader, principal, batch_id)
        progress = report.progress
        return _json(
            {
                "batch_id": report.batch_id,
                "created_at": _utc(report.created_at),
                "accepted": progress.accepted,
                "rejected": progress.rejected,
                "eligible": progress.eligible,
                "ineligible": progress.ineligible,
                "duplicate": progress.duplicate,
                "paid": progress.paid,
                "failed": progress.failed,
                "reversed": progress.reversed,
                "pending_approval": progress.pending_approval,
                "final": progress.final,
                "pending": progress.pending,
                "errors": _errors_out(report.errors),
            }
        )

    @router.get("/progress", response_model=ProgressOut)
    async def progress() -> dict[str, int]:
        """Aggregate counts over every batch (no personal data): has the pipeline drained?"""
        totals = await run_in_threadpool(handlers.programme_progress, ctx.reader)
        return {
            "accepted": totals.accepted,
            "rejected": totals.rejected,
            "final": totals.final,
            "pending": totals.pending,
            "pending_approval": totals.pending_approval,
        }

    return router


# ---- errors and timing ----------------------------------------------------------------------


class RequestTimer:
    """Request latency by method, route template and status: bounded labels, no ids."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", None) or (
                "/metrics" if scope["path"] == "/metrics" else "other"
            )
            self.histogram.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)


def install(app: FastAPI, registry: CollectorRegistry) -> None:
    """Error responses and request timing for the intake app."""
    histogram = Histogram(
        "relief_intake_request_seconds",
        "HTTP request latency of the intake service",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    )
    app.add_middleware(RequestTimer, histogram=histogram)

    async def auth_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, AuthError)
        code = {401: "unauthorized", 403: "forbidden"}.get(error.status, "auth_unavailable")
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return _json({"code": code, "message": error.message}, error.status, headers)

    async def file_refused(_: Request, error: Exception) -> Response:
        assert isinstance(error, domain.FileRefused)
        status = STATUS_BY_REFUSAL.get(error.code, 422)
        return _json({"code": error.code, "message": error.message, "column": error.column}, status)

    async def conflict(_: Request, error: Exception) -> Response:
        return _json(
            {"code": handlers.IdempotencyConflict.code, "message": handlers.IdempotencyConflict.message}, 409
        )

    async def not_found(_: Request, error: Exception) -> Response:
        return _json({"code": handlers.BatchNotFound.code, "message": handlers.BatchNotFound.message}, 404)

    app.add_exception_handler(AuthError, auth_error)
    app.add_exception_handler(domain.FileRefused, file_refused)
    app.add_exception_handler(handlers.IdempotencyConflict, conflict)
    app.add_exception_handler(handlers.BatchNotFound, not_found)
