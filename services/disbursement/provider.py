"""Payment-provider adapters: the interface every provider meets, and the built-in simulation.

Every send carries the payment's idempotency key (its payment reference). A provider that sees a
key again returns the result it recorded the first time instead of paying again; the same key
with a different request is refused as a modified request (the mojaloop duplicate check: id plus
a hash of the body). That is what makes retrying after a lost reply safe.
"""

from __future__ import annotations

import abc
import asyncio
import csv
import hashlib
import hmac
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.disbursement import store
from shared.db import append_rows, one_of, transaction
from shared.events import utc_now

ReplyStatus = Literal["paid", "accepted", "refused"]
Chaos = Literal["ok", "busy", "lost_reply"]


@dataclass(frozen=True)
class PaymentOrder:
    idempotency_key: str
    amount_minor: int
    currency: str
    method: str | None
    account: str | None = field(default=None, repr=False)  # opened only to be handed to the provider


@dataclass(frozen=True)
class ProviderReply:
    """`paid`: done; `accepted`: the provider has it and will settle later; `refused`: permanent."""

    status: ReplyStatus
    provider_ref: str | None = None
    reason: str | None = None


class TransientProviderError(Exception):
    """The provider could not answer (busy, timeout, reply lost): retry later with the same key."""


class PaymentProvider(Protocol):
    async def send(self, order: PaymentOrder) -> ProviderReply: ...

    async def query_status(self, idempotency_key: str) -> ProviderReply | None: ...

    async def send_many(
        self, orders: Sequence[PaymentOrder]
    ) -> list[ProviderReply | TransientProviderError]: ...


class ProviderAdapter(abc.ABC):
    """Base for real adapters: `send_many` sends concurrently, a bounded number at a time."""

    concurrency = 32

    @abc.abstractmethod
    async def send(self, order: PaymentOrder) -> ProviderReply:
        """Execute one payment order; the same idempotency key must never execute twice."""

    @abc.abstractmethod
    async def query_status(self, idempotency_key: str) -> ProviderReply | None:
        """The provider's record of an order, or None when it never received it."""

    async def send_many(self, orders: Sequence[PaymentOrder]) -> list[ProviderReply | TransientProviderError]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(order: PaymentOrder) -> ProviderReply | TransientProviderError:
            async with gate:
                try:
                    return await self.send(order)
                except TransientProviderError as error:
                    return error

        return list(await asyncio.gather(*(one(order) for order in orders)))


def request_fingerprint(secret: bytes, order: PaymentOrder) -> str:
    """The body hash of a send. Keyed, so the provider's books hold no guessable digest of an account."""
    body = "\x1f".join(
        [
            order.idempotency_key,
            str(order.amount_minor),
            order.currency,
            order.method or "",
            order.account or "",
        ]
    )
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()


