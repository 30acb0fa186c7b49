"""The drain probe asks intake over one kept HTTP connection and Kafka through one kept reader."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from relief_cli.drain import PipelineProbe, pipeline_state, wait_until_drained
from shared.topics import BENEFICIARY_REGISTERED


class Progress(BaseHTTPRequestHandler):
    """Intake's `/v1/progress`, answering what the test sets, counting the connections it gets."""

    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves
    answer: dict[str, int] = {}
    connections: list[int] = []

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(self.client_address[1])

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        body = json.dumps(type(self).answer).encode()
        self.send_response(200 if self.path == "/v1/progress" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def ask(probe: PipelineProbe) -> dict:
    """A state, once Kafka can answer: a fresh broker has no group coordinator for a few seconds."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return probe.state()
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def serve(port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Progress)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def intake(make_settings) -> Iterator[tuple[ThreadingHTTPServer, object]]:
    settings = make_settings()
    Progress.answer = {"accepted": 5, "final": 3, "pending": 2}
    Progress.connections = []
    server = serve(settings.intake_port)
    try:
        yield server, settings
    finally:
        server.shutdown()
        server.server_close()


def test_a_probe_asks_again_over_the_same_connection(intake):
    _, settings = intake
    with PipelineProbe(settings) as probe:
        states = [ask(probe) for _ in range(4)]
    assert len(Progress.connections) == 1, Progress.connections
    assert states[-1]["accepted"] == 5 and states[-1]["final"] == 3 and states[-1]["pending"] == 2
    assert states[-1]["consumer_lag"] == 0 and not states[-1]["drained"]  # rows still pending
    assert pipeline_state(settings)["pending"] == 2  # a one-off ask opens and closes its own


def test_a_probe_counts_lag_and_keeps_answering_after_intake_restarts(intake):
    server, settings = intake
    Progress.answer = {"accepted": 1, "final": 1, "pending": 0}
    with PipelineProbe(settings) as probe:
        assert ask(probe)["drained"]
        topic = settings.topic(BENEFICIARY_REGISTERED.name)
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        producer.send(topic, b"{}", key=b"k").get(timeout=30)
        producer.close()
        lagging = ask(probe)  # the same reader sees the record nobody has consumed
        assert lagging["consumer_lag"] == 1 and not lagging["drained"], lagging
        assert list(lagging["lag_by_group"]) == [f"{settings.group_id('eligibility')}/{topic}"]

        server.shutdown()
        server.server_close()  # intake goes away, its connections with it
        restarted = serve(settings.intake_port)
        try:
            Progress.answer = {"accepted": 2, "final": 1, "pending": 1}
            state = wait_until_drained(settings, 3, progress=False, settle=0.1, probe=probe)
            assert state.get("pending") == 1, state  # answered by the new intake, not drained
        finally:
            restarted.shutdown()
            restarted.server_close()
