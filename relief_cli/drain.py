"""When has the pipeline drained? Every accepted row final, every consumer group caught up."""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
from kafka.errors import KafkaError

from shared.kafka import LagReader
from shared.settings import Settings
from shared.topics import consumer_subscriptions


def pipeline_state(settings: Settings, lag_reader: LagReader | None = None) -> dict[str, Any]:
    """Intake's progress and every group's lag; pass a `LagReader` when asking again and again."""
    response = httpx.get(f"{settings.service_url('intake')}/v1/progress", timeout=10.0)
    response.raise_for_status()
    progress = response.json()
    subscriptions = consumer_subscriptions(settings.topic, settings.group_id)
    if lag_reader is None:
        with LagReader(settings) as reader:
            lag = reader.read(subscriptions)
    else:
        lag = lag_reader.read(subscriptions)
    total_lag = sum(lag.values())
    return {
        "drained": progress["pending"] == 0 and total_lag == 0,
        "accepted": progress["accepted"],
        "final": progress["final"],
        "pending": progress["pending"],
        "pending_approval": progress.get("pending_approval", 0),
        "consumer_lag": total_lag,
        "lag_by_group": {f"{group}/{topic}": value for (group, topic), value in sorted(lag.items()) if value},
    }


def wait_until_drained(
    settings: Settings, timeout: float, *, progress: bool = True, settle: float = 1.0
) -> dict[str, Any]:
    """Poll until drained twice in a row (`settle` seconds apart) or the timeout passes."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {"drained": False, "pending": None}
    confirmed = False
    last_print = 0.0
    while time.monotonic() < deadline:
        try:
            state = pipeline_state(settings)
        except (httpx.HTTPError, KafkaError, OSError, KeyError) as error:
            # A restarting broker or service is not drained yet; keep asking until the deadline.
            state = {"drained": False, "pending": None, "error": f"{type(error).__name__}: {error}"}
        if state["drained"]:
            if confirmed:
                break
            confirmed = True
            time.sleep(settle)
            continue
        confirmed = False
        if progress and time.monotonic() - last_print > 2:
            last_print = time.monotonic()
            print(
                f"relief: waiting — {state.get('final', '?')}/{state.get('accepted', '?')} rows final, "
                f"consumer lag {state.get('consumer_lag', '?')}",
                file=sys.stderr,
            )
        time.sleep(0.5)
    return state
