"""How reporting reads another service's `/healthz` answer for the dashboard."""

import asyncio

import httpx

from services.reporting.health import check_service
from shared.settings import Settings

SETTINGS = Settings(kafka_bootstrap_servers="127.0.0.1:9", identity_secret="x" * 32)


def _check(handler) -> object:
    async def run():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await check_service(client, SETTINGS, "intake")

    return asyncio.run(run())


def test_an_answering_service_gives_its_outbox_figures():
    check = _check(
        lambda request: httpx.Response(
            200, json={"status": "ok", "outbox": {"backlog": 12, "oldest_age_seconds": 0.5}}
        )
    )
    assert (check.up, check.outbox_backlog, check.outbox_oldest_seconds) == (True, 12, 0.5)


def test_a_degraded_service_is_down_and_still_gives_its_backlog():
    check = _check(
        lambda request: httpx.Response(
            503, json={"status": "degraded", "outbox": {"backlog": 7, "oldest_age_seconds": 31}}
        )
    )
    assert (check.up, check.outbox_backlog, check.outbox_oldest_seconds) == (False, 7, 31.0)


def test_an_answer_without_figures_leaves_them_unknown():
    for response in (
        httpx.Response(200, json={"status": "ok"}),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=["a list"]),
        httpx.Response(200, json={"outbox": {"backlog": "many", "oldest_age_seconds": None}}),
    ):
        check = _check(lambda request, response=response: response)
        assert check.up is True
        assert (check.outbox_backlog, check.outbox_oldest_seconds) == (None, None)


def test_a_service_that_does_not_answer_is_down():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    check = _check(refuse)
    assert (check.up, check.outbox_backlog) == (False, None)
