"""Reach and whole-pipeline health as Prometheus gauges, read from reporting's latest snapshot.

A custom collector on the service's registry: a scrape only reads values already measured by
the periodic jobs, so it never waits for the database or the broker. Label sets are bounded
(country, sex, age band, currency, consumer group, topic); no id ever becomes a label.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.reporting.domain import AGE_BANDS, SEXES
from services.reporting.state import ReportingState
from shared.settings import SERVICES


class ReportingCollector(Collector):
    def __init__(self, state: ReportingState) -> None:
        self.state = state

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._reach()
        yield from self._pipeline()

    def _reach(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.state.snapshot
        if snapshot is None:
            return
        reach = snapshot.reach
        yield GaugeMetricFamily(
            "relief_beneficiaries_reached",
            "Distinct persons (after identity merges) with at least one delivered assistance",
            value=reach.beneficiaries_reached,
        )
        yield GaugeMetricFamily(
            "relief_people_reached",
            "Persons reached plus their households: per person the largest household size delivered",
            value=reach.people_reached,
        )
        by_country = GaugeMetricFamily(
            "relief_reached_by_country",
            "Distinct persons reached in each programme country",
            labels=["country"],
        )
        for country, persons in sorted(reach.by_country.items()):
            by_country.add_metric([country], persons)
        yield by_country
        by_sex = GaugeMetricFamily(
            "relief_reached_by_sex", "Distinct persons reached, by sex", labels=["sex"]
        )
        for sex in SEXES:
            by_sex.add_metric([sex], reach.by_sex.get(sex, 0))
        yield by_sex
        by_band = GaugeMetricFamily(
            "relief_reached_by_age_band",
            "Distinct persons reached, by age band on their first delivered assistance",
            labels=["age_band"],
        )
        for band in AGE_BANDS:
            by_band.add_metric([band], reach.by_age_band.get(band, 0))
        yield by_band
        amount = GaugeMetricFamily(
            "relief_disbursed_minor",
            "Money paid out (payments in status paid), in the currency's minor units",
            labels=["currency"],
        )
        paid = GaugeMetricFamily("relief_payments_paid", "Payments in status paid", labels=["currency"])
        for currency, item in sorted(reach.disbursed.items()):
            amount.add_metric([currency], item.amount_minor)
            paid.add_metric([currency], item.payments)
        yield amount
        yield paid
        yield GaugeMetricFamily(
            "relief_duplicates_detected",
            "Rows decided as duplicates of an earlier approval",
            value=reach.duplicates_detected,
        )
        yield GaugeMetricFamily(
            "relief_overpayments_detected",
            "Payments found to pay a person twice in one cycle after a merge",
            value=reach.overpayments_detected,
        )
        yield GaugeMetricFamily(
            "relief_reach_query_seconds", "Time the last reach computation took", value=snapshot.query_seconds
        )
        yield GaugeMetricFamily(
            "relief_reach_computed_timestamp_seconds",
            "When the reach figures were last computed (Unix time)",
            value=snapshot.as_of.timestamp(),
        )

    def _pipeline(self) -> Iterator[GaugeMetricFamily]:
        health = self.state.health
        if health.measured_at is None:
            return
        lag = GaugeMetricFamily(
            "relief_consumer_lag",
            "Records a consumer group has not yet committed, by group and topic",
            labels=["group", "topic"],
        )
        for (group, topic), value in sorted(health.consumer_lag.items()):
            lag.add_metric([group, topic], value)
        yield lag
        dead = GaugeMetricFamily(
            "relief_dead_letter_messages", "Messages held in each dead-letter topic", labels=["topic"]
        )
        for topic, value in sorted(health.dead_letters.items()):
            dead.add_metric([topic], value)
        yield dead
        up = GaugeMetricFamily(
            "relief_service_up",
            "Whether a service answered its health check (1) or not (0)",
            labels=["service"],
        )
        for name in SERVICES:
            check = health.services.get(name)
            up.add_metric([name], 1 if check is not None and check.up else 0)
        yield up
        yield GaugeMetricFamily(
            "relief_pipeline_health_timestamp_seconds",
            "When pipeline health was last measured (Unix time)",
            value=health.measured_at.timestamp(),
        )