class SimulatedProvider(ProviderAdapter):
    """A financial service provider good enough to test against.

    - transient failures at `failure_rate`: half are "busy" (nothing executed), half are lost
      replies (the transfer executed, the answer never arrived);
    - an account starting with `FAIL-` is refused permanently;
    - executed transfers are kept in `disbursement_provider_transfer` by idempotency key, so a
      repeated send returns the first result and never pays twice;
    - `latency_ms` of simulated network time per call.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        secret: str,
        failure_rate: float = 0.0,
        latency_ms: int = 0,
        chaos: Callable[[], Chaos] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.secret = hashlib.sha256(b"relief simulated provider\x1f" + secret.encode()).digest()
        self.failure_rate = failure_rate
        self.latency_ms = latency_ms
        self.rng = rng or random.Random()  # noqa: S311 - simulation, not security
        self.chaos = chaos or self._random_chaos
        self.executed = 0  # transfers executed by this instance (each key at most once)
        self.lost_replies = 0

    def _random_chaos(self) -> Chaos:
        roll = self.rng.random()
        if roll >= self.failure_rate:
            return "ok"
        return "busy" if roll < self.failure_rate / 2 else "lost_reply"

    async def send(self, order: PaymentOrder) -> ProviderReply:
        (result,) = await self.send_many([order])
        if isinstance(result, TransientProviderError):
            raise result
        return result

    async def send_many(self, orders: Sequence[PaymentOrder]) -> list[ProviderReply | TransientProviderError]:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        return await asyncio.to_thread(self._execute, list(orders))

    def _execute(self, orders: list[PaymentOrder]) -> list[ProviderReply | TransientProviderError]:
        fates = [self.chaos() for _ in orders]
        results: list[ProviderReply | TransientProviderError] = []
        table = store.PROVIDER_TRANSFER
        with transaction(self.engine) as session:
            known: dict[str, Any] = {
                row.idempotency_key: row
                for chunk in store._chunks([o.idempotency_key for o in orders])
                for row in session.execute(
                    select(table).where(one_of(session, table.c.idempotency_key, chunk))
                )
            }
            new_rows = []
            now = utc_now()
            for order, fate in zip(orders, fates, strict=True):
                if fate == "busy":
                    results.append(TransientProviderError("provider busy: nothing executed"))
                    continue
                fingerprint = request_fingerprint(self.secret, order)
                recorded = known.get(order.idempotency_key)
                if recorded is not None:
                    if recorded.request_hash != fingerprint:
                        reply = ProviderReply("refused", recorded.provider_ref, "modified_request")
                    else:
                        status: ReplyStatus = "paid" if recorded.status in ("paid", "reversed") else "refused"
                        reply = ProviderReply(status, recorded.provider_ref, recorded.reason)
                else:
                    refused = (order.account or "").startswith("FAIL-")
                    provider_ref = (
                        f"FSP{hashlib.sha256(order.idempotency_key.encode()).hexdigest()[:16].upper()}"
                    )
                    reply = ProviderReply(
                        "refused" if refused else "paid", provider_ref, "account_refused" if refused else None
                    )
                    row: dict[str, Any] = {
                        "idempotency_key": order.idempotency_key,
                        "request_hash": fingerprint,
                        "amount_minor": order.amount_minor,
                        "currency": order.currency,
                        "method": order.method,
                        "status": "failed" if refused else "paid",
                        "reason": reply.reason,
                        "provider_ref": provider_ref,
                        "executed_at": now,
                        "settled_on": now.date(),
                    }
                    new_rows.append(row)
                    # A second order with the same key later in this batch sees this transfer.
                    known[order.idempotency_key] = _Recorded(
                        fingerprint, str(row["status"]), provider_ref, reply.reason
                    )
                if fate == "lost_reply":
                    results.append(TransientProviderError("reply lost after the transfer executed"))
                else:
                    results.append(reply)
            if new_rows:
                append_rows(session, table, new_rows)
        self.executed += len(new_rows)
        self.lost_replies += sum(1 for fate in fates if fate == "lost_reply")
        return results

    async def query_status(self, idempotency_key: str) -> ProviderReply | None:
        def read() -> ProviderReply | None:
            table = store.PROVIDER_TRANSFER
            with transaction(self.engine) as session:
                row = session.execute(select(table).where(table.c.idempotency_key == idempotency_key)).first()
            if row is None:
                return None
            return ProviderReply(
                "paid" if row.status in ("paid", "reversed") else "refused", row.provider_ref, row.reason
            )

        return await asyncio.to_thread(read)

    def statement_csv(self) -> str:
        """The provider's statement of every transfer it executed, in the reconciliation format."""
        table = store.PROVIDER_TRANSFER
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["payment_ref", "amount_minor", "currency", "status", "settled_on"])
        with transaction(self.engine) as session:
            rows = session.execute(
                select(
                    table.c.idempotency_key,
                    table.c.amount_minor,
                    table.c.currency,
                    table.c.status,
                    table.c.settled_on,
                ).order_by(table.c.executed_at, table.c.idempotency_key)
            ).all()
        for key, amount, currency, status, settled_on in rows:
            settled = settled_on.isoformat() if isinstance(settled_on, date) else str(settled_on)
            writer.writerow([key, amount, currency, status, settled])
        return buffer.getvalue()


@dataclass(frozen=True)
class _Recorded:
    request_hash: str
    status: str
    provider_ref: str
    reason: str | None
