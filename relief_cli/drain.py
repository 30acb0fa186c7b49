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


class PipelineProbe:
    """Asks intake for its progress and Kafka for every group's lag, with its clients kept open.

    Made afresh for every ask, the clients cost more than the asking: an HTTP client loads the
    certificate store when it is made (55 ms of CPU here, even for plain HTTP), and a lag reader
    connects to the broker twice and probes its versions. A poller asking twice a second spent a
    tenth of a core on that, taken from the pipeline it was waiting for.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = httpx.Client(timeout=10.0)
        self.lag_reader = LagReader(settings)
        self.subscriptions = consumer_subscriptions(settings.topic, settings.group_id)

    def __enter__(self) -> PipelineProbe:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.lag_reader.close()

    def state(self) -> dict[str, Any]:
        response = self.http.get(f"{self.settings.service_url('intake')}/v1/progress")
        response.raise_for_status()
        progress = response.json()
        lag = self.lag_reader.read(self.subscriptions)
        total_lag = sum(lag.values())
        return {
            "drained": progress["pending"] == 0 and total_lag == 0,
            "accepted": progress["accepted"],
            "final": progress["final"],
            "pending": progress["pending"],
            "pending_approval": progress.get("pending_approval", 0),
            "consumer_lag": total_lag,
            "lag_by_group": {
                f"{group}/{topic}": value for (group, topic), value in sorted(lag.items()) if value
            },
        }


def pipeline_state(settings: Settings, probe: PipelineProbe | None = None) -> dict[str, Any]:
    """Intake's progress and every group's lag; pass a `PipelineProbe` when asking again and again."""
    if probe is not None:
        return probe.state()
    with PipelineProbe(settings) as once:
        return once.state()


def wait_until_drained(
    settings: Settings,
    timeout: float,
    *,
    progress: bool = True,
    settle: float = 1.0,
    probe: PipelineProbe | None = None,
) -> dict[str, Any]:
    """Poll until drained twice in a row (`settle` seconds apart) or the timeout passes.

    Asks through `probe` when given (a caller waiting many times keeps one), else through one
    of its own for the whole wait."""
    if probe is None:
        with PipelineProbe(settings) as own:
            return wait_until_drained(settings, timeout, progress=progress, settle=settle, probe=own)
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {"drained": False, "pending": None}
    confirmed = False
    last_print = 0.0
    while time.monotonic() < deadline:
        try:
            state = probe.state()
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
