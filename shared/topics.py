"""Every topic in one table: name, partition count, key, and the events it may carry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.events import (
    BeneficiaryRegistered,
    DeadLettered,
    EligibilityDecided,
    Event,
    OverpaymentDetected,
    PaymentStatusChanged,
    PersonsMerged,
)

PARTITIONS = 6


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    events: tuple[type[Event], ...]

    @property
    def dead_letter(self) -> str:
        return f"{self.name}.dlq"


BENEFICIARY_REGISTERED = Topic(
    "beneficiary.registered",
    PARTITIONS,
    "document key, else name key (one person's rows in order)",
    (BeneficiaryRegistered,),
)
ELIGIBILITY_DECIDED = Topic(
    "eligibility.decided",
    PARTITIONS,
    "person_id (survivor for merges)",
    (EligibilityDecided, PersonsMerged),
)
DISBURSEMENT_PAYMENTS = Topic(
    "disbursement.payments",
    PARTITIONS,
    "person_id",
    (PaymentStatusChanged, OverpaymentDetected),
)

TOPICS: tuple[Topic, ...] = (BENEFICIARY_REGISTERED, ELIGIBILITY_DECIDED, DISBURSEMENT_PAYMENTS)
DEAD_LETTER_EVENTS: tuple[type[Event], ...] = (DeadLettered,)


def all_topic_names() -> list[tuple[str, int]]:
    """Every topic to create, dead-letter topics included (one partition each suffices)."""
    names: list[tuple[str, int]] = []
    for topic in TOPICS:
        names.append((topic.name, topic.partitions))
        names.append((topic.dead_letter, 1))
    return names


# Which topics each service's consumer group reads: for lag, draining and dashboards.
SUBSCRIPTIONS: dict[str, tuple[Topic, ...]] = {
    "eligibility": (BENEFICIARY_REGISTERED,),
    "disbursement": (ELIGIBILITY_DECIDED,),
    "reporting": (ELIGIBILITY_DECIDED, DISBURSEMENT_PAYMENTS),
    "intake": (ELIGIBILITY_DECIDED, DISBURSEMENT_PAYMENTS),
}


def consumer_subscriptions(
    prefix_topic: Callable[[str], str], group_id: Callable[[str], str]
) -> dict[str, list[str]]:
    """Consumer group → prefixed topic names, e.g. `consumer_subscriptions(settings.topic, settings.group_id)`."""
    return {
        group_id(service): [prefix_topic(topic.name) for topic in topics]
        for service, topics in SUBSCRIPTIONS.items()
    }
