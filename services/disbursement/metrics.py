"""Disbursement's Prometheus metrics, on the service's own registry; labels stay bounded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.disbursement.domain import PAID, REVERSED
from services.disbursement.handlers import Applied


@dataclass
class DisbursementMetrics:
    payments: Counter
    disbursed_minor: Counter
    reversed_minor: Counter
    provider_seconds: Histogram
    provider_retries: Counter
    pending_approvals: Gauge
    _pending_countries: set[str] = field(default_factory=set)

    def observe(self, applied: Iterable[Applied]) -> None:
        """Count committed transitions (call only after the transaction went through)."""
        counts: dict[tuple[str, str], list[int]] = {}
        for item in applied:
            slot = counts.setdefault((item.status, item.currency), [0, 0])
            slot[0] += 1
            slot[1] += item.amount_minor
        for (status, currency), (count, amount) in counts.items():
            self.payments.labels(status, currency).inc(count)
            if status == PAID:
                self.disbursed_minor.labels(currency).inc(amount)
            elif status == REVERSED:
                self.reversed_minor.labels(currency).inc(amount)

    def set_pending_approvals(self, counts: dict[str, int]) -> None:
        for country in self._pending_countries - set(counts):
            self.pending_approvals.labels(country).set(0)
        for country, count in counts.items():
            self.pending_approvals.labels(country).set(count)
        self._pending_countries |= set(counts)


def disbursement_metrics(registry: CollectorRegistry) -> DisbursementMetrics:
    return DisbursementMetrics(
        payments=Counter(
            "relief_payments_total", "Payment transitions, by the status entered and currency",
            ["status", "currency"], registry=registry,
        ),
        disbursed_minor=Counter(
            "relief_disbursed_minor_total", "Amounts paid out, in minor units, by currency",
            ["currency"], registry=registry,
        ),
        reversed_minor=Counter(
            "relief_reversed_minor_total", "Amounts reversed after payment, in minor units, by currency",
            ["currency"], registry=registry,
        ),
        provider_seconds=Histogram(
            "relief_provider_seconds", "Time of one call to the payment provider (a batch of orders)",
            registry=registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ),
        provider_retries=Counter(
            "relief_provider_retries_total", "Provider sends that failed transiently and were scheduled again",
            registry=registry,
        ),
        pending_approvals=Gauge(
            "relief_pending_approvals", "Payments waiting for a finance approval, by country",
            ["country"], registry=registry,
        ),
    )  # fmt: skip
