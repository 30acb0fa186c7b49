"""What people and Prometheus see: the dashboard's HTML and the gauges, from fixed figures."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.reporting.dashboard import render_dashboard
from services.reporting.domain import Disbursed, Reach
from services.reporting.health import PipelineHealth, ServiceCheck
from services.reporting.metrics import ReportingCollector
from services.reporting.state import ReachSnapshot

MOMENT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
REACH = Reach(
    beneficiaries_reached=220_472,
    people_reached=512_030,
    by_country={"HK": 40_000, "MY": 180_472, "TH": 1},
    by_sex={"F": 150_000, "M": 70_000, "X": 472},
    by_age_band={"0-17": 2, "18-29": 100_000, "30-44": 90_000, "45-59": 30_000, "60+": 470},
    by_partner={"<script>alert(1)</script>": 5, "Tenaganita": 220_467},
    by_assistance={"cash_relief": 200_000, "food_kit": 30_000},
    disbursed={"MYR": Disbursed(8_000_000_00, 180_000), "VND": Disbursed(4_000_000, 2)},
    duplicates_detected=9_000,
)
HEALTHY = PipelineHealth(
    measured_at=MOMENT,
    consumer_lag={
        ("relief-reporting", "eligibility.decided"): 0,
        ("relief-reporting", "disbursement.payments"): 0,
    },
    dead_letters={"eligibility.decided.dlq": 0},
    services={
        name: ServiceCheck(name, True, 0, 0.0)
        for name in ("intake", "eligibility", "disbursement", "reporting")
    },
)


def test_the_dashboard_leads_with_the_headline_figures():
    page = render_dashboard(REACH, MOMENT, HEALTHY, {"paid": 180_002, "sent": 3})
    assert 'id="beneficiaries-reached">220,472<' in page
    assert 'id="people-reached">512,030<' in page
    assert "2026-03-01T09:30:00Z" in page
    assert "Malaysia (MY)" in page and "MYR 8,000,000.00" in page and "VND 4,000,000" in page
    assert "All clear" in page
    assert '<meta http-equiv="refresh"' in page


def test_the_dashboard_escapes_names_it_did_not_write():
    page = render_dashboard(REACH, MOMENT, HEALTHY, {})
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_the_dashboard_says_when_the_pipeline_needs_attention():
    troubled = PipelineHealth(
        measured_at=MOMENT,
        consumer_lag={("relief-disbursement", "eligibility.decided"): 1_200},
        dead_letters={"eligibility.decided.dlq": 3},
        services={"reporting": ServiceCheck("reporting", True, 0, 0.0)},
    )
    page = render_dashboard(REACH, MOMENT, troubled, {})
    assert "Needs attention" in page
    assert "3 dead letters to review" in page
    assert "not answering: intake, eligibility, disbursement" in page
    assert render_dashboard(REACH, MOMENT, PipelineHealth(), {}).count("Measuring") == 1


def test_the_dashboard_of_an_empty_programme_reads_zero():
    page = render_dashboard(Reach(), MOMENT, PipelineHealth(), {})
    assert 'id="beneficiaries-reached">0<' in page
    assert "nobody reached yet" in page
    assert "no payment paid yet" in page


class FixedState:
    def __init__(self) -> None:
        self.snapshot = ReachSnapshot(REACH, MOMENT, 0.05)
        self.health = HEALTHY


def scrape() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    registry.register(ReportingCollector(FixedState()))  # type: ignore[arg-type]
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_the_gauges_carry_the_reach_figures_with_bounded_labels():
    samples = scrape()
    assert samples["relief_beneficiaries_reached"][()] == 220_472
    assert samples["relief_people_reached"][()] == 512_030
    assert samples["relief_reached_by_country"][(("country", "MY"),)] == 180_472
    assert set(samples["relief_reached_by_sex"]) == {(("sex", "F"),), (("sex", "M"),), (("sex", "X"),)}
    assert samples["relief_disbursed_minor"][(("currency", "MYR"),)] == 8_000_000_00
    assert samples["relief_payments_paid"][(("currency", "VND"),)] == 2
    assert (
        samples["relief_consumer_lag"][(("group", "relief-reporting"), ("topic", "eligibility.decided"))] == 0
    )
    assert samples["relief_dead_letter_messages"][(("topic", "eligibility.decided.dlq"),)] == 0
    label_names = {name for series in samples.values() for labels in series for name, _ in labels}
    assert label_names <= {"country", "sex", "age_band", "currency", "group", "topic", "service"}


def test_no_reach_gauge_is_exposed_before_the_first_computation():
    class Empty:
        snapshot = None
        health = PipelineHealth()

    registry = CollectorRegistry()
    registry.register(ReportingCollector(Empty()))  # type: ignore[arg-type]
    assert b"relief_beneficiaries_reached" not in generate_latest(registry)
