"""The programme dashboard: one self-contained HTML page (no script or font from elsewhere, so it
works in field offices without internet), with inline SVG bar charts rendered on the server."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from importlib import resources
from string import Template

from services.reporting.domain import AGE_BANDS, Reach, format_as_of
from services.reporting.health import PipelineHealth
from shared.money import MINOR_UNIT_EXPONENTS, Money
from shared.settings import SERVICES

REFRESH_SECONDS = 15
# Chart widths: the content width of a panel in a three- and a two-column row at 1280 px.
THIRD = 360
HALF = 566
TOP_PARTNERS = 10

COUNTRY_NAMES = {
    "BD": "Bangladesh",
    "HK": "Hong Kong SAR",
    "ID": "Indonesia",
    "IN": "India",
    "JP": "Japan",
    "KH": "Cambodia",
    "KR": "Republic of Korea",
    "LA": "Lao PDR",
    "LK": "Sri Lanka",
    "MM": "Myanmar",
    "MY": "Malaysia",
    "NP": "Nepal",
    "PH": "Philippines",
    "TH": "Thailand",
    "VN": "Viet Nam",
}
SEX_NAMES = {"F": "Female", "M": "Male", "X": "Another / not stated"}
ASSISTANCE_NAMES = {
    "cash_relief": "Cash relief",
    "food_kit": "Food kit",
    "hygiene_kit": "Hygiene kit",
    "remediation": "Remediation",
    "safe_migration_info": "Safe migration info",
}
SEX_COLOURS = {"F": "#c2410c", "M": "#1d4ed8", "X": "#7c3aed"}
AGE_COLOURS = ("#5eead4", "#2dd4bf", "#14b8a6", "#0d9488", "#0f766e")


def _template() -> Template:
    text = resources.files("services.reporting").joinpath("static/dashboard.html").read_text("utf-8")
    return Template(text)


def number(value: int) -> str:
    return f"{value:,}"


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def bar_chart(
    items: Sequence[tuple[str, int, str]],
    *,
    title: str,
    width: int = THIRD,
    label_width: int = 150,
    more: str = "",
) -> str:
    """Horizontal bars as inline SVG: (label, value, colour) per bar, longest bar = largest value.

    `width` is the width the chart is drawn for (its column's), so text keeps its size on screen.
    """
    row = 26
    bar_height = 17
    value_width = 58
    lines = max(1, len(items)) + (1 if more else 0)
    height = lines * row + 4
    largest = max((value for _, value, _ in items), default=0) or 1
    span = width - label_width - value_width
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    if not items:
        parts.append('<text x="0" y="17" class="empty">nobody reached yet</text>')
    for index, (label, value, colour) in enumerate(items):
        y = index * row + 2
        length = 0 if value == 0 else max(2.0, span * value / largest)
        baseline = y + bar_height - 4
        parts.append(
            f'<text x="{label_width - 10}" y="{baseline}" class="label" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{span}" height="{bar_height}" class="track" rx="3"/>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" fill="{colour}" rx="3"/>'
            f'<text x="{width - 2}" y="{baseline}" class="value" text-anchor="end">{number(value)}</text>'
        )
    if more:
        parts.append(
            f'<text x="{label_width}" y="{len(items) * row + 15}" class="more">{escape(more)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def money(currency: str, amount_minor: int) -> str:
    if currency in MINOR_UNIT_EXPONENTS:
        return Money(currency, amount_minor).format()
    return f"{currency} {amount_minor:,} (minor units)"


def _status(health: PipelineHealth) -> tuple[str, str, str]:
    """(css class, headline, detail) summarising the pipeline for someone glancing at the page."""
    if health.measured_at is None:
        return "wait", "Measuring", "pipeline health is measured every few seconds"
    down = [name for name in SERVICES if not (health.services.get(name) and health.services[name].up)]
    problems = []
    if health.kafka_error:
        problems.append("Kafka not reachable")
    if down:
        problems.append("not answering: " + ", ".join(down))
    if health.total_dead_letters:
        problems.append(f"{number(health.total_dead_letters)} dead letters to review")
    if problems:
        return "bad", "Needs attention", "; ".join(problems)
    if health.total_lag:
        return "warn", "Catching up", f"{number(health.total_lag)} events still to process"
    return "ok", "All clear", "every service up, nothing waiting, no dead letters"


def _health_rows(health: PipelineHealth) -> tuple[str, str, str]:
    services = []
    for name in SERVICES:
        check = health.services.get(name)
        up = check is not None and check.up
        backlog = "–" if check is None or check.outbox_backlog is None else number(check.outbox_backlog)
        services.append(
            f'<tr><td>{escape(name)}</td><td><span class="dot {"ok" if up else "bad"}"></span>'
            f'{"up" if up else "not answering"}</td><td class="num">{backlog}</td></tr>'
        )
    lag_rows = []
    for (group, topic), value in sorted(health.consumer_lag.items()):
        state = "ok" if value == 0 else "warn"
        lag_rows.append(
            f"<tr><td>{escape(group)}</td><td>{escape(topic)}</td>"
            f'<td class="num {state}">{number(value)}</td></tr>'
        )
    dead_rows = []
    for topic, value in sorted(health.dead_letters.items()):
        state = "ok" if value == 0 else "bad"
        dead_rows.append(f'<tr><td>{escape(topic)}</td><td class="num {state}">{number(value)}</td></tr>')
    empty = '<tr><td colspan="3" class="muted">not measured yet</td></tr>'
    return "".join(services), "".join(lag_rows) or empty, "".join(dead_rows) or empty


def counted(count: int, singular: str, plural: str) -> str:
    return f"{number(count)} {singular if count == 1 else plural}"


def render_dashboard(
    reach: Reach, as_of: datetime, health: PipelineHealth, payment_statuses: dict[str, int]
) -> str:
    countries = sorted(reach.by_country.items(), key=lambda item: (-item[1], item[0]))
    country_chart = bar_chart(
        [(f"{COUNTRY_NAMES.get(code, code)} ({code})", value, "#2563eb") for code, value in countries],
        title="Persons reached by country",
    )
    sex_chart = bar_chart(
        [
            (SEX_NAMES.get(sex, sex), value, SEX_COLOURS.get(sex, "#475569"))
            for sex, value in reach.by_sex.items()
        ],
        title="Persons reached by sex",
    )
    age_chart = bar_chart(
        [(band, reach.by_age_band.get(band, 0), AGE_COLOURS[index]) for index, band in enumerate(AGE_BANDS)],
        title="Persons reached by age band",
    )
    partners = sorted(reach.by_partner.items(), key=lambda item: (-item[1], item[0]))
    hidden = len(partners) - TOP_PARTNERS
    partner_chart = bar_chart(
        [(shorten(name, 32), value, "#475569") for name, value in partners[:TOP_PARTNERS]],
        title="Persons reached by partner",
        width=HALF,
        label_width=240,
        more=f"and {counted(hidden, 'more partner', 'more partners')}: see /v1/reach" if hidden > 0 else "",
    )
    assistance_chart = bar_chart(
        [
            (ASSISTANCE_NAMES.get(kind, kind), value, "#15803d")
            for kind, value in sorted(reach.by_assistance.items(), key=lambda item: (-item[1], item[0]))
        ],
        title="Persons reached by type of assistance",
    )
    disbursed_rows = (
        "".join(
            f'<tr><td>{escape(currency)}</td><td class="num">{escape(money(currency, item.amount_minor))}</td>'
            f'<td class="num">{number(item.payments)}</td></tr>'
            for currency, item in sorted(reach.disbursed.items())
        )
        or '<tr><td colspan="3" class="muted">no payment paid yet</td></tr>'
    )
    in_flight = sum(payment_statuses.get(status, 0) for status in ("pending_approval", "pending", "sent"))
    status_class, status_headline, status_detail = _status(health)
    services, lag_rows, dead_rows = _health_rows(health)
    paid_payments = sum(item.payments for item in reach.disbursed.values())
    return _template().substitute(
        refresh=REFRESH_SECONDS,
        as_of=escape(format_as_of(as_of)),
        beneficiaries_reached=number(reach.beneficiaries_reached),
        people_reached=number(reach.people_reached),
        countries=counted(len(reach.by_country), "country", "countries"),
        partners=counted(len(reach.by_partner), "partner", "partners"),
        paid_payments=number(paid_payments),
        in_flight=number(in_flight),
        failed=number(payment_statuses.get("failed", 0)),
        reversed=number(payment_statuses.get("reversed", 0)),
        duplicates=number(reach.duplicates_detected),
        overpayments=number(reach.overpayments_detected),
        country_chart=country_chart,
        sex_chart=sex_chart,
        age_chart=age_chart,
        partner_chart=partner_chart,
        assistance_chart=assistance_chart,
        disbursed_rows=disbursed_rows,
        status_class=status_class,
        status_headline=escape(status_headline),
        status_detail=escape(status_detail),
        service_rows=services,
        lag_rows=lag_rows,
        dead_rows=dead_rows,
        health_as_of=escape(f"{health.measured_at:%H:%M:%S} UTC") if health.measured_at else "not yet",
    )
