"""The sending loop: claim due payments in batches, call the provider, record the replies.

Three short transactions per batch (claim, provider, record), none held open across the
provider call. Replicas share the work through `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite
has a single writer anyway.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from services.disbursement import handlers
from services.disbursement.metrics import DisbursementMetrics
from services.disbursement.provider import PaymentProvider, ProviderReply, TransientProviderError
from shared.db import transaction
from shared.events import utc_now
from shared.logging import get_logger

log = get_logger(__name__)


class PaymentSender:
    def __init__(
        self,
        engine: Engine,
        provider: PaymentProvider,
        *,
        open_account: Callable[[str], str],
        metrics: DisbursementMetrics,
        topic: str,
        batch_size: int = 500,
        lease_seconds: float = 15.0,
        idle_seconds: float = 0.1,
        retry_base_seconds: float = 0.1,
        retry_cap_seconds: float = 60.0,
        after_commit: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.open_account = open_account
        self.metrics = metrics
        self.topic = topic
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.idle_seconds = idle_seconds
        self.retry_base_seconds = retry_base_seconds
        self.retry_cap_seconds = retry_cap_seconds
        self.after_commit = after_commit
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _claim(self) -> handlers.Claimed:
        with transaction(self.engine) as session:
            return handlers.claim_due_payments(
                session, now=utc_now(), limit=self.batch_size, lease_seconds=self.lease_seconds,
                open_account=self.open_account, topic=self.topic,
            )  # fmt: skip

    def _record(
        self, replies: list[tuple[handlers.Claim, ProviderReply | TransientProviderError]]
    ) -> handlers.Recorded:
        with transaction(self.engine) as session:
            return handlers.record_provider_replies(
                session, replies, now=utc_now(), jitter=self.rng.random, topic=self.topic,
                retry_base_seconds=self.retry_base_seconds, retry_cap_seconds=self.retry_cap_seconds,
            )  # fmt: skip

    def _committed(self, applied: list[handlers.Applied]) -> None:
        self.metrics.observe(applied)
        if applied and self.after_commit is not None:
            self.after_commit()

    async def send_due(self) -> int:
        """One batch: returns how many payments were handed to the provider."""
        claimed = await asyncio.to_thread(self._claim)
        self._committed(claimed.applied)
        if not claimed.claims:
            return 0
        started = time.perf_counter()
        try:
            replies: list[Any] = await self.provider.send_many([claim.order for claim in claimed.claims])
        except Exception as error:  # an adapter fault: treat every order as not answered
            log.error("provider_call_failed", error=type(error).__name__, orders=len(claimed.claims))
            replies = [TransientProviderError(type(error).__name__) for _ in claimed.claims]
        self.metrics.provider_seconds.observe(time.perf_counter() - started)
        recorded = await asyncio.to_thread(self._record, list(zip(claimed.claims, replies, strict=True)))
        self._committed(recorded.applied)
        if recorded.retries:
            self.metrics.provider_retries.inc(recorded.retries)
        return len(claimed.claims)

    async def run(self) -> None:
        delay = self.idle_seconds
        while not self._stopping:
            try:
                sent = await self.send_due()
                delay = self.idle_seconds
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: keep the payments, try again later
                log.warning(
                    "sender_batch_failed", error=type(error).__name__, detail=str(error)[:200], retry_in=delay
                )
                sent = 0
                delay = min(max(delay * 2, 0.5), 10.0)
            if sent < self.batch_size:
                await asyncio.sleep(delay)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="payment-sender")

    async def stop(self) -> None:
        """Finish the batch in hand (so no payment waits for a lease to expire), then stop."""
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=15)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
