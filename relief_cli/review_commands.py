"""`relief reviews list|resolve`: possible duplicates waiting for a finance reviewer."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import typer

from relief_cli.output import emit_json, fail, settings_or_exit, stderr, unreachable
from shared.settings import Settings


def _client(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=settings.service_url("eligibility"), timeout=30.0)


def _call(settings: Settings, method: str, path: str, finance_key: str, as_json: bool, **kwargs: Any) -> Any:
    url = settings.service_url("eligibility")
    try:
        with _client(settings) as client:
            response = client.request(
                method, path, headers={"Authorization": f"Bearer {finance_key}"}, **kwargs
            )
    except httpx.HTTPError as error:
        unreachable("eligibility", url, error, as_json=as_json)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        if isinstance(body, dict) and "message" in body:
            fail(
                str(body["message"]),
                as_json=as_json,
                code=1,
                status=response.status_code,
                reason=body.get("code"),
            )
        fail(f"eligibility answered {response.status_code}", as_json=as_json, status=response.status_code)
    return body


def _describe(review: dict[str, Any]) -> str:
    sides = " / ".join(
        f"row {row['row_id']} ({row.get('partner_name') or '?'}, {row.get('country') or '?'})"
        for row in review.get("rows", [])
    )
    return f"{review['review_id']}  {review['status']:<18} {sides}"


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the `relief` application."""
    reviews = typer.Typer(
        help="Possible duplicates (names one edit apart) for a finance reviewer to resolve.",
        no_args_is_help=True,
    )
    app.add_typer(reviews, name="reviews")

    @reviews.command("list")
    def reviews_list(
        finance_key: str = typer.Option(..., "--finance-key", help="A finance user's API key."),
        status: str = typer.Option(
            "open", "--status", help="open, same_person, distinct, already_one_person or all."
        ),
        limit: int = typer.Option(500, "--limit", min=1, max=5000, help="At most this many, oldest first."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """List possible duplicates, open ones by default."""
        settings = settings_or_exit()
        params = {"status": status, "limit": limit}
        body = _call(settings, "GET", "/v1/reviews", finance_key, as_json, params=params)
        if as_json:
            emit_json(body)
            return
        items = body.get("reviews", [])
        if not items:
            stderr.print(f"no {status} reviews")
            return
        for review in items:
            typer.echo(_describe(review))
        stderr.print(
            f"{len(items)} review(s); resolve with `relief reviews resolve REVIEW_ID --same-person|--distinct`"
        )

    @reviews.command("resolve")
    def reviews_resolve(
        review_id: str = typer.Argument(..., help="The review's id, from `relief reviews list`."),
        same_person: bool = typer.Option(
            False, "--same-person", help="The two rows are one person: merge them."
        ),
        distinct: bool = typer.Option(
            False, "--distinct", help="Two different people: never flag them again."
        ),
        reason: str = typer.Option(..., "--reason", help="Why; recorded with who decided and when."),
        finance_key: str = typer.Option(..., "--finance-key", help="A finance user's API key."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Record a reviewer's decision on a possible duplicate."""
        if same_person == distinct:
            fail("give exactly one of --same-person or --distinct", code=2, as_json=as_json)
        if not reason.strip():
            fail("--reason must not be empty", code=2, as_json=as_json)
        settings = settings_or_exit()
        resolution = "same_person" if same_person else "distinct"
        body = _call(
            settings,
            "POST",
            f"/v1/reviews/{quote(review_id, safe='')}",
            finance_key,
            as_json,
            json={"resolution": resolution, "reason": reason},
        )
        if as_json:
            emit_json(body)
            return
        typer.echo(_describe(body))
        merge = body.get("merge")
        if merge:
            typer.echo(f"merged person {merge['merged_person_id']} into {merge['survivor_person_id']}")
