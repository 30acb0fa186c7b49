"""Builders for disbursement tests: decisions, a SQLite database, and helpers to run the sender."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.disbursement import handlers, store
from services.disbursement.domain import FINAL
from shared.auth import AuthError, Principal, bearer_token
from shared.db import create_tables, make_engine, transaction
from shared.events import EligibilityDecided, Event, utc_now
from shared.outbox import OUTBOX_TABLES, staged_messages
from shared.sealing import Sealer

SECRET = "test-identity-secret-0123456789abcdef"  # noqa: S105 - a test secret
SEALER = Sealer(SECRET)
TOPIC = "disbursement.payments"
CURRENCIES = {"MY": "MYR", "TH": "THB", "VN": "VND", "JP": "JPY", "HK": "HKD", "PH": "PHP"}
AMOUNTS = {"MY": 48000, "TH": 360000, "VN": 2_800_000, "JP": 16_800, "HK": 120000, "PH": 600000}


def disbursement_engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    create_tables(engine, [*store.TABLES, *OUTBOX_TABLES])
    return engine


def decided(
    person_id: str,
    *,
    country: str = "MY",
    decision: str = "eligible",
    assistance: str = "cash_relief",
    amount_minor: int | None = None,
    currency: str | None = None,
    method: str = "e_wallet",
    account: str | None = "ACC-0001",
    cycle: str = "C1",
    row_id: str | None = None,
    partner_id: str = "p-tenaganita",
    event_id: str | None = None,
) -> EligibilityDecided:
    payable = decision == "eligible" and assistance == "cash_relief"
    extra: dict[str, Any] = {"event_id": event_id} if event_id else {}
    return EligibilityDecided(
        row_id=row_id or f"row-{person_id}",
        batch_id="batch-1",
        partner_id=partner_id,
        partner_name="Tenaganita",
        person_id=person_id,
        decision=decision,  # type: ignore[arg-type]
        reasons=[],
        policy_version="v1",
        cycle=cycle,
        assistance=assistance,  # type: ignore[arg-type]
        country=country,
        sex="F",
        age_years=31,
        household_size=2,
        registered_on=date(2026, 1, 5),
        amount_minor=(amount_minor if amount_minor is not None else AMOUNTS[country]) if payable else None,
        currency=(currency or CURRENCIES[country]) if payable else None,
        payout_method=method if assistance == "cash_relief" else None,  # type: ignore[arg-type]
        payout_account_sealed=SEALER.seal(account) if account and assistance == "cash_relief" else None,
        **extra,
    )


def apply(
    engine: Engine, events: Sequence[Event], *, approval_required: bool = False
) -> handlers.DecisionsApplied:
    with transaction(engine) as session:
        return handlers.apply_eligibility_events(
            session, events, approval_required=approval_required, topic=TOPIC, now=utc_now()
        )


def payments(engine: Engine) -> list[store.PaymentRecord]:
    with transaction(engine) as session:
        return store.all_payments(session)


def statuses(engine: Engine) -> Counter[str]:
    return Counter(p.status for p in payments(engine))


def ledger(engine: Engine) -> list[dict[str, Any]]:
    with transaction(engine) as session:
        query = select(store.LEDGER).order_by(store.LEDGER.c.payment_ref, store.LEDGER.c.sequence)
        return [dict(row) for row in session.execute(query).mappings()]


def provider_transfers(engine: Engine) -> Counter[str]:
    with transaction(engine) as session:
        table = store.PROVIDER_TRANSFER
        return Counter(session.execute(select(table.c.idempotency_key)).scalars())


def outbox_events(engine: Engine) -> list[dict[str, Any]]:
    import orjson

    with transaction(engine) as session:
        return [orjson.loads(message.payload) for message in staged_messages(session)]


def count(engine: Engine, table: Any) -> int:
    with transaction(engine) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


async def drain(sender: Any, engine: Engine, timeout: float = 30.0) -> None:
    """Run the sender until every payment that can be settled is."""
    async with asyncio.timeout(timeout):
        while True:
            sent = await sender.send_due()
            open_ = [p for p in payments(engine) if p.status not in FINAL and p.status != "pending_approval"]
            if not open_:
                return
            if not sent:
                await asyncio.sleep(0.02)


class FakeAuthenticator:
    """Stands in for intake's /v1/whoami: keys map to principals."""

    def __init__(self, keys: dict[str, Principal]) -> None:
        self.keys = keys

    async def authenticate(self, authorization: str | None, *, role: str | None = None) -> Principal:
        token = bearer_token(authorization)
        principal = self.keys.get(token)
        if principal is None:
            raise AuthError(401, "unknown or revoked API key")
        if role is not None and principal.role != role:
            raise AuthError(403, f"this action needs a {role} key")
        return principal


FINANCE = Principal("p-finance", "Finance Officer", "finance")
PARTNER = Principal("p-tenaganita", "Tenaganita", "partner")
KEYS = {"rk_finance_key": FINANCE, "rk_partner_key": PARTNER}
