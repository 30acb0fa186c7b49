"""SPEC §4 end to end: raw names, document numbers, phone numbers, payout accounts and birth dates
stay in intake. A generated programme (and a batch with a rejected row full of personal data) goes
through the real stack; then everything outside intake's own answers is collected (every service
log, the four /metrics pages, reporting's JSON, CSV and dashboard, every record of the topics
reporting reads and of the dead-letter topics) and searched for each personal value.

Intake's batch status API may echo what a partner sent in that same request, so intake's HTTP
answers are not collected.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass

import httpx
import pycountry
from kafka import KafkaConsumer

from relief_cli.drain import wait_until_drained
from relief_cli.generator import COLUMNS, PARTNERS, VULNERABILITIES, generate_programme
from relief_cli.runner import create_partner, run_programme, submit_batch
from relief_cli.stack import Stack
from shared.identity import normalise_name
from shared.settings import SERVICES, Settings
from shared.topics import TOPICS

# A rejected row whose cells carry personal data, some of it in the very cells that fail, so the
# row errors (messages, logs, metrics labels) are exercised with personal values.
PROBE_PARTNER = "Leak Probe Outreach"
BAD_ROW = {
    "partner_ref": "PROBE-000001",
    "given_name": "Marisol Evangelina",
    "family_name": "Quintanilla",
    "sex": "female",  # invalid: the row is rejected
    "date_of_birth": "1987-02-30",  # invalid: not a real date
    "nationality": "PHL",
    "country": "HK",
    "id_type": "passport",
    "id_number": "Q98765432",
    "phone": "852 9876 5432",  # invalid: not E.164
    "household_size": "3",
    "vulnerabilities": "job_loss",
    "consent": "yes",
    "assistance": "cash_relief",
    "payout_method": "bank_transfer",
    "payout_account": "BK5550001234",
    "registered_on": "2026-02-02",
}


@dataclass(frozen=True)
class Secret:
    kind: str  # what the value is, for the failure report
    value: str
    pattern: re.Pattern[str]


def _whole(value: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """The value as a whole word: not inside a longer word, hex id or base64 blob."""
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE if ignore_case else 0)


def _letters(token: str) -> int:
    return sum(1 for char in token if unicodedata.category(char).startswith("L"))


def _non_personal_vocabulary() -> list[str]:
    """Words the stack legitimately prints that are not about a person: partner names (in
    by_partner and the dashboard), country names, template columns and vulnerability codes."""
    words = [name for name, *_ in PARTNERS] + [PROBE_PARTNER] + list(COLUMNS) + list(VULNERABILITIES)
    for country in pycountry.countries:
        words += [country.name, getattr(country, "common_name", ""), getattr(country, "official_name", "")]
    return [word.casefold() for word in words if word]


def personal_values(rows: list[dict[str, str]]) -> list[Secret]:
    vocabulary = _non_personal_vocabulary()
    secrets: dict[tuple[str, str], Secret] = {}

    def add(kind: str, value: str, pattern: re.Pattern[str]) -> None:
        secrets.setdefault((kind, value), Secret(kind, value, pattern))

    for values in rows:
        given, family = values["given_name"].strip(), values["family_name"].strip()
        full = f"{given} {family}".strip()
        if len(full) >= 4:
            add("full name", full, _whole(full, ignore_case=True))
        # The normalised form (`AN NGUYEN VAN`) is what identity keys are hashed from; it must
        # leave intake only as a keyed hash, never as text.
        normalised = normalise_name(given, family)
        if len(normalised) >= 8 and " " in normalised:
            add("normalised name", normalised, _whole(normalised, ignore_case=True))
        # Single name tokens: only those of at least 5 letters (shorter ones such as `Lin`, `Oo`,
        # `Sri` or `Chan` occur inside ordinary words and ids), matched as whole words (so a
        # token inside a longer word, a hex id or a sealed value does not count), and not those
        # that are part of a partner name, a country name, a column name or a vulnerability code,
        # which the reports and logs show legitimately.
        for token in {token for part in (given, family) for token in re.split(r"[\s.]+", part)}:
            if _letters(token) < 5 or any(token.casefold() in word for word in vocabulary):
                continue
            add("name token", token, _whole(token, ignore_case=True))
        if values["id_number"]:
            add("id_number", values["id_number"], _whole(values["id_number"]))
        if values["phone"]:
            phone = values["phone"]
            add("phone", phone, re.compile(re.escape(phone) + r"(?!\d)"))
            add(
                "phone digits", phone.lstrip("+"), re.compile(rf"(?<!\d){re.escape(phone.lstrip('+'))}(?!\d)")
            )
        if values["payout_account"]:
            add("payout_account", values["payout_account"], _whole(values["payout_account"]))
        add("date_of_birth", values["date_of_birth"], re.compile(rf"(?<!\d){values['date_of_birth']}(?!\d)"))
    return list(secrets.values())


def _readable(text: str) -> str:
    """The text plus a form where JSON string escapes (`\\u1ec5`) and HTML entities are decoded,
    so a name in any script is found however it was serialised."""
    extra: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped[:1] in ("{", "["):
            try:
                extra.append(json.dumps(json.loads(stripped), ensure_ascii=False))
            except ValueError:
                pass
    return "\n".join([text, html.unescape(text), *extra])


def collect(settings: Settings, stack: Stack) -> dict[str, str]:
    """Everything outside intake's own answers, by where it came from."""
    collected: dict[str, str] = {}
    for path in sorted(stack.log_dir.glob("*")):
        if path.is_file():
            collected[f"log {path.name}"] = _readable(path.read_text(errors="replace"))
    for service in SERVICES:
        response = httpx.get(f"{settings.service_url(service)}/metrics", timeout=30)
        assert response.status_code == 200, f"{service} /metrics answered {response.status_code}"
        collected[f"{service} /metrics"] = response.text
    for path in ("/v1/reach", "/v1/reach.csv", "/v1/reach.csv?hxl=1", "/dashboard"):
        response = httpx.get(f"{settings.service_url('reporting')}{path}", timeout=30)
        assert response.status_code == 200, f"reporting {path} answered {response.status_code}"
        collected[f"reporting {path}"] = _readable(response.text)
    topics = [settings.topic("eligibility.decided"), settings.topic("disbursement.payments")]
    topics += [settings.topic(topic.dead_letter) for topic in TOPICS]
    for topic in topics:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=f"leak-check-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=8000,
        )
        records: list[str] = []
        try:
            for message in consumer:
                parts = [message.key or b"", message.value or b""]
                parts += [name.encode() + b"=" + (value or b"") for name, value in message.headers or []]
                records.append(" ".join(part.decode("utf-8", errors="replace") for part in parts))
        finally:
            consumer.close()
        collected[f"topic {topic} ({len(records)} records)"] = _readable("\n".join(records))
    return collected


