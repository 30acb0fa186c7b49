"""HTTP routes of the review queue; domain and auth errors become status codes here, in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.eligibility.domain import ReviewError
from services.eligibility.handlers import Eligibility, ReviewNotFound
from shared.auth import AuthError, Principal, Role

STATUS_FILTERS = ("open", "same_person", "distinct", "already_one_person", "all")
MAX_LIST = 5000


class Authenticator(Protocol):
    async def authenticate(self, authorization: str | None, *, role: Role | None = None) -> Principal: ...


class Problem(BaseModel):
    code: str
    message: str


# Every route checks a finance key; these answers are part of each route's contract.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, unknown or revoked API key"},
    403: {"model": Problem, "description": "the key is not a finance key"},
    503: {"model": Problem, "description": "the key cannot be checked: intake is unreachable"},
}


class ReviewDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Literal["same_person", "distinct"]
    reason: str = Field(min_length=1, max_length=1000)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _auth_error(error: AuthError) -> JSONResponse:
    code = {401: "unauthorized", 403: "forbidden"}.get(error.status, "auth_unavailable")
    return _error(error.status, code, error.message)


def _status_for(error: ReviewError) -> int:
    if isinstance(error, ReviewNotFound):
        return 404
    if error.code == "already_one_person":
        return 409
    return 422


def build_router(
    eligibility: Eligibility, authenticator: Authenticator, after_commit: Callable[[], None] = lambda: None
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reviews"], responses=AUTH_RESPONSES)

    @router.get("/reviews")
    async def list_reviews(
        authorization: str | None = Header(default=None),
        status: str = Query(
            default="open", description="open, same_person, distinct, already_one_person or all"
        ),
        limit: str = Query(default="500", description="At most this many (1 to 5000), oldest first"),
    ) -> Any:
        """Possible duplicates (one edit apart, same birth date and nationality) and their decisions."""
        try:
            await authenticator.authenticate(authorization, role="finance")
        except AuthError as error:
            return _auth_error(error)
        if status not in STATUS_FILTERS:
            return _error(422, "bad_status", f"status must be one of {', '.join(STATUS_FILTERS)}")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST:
            return _error(422, "bad_limit", f"limit must be a whole number from 1 to {MAX_LIST}")
        reviews = await asyncio.to_thread(
            eligibility.list_reviews, None if status == "all" else status, int(limit)
        )
        return {"reviews": reviews, "count": len(reviews)}

    @router.post("/reviews/{review_id}")
    async def resolve_review(
        review_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        """Record a decision on a flag: `same_person` (merge) or `distinct` (keep apart), with a reason."""
        try:
            principal = await authenticator.authenticate(authorization, role="finance")
        except AuthError as error:
            return _auth_error(error)
        try:
            body = ReviewDecisionRequest.model_validate_json(await request.body())
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            return _error(
                422,
                "invalid_body",
                f'{where}: {first["msg"]} (send {{"resolution": "same_person" or "distinct", "reason": "..."}})',
            )
        try:
            resolved = await asyncio.to_thread(
                eligibility.resolve_review, review_id, body.resolution, body.reason, principal
            )
        except ReviewError as error:
            return _error(_status_for(error), error.code, error.message)
        after_commit()
        merged = resolved.merge
        return {
            **resolved.review,
            "merge": None
            if merged is None
            else {
                "survivor_person_id": merged.survivor_person_id,
                "merged_person_id": merged.merged_person_id,
                "event_id": merged.event_id,
            },
        }

    return router
