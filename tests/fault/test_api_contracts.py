"""Every service's HTTP API against its own OpenAPI document, with generated requests (Schemathesis):
no 5xx, and every response in the documented shape and content type, with no key, a wrong key and
the right key for the route."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relief_cli.stack import Stack
from shared.settings import SERVICES, Settings
from tests.fault.pipeline import new_finance_key
from tests.integration.intake.intake_support import add_partner

# No 5xx; every answer's status, content type and body as the service's own document says.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def keys_for(settings: Settings) -> dict[str, str]:
    _, partner = add_partner(settings, "Contract CSO")
    return {"partner": partner, "finance": new_finance_key(settings, "Contract Finance")}


def key_for(service: str, path: str, keys: dict[str, str]) -> str:
    """The role a route wants: partners upload and read batches, finance does the rest."""
    return keys["partner"] if service == "intake" else keys["finance"]


def check_service(settings: Settings, service: str, keys: dict[str, str], examples: int) -> None:
    schema = schemathesis.openapi.from_url(f"{settings.service_url(service)}/openapi.json", timeout=30)
    strategy = schema.as_strategy(GenerationMode.POSITIVE) | schema.as_strategy(GenerationMode.NEGATIVE)

    @given(case=strategy, as_whom=st_roles())
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any, as_whom: str) -> None:
        headers = dict(case.headers or {})
        headers.pop("authorization", None)
        if as_whom == "key":
            headers["Authorization"] = f"Bearer {key_for(service, case.path, keys)}"
        elif as_whom == "wrong key":
            headers["Authorization"] = "Bearer rk_pnobody_not-a-real-secret"
        elif as_whom == "generated":
            headers = dict(case.headers or {})
        case.headers = headers
        case.call_and_validate(checks=CHECKS, timeout=60)

    call()


def st_roles() -> Any:
    from hypothesis import strategies as st

    return st.sampled_from(["key", "no key", "wrong key", "generated"])


def failures_of_every_api(settings: Settings, examples: int) -> dict[str, str]:
    """One stack; each service's API checked in turn, each failure kept (with its curl reproduction)."""
    stack = Stack(settings)
    stack.start()
    failures: dict[str, str] = {}
    try:
        keys = keys_for(settings)
        for service in SERVICES:
            try:
                check_service(settings, service, keys, examples)
            except (Exception, BaseExceptionGroup) as error:
                failures[service] = f"{type(error).__name__}: {error} {error.__cause__!r}"[:4000]
    finally:
        stack.stop()
    return failures


def test_every_api_answers_generated_requests_as_documented(make_settings):
    failures = failures_of_every_api(make_settings(), examples=40)
    assert not failures, "\n\n".join(f"{service}: {failure}" for service, failure in failures.items())


@pytest.mark.fault
def test_every_api_answers_many_generated_requests_as_documented(make_settings, postgres):
    settings = make_settings(database="postgres", postgres_cluster=postgres)
    failures = failures_of_every_api(settings, examples=400)
    assert not failures, "\n\n".join(f"{service}: {failure}" for service, failure in failures.items())
