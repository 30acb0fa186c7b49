"""Every protected route of eligibility and disbursement, over real HTTP, with keys checked by the
real intake: no key, an unknown key, a revoked key, a partner's key (wrong role) and a finance key.
(Intake's own routes, and another partner's batch, are in tests/integration/intake/test_intake_access.py.)"""

from __future__ import annotations

import httpx

from tests.integration.intake.intake_support import add_partner, bearer, revoke

PROTECTED = {
    "disbursement": [
        ("GET", "/v1/payments"),
        ("GET", "/v1/payments/pay-unknown"),
        ("GET", "/v1/approvals"),
        ("POST", "/v1/approvals"),
        ("POST", "/v1/reconciliations"),
        ("GET", "/v1/overpayments"),
        ("GET", "/v1/balances"),
        ("GET", "/v1/provider/statement"),
    ],
    "eligibility": [("GET", "/v1/reviews"), ("POST", "/v1/reviews/r-unknown")],
}
BODIES = {
    "/v1/approvals": {"json": {"country": "MY", "count": 0, "total_minor": 0}},
    "/v1/reconciliations": {"content": b"payment_ref,amount_minor,currency,status,settled_on\n"},
    "/v1/reviews/r-unknown": {"json": {"resolution": "distinct", "reason": "different people"}},
}


def test_every_protected_route_refuses_every_wrong_key(make_settings, start_service):
    settings = make_settings()
    partner_id, partner_key = add_partner(settings, "CSO A")
    _, finance_key = add_partner(settings, "Finance", role="finance")
    revoked_id, revoked_key = add_partner(settings, "Finance Revoked", role="finance")
    revoke(settings, revoked_id)
    start_service("intake", settings)
    urls = {name: start_service(name, settings).url for name in PROTECTED}
    callers = {
        "no key": {},
        "unknown key": bearer(f"rk_{partner_id}_not-the-secret"),
        "malformed key": bearer("not-a-key"),
        "revoked key": bearer(revoked_key),
        "partner key": bearer(partner_key),
        "finance key": bearer(finance_key),
    }
    seen: dict[tuple[str, str, str], int] = {}
    for service, routes in PROTECTED.items():
        for method, path in routes:
            for caller, headers in callers.items():
                response = httpx.request(
                    method, f"{urls[service]}{path}", headers=headers, timeout=30, **BODIES.get(path, {})
                )
                seen[(service, f"{method} {path}", caller)] = response.status_code
    expected = {key: {"partner key": 403, "finance key": None}.get(key[2], 401) for key in seen}
    wrong = {
        key: status
        for key, status in seen.items()
        if (expected[key] is None and status in (401, 403))
        or (expected[key] is not None and status != expected[key])
    }
    assert wrong == {}
    # The finance key got through to the route itself: its answers are the routes' own.
    assert seen[("disbursement", "GET /v1/payments", "finance key")] == 200
    assert seen[("disbursement", "GET /v1/payments/pay-unknown", "finance key")] == 404
    assert seen[("eligibility", "POST /v1/reviews/r-unknown", "finance key")] == 404
