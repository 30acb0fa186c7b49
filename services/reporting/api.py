"""HTTP routes: the reach report as JSON and CSV, and the dashboard."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError

from services.reporting.dashboard import render_dashboard
from services.reporting.domain import reach_csv, reach_document
from services.reporting.state import ReachSnapshot, ReportingState


class DatabaseUnavailable(Exception):
    """The reporting database did not answer; the caller sees 503 with a plain message."""


def _reach(state: ReportingState) -> ReachSnapshot:
    try:
        return state.current_reach()
    except OperationalError as error:
        raise DatabaseUnavailable(str(error.orig)[:200]) from None


def make_router(state: ReportingState) -> APIRouter:
    router = APIRouter()

    # Plain `def` routes: FastAPI runs them in its thread pool, so the query never blocks the loop.

    @router.get(
        "/v1/reach", tags=["reach"], summary="Deduplicated reach, its breakdowns and money paid (SPEC §6)"
    )
    def reach() -> Response:
        snapshot = _reach(state)
        body = orjson.dumps(reach_document(snapshot.reach, snapshot.as_of), option=orjson.OPT_SORT_KEYS)
        return Response(body, media_type="application/json")

    @router.get(
        "/v1/reach.csv",
        tags=["reach"],
        summary="The reach report as a flat CSV",
        response_class=Response,
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}},
    )
    def reach_as_csv(
        min_cell: int | None = Query(
            None, ge=1, le=1_000_000, description="replace every count from 1 to min_cell−1 with `<min_cell`"
        ),
        hxl: bool = Query(False, description="add an HXL hashtag row under the header"),
    ) -> Response:
        snapshot = _reach(state)
        return Response(
            reach_csv(snapshot.reach, min_cell=min_cell, hxl=hxl),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'inline; filename="reach.csv"'},
        )

    @router.get("/dashboard", response_class=HTMLResponse, tags=["reach"], summary="The programme dashboard")
    def dashboard() -> HTMLResponse:
        snapshot = _reach(state)
        try:
            statuses = state.payment_statuses()
        except OperationalError as error:
            raise DatabaseUnavailable(str(error.orig)[:200]) from None
        return HTMLResponse(render_dashboard(snapshot.reach, snapshot.as_of, state.health, statuses))

    @router.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    return router


async def database_unavailable(_: object, error: Exception) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "code": "database_unavailable",
                "message": f"the reporting database did not answer, try again shortly ({error})",
            }
        },
        status_code=503,
    )