def leaks(secrets: list[Secret], collected: dict[str, str]) -> list[str]:
    found = []
    for secret in secrets:
        for where, text in collected.items():
            match = secret.pattern.search(text)
            if match:
                context = text[max(0, match.start() - 120) : match.end() + 120].replace("\n", " ⏎ ")
                found.append(f"{secret.kind} {secret.value!r} appears in {where}: …{context}…")
    return found


def test_no_personal_value_leaves_intake_in_logs_metrics_reports_or_topics(make_settings):
    settings = make_settings()
    programme = generate_programme(120, seed=48)
    stack = Stack(settings, {})
    stack.start()
    try:
        results = run_programme(settings, programme, timeout=240)
        assert [r["accepted"] for r in results] == [b.accepted for b in programme.batches]

        probe_key = create_partner(settings, PROBE_PARTNER)["api_key"]
        header = ",".join(COLUMNS)
        answer = submit_batch(
            settings, probe_key, header + "\n" + ",".join(BAD_ROW[c] for c in COLUMNS) + "\n"
        )
        assert (answer["accepted"], answer["rejected"]) == (0, 1), answer
        assert {error["column"] for error in answer["errors"]} >= {"sex", "date_of_birth", "phone"}
        assert wait_until_drained(settings, 120, progress=False, settle=0.3).get("drained")

        reach = httpx.get(f"{settings.service_url('reporting')}/v1/reach", timeout=30).json()
        assert reach["beneficiaries_reached"] == programme.truth["beneficiaries_reached"]

        collected = collect(settings, stack)
    finally:
        stack.stop()

    # The logs are complete only once every service has stopped (shutdown lines included).
    for path in sorted(stack.log_dir.glob("*")):
        if path.is_file():
            collected[f"log {path.name}"] = _readable(path.read_text(errors="replace"))
    assert any(name.startswith("log ") for name in collected), f"no service logs in {stack.log_dir}"

    valid_rows = [row.values for batch in programme.batches for row in batch.rows if row.valid]
    secrets = personal_values([*valid_rows, BAD_ROW])
    assert secrets
    found = leaks(secrets, collected)
    assert not found, f"{len(found)} personal value(s) leaked:\n" + "\n".join(found[:40])
