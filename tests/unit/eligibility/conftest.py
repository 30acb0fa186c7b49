"""Eligibility handlers on a real (SQLite) database, with rows built the way intake builds them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.eligibility.handlers import DecisionContext, Eligibility, EligibilityMetrics
from services.eligibility.policy import POLICY_DIR, load_policy_file
from services.eligibility.store import TABLES
from shared.db import create_tables, make_engine, transaction
from shared.events import BeneficiaryRegistered, Event, parse_event
from shared.identity import IdentityHasher
from shared.outbox import OUTBOX_TABLES, staged_messages

SECRET = "unit-test-identity-secret-0123456789"  # noqa: S105 - a test secret
DECIDED_TOPIC = "t.eligibility.decided"


class Harness:
    """An Eligibility unit of work on its own database, plus ways to read what it published."""

    def __init__(self, tmp_path: Path, budget_ceilings: dict[str, int] | None = None) -> None:
        self.engine = make_engine(f"sqlite:///{tmp_path / 'eligibility.db'}")
        create_tables(self.engine, [*TABLES, *OUTBOX_TABLES])
        self.registry = CollectorRegistry()
        self.context = DecisionContext(
            policy=load_policy_file(POLICY_DIR / "v1.json"),
            cycle="C1",
            budget_ceilings=budget_ceilings or {},
            decided_topic=DECIDED_TOPIC,
        )
        self.eligibility = Eligibility(
            self.engine,
            self.context,
            EligibilityMetrics(self.registry),
            clock=lambda: datetime(2026, 2, 1, tzinfo=UTC),
        )
        self.eligibility.start_counts()  # as the service does at start-up

    def apply(self, *events: Event) -> list[Event]:
        """Apply one batch; return the events it staged for publishing."""
        before = self.outbox_size()
        self.eligibility.apply(list(events))
        return self.published()[before:]

    def outbox_size(self) -> int:
        return len(self.published())

    def published(self) -> list[Event]:
        with transaction(self.engine) as session:
            rows = staged_messages(session)
            for row in rows:
                assert row.topic == DECIDED_TOPIC
            return [parse_event(row.payload) for row in rows]

    def keys_of(self) -> list[tuple[str | None, str]]:
        with transaction(self.engine) as session:
            return [(row.key, parse_event(row.payload).event_type) for row in staged_messages(session)]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path)
    yield made
    made.engine.dispose()


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(**kwargs: Any) -> Harness:
        harness = Harness(tmp_path / f"h{len(made)}", **kwargs)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.engine.dispose()


_rows = itertools.count(1)
_hasher = IdentityHasher(SECRET)


@pytest.fixture
def row() -> Callable[..., BeneficiaryRegistered]:
    """A registered row from raw fields, hashed as intake hashes them (SPEC §4)."""

    def build(
        given_name: str = "An",
        family_name: str | None = "Nguyen",
        *,
        date_of_birth: date = date(1990, 5, 17),
        nationality: str = "VNM",
        id_type: str = "none",
        id_number: str | None = None,
        row_id: str | None = None,
        partner: str = "p1",
        **fields: Any,
    ) -> BeneficiaryRegistered:
        keys = _hasher.keys_for(
            nationality=nationality,
            date_of_birth=date_of_birth,
            given_name=given_name,
            family_name=family_name,
            id_type=id_type,
            id_number=id_number,
        )
        values: dict[str, Any] = {
            "row_id": row_id or f"row-{next(_rows)}",
            "batch_id": f"batch-{partner}",
            "partner_id": partner,
            "partner_name": f"Partner {partner.upper()}",
            "document_key": keys.document_key,
            "name_key": keys.name_key,
            "block_key": keys.block_key,
            "near_keys": list(keys.near_keys),
            "sex": "F",
            "age_years": 35,
            "nationality": nationality,
            "country": "MY",
            "household_size": 3,
            "vulnerabilities": ["job_loss"],
            "assistance": "cash_relief",
            "payout_method": "e_wallet",
            "payout_account_sealed": "sealed-account-blob",
            "registered_on": date(2026, 1, 20),
        }
        values.update(fields)
        return BeneficiaryRegistered(**values)

    return build
