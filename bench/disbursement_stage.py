"""The disbursement stage on its own: N eligible cash decisions in, N payments created, sent and
recorded by the real service process (consumer, sender, simulated provider, outbox relay).

    python -m bench.disbursement_stage                      # SQLite, own broker, 20,000 decisions
    python -m bench.disbursement_stage --count 50000 --failure-rate 0.3
    python -m bench.disbursement_stage --database-url postgresql+psycopg://relief@127.0.0.1:55433/bench
    python -m bench.disbursement_stage --bootstrap 127.0.0.1:9092   # an already running broker

The decisions are published before the service starts, so the figures measure the service, not
the publisher: payments created per second (consumer), payments settled per second from the first
decision consumed to the last payment recorded (end to end through the stage), and the time until
the relay has published every status event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select, text

COUNTRIES = {"MY": ("MYR", 48000), "TH": ("THB", 360000), "VN": ("VND", 2_800_000), "JP": ("JPY", 16_800)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def publish_decisions(settings: object, count: int) -> float:
    from shared.events import EligibilityDecided
    from shared.kafka import BrokerPublisher, make_broker
    from shared.sealing import Sealer
    from shared.topics import ELIGIBILITY_DECIDED

    sealer = Sealer(settings.resolved_identity_secret())  # type: ignore[attr-defined]
    topic = settings.topic(ELIGIBILITY_DECIDED.name)  # type: ignore[attr-defined]
    broker = make_broker(settings, client_id="bench-eligibility")  # type: ignore[arg-type]
    await broker.connect()
    started = time.perf_counter()
    try:
        publisher = BrokerPublisher(broker)
        names = list(COUNTRIES)
        for start in range(0, count, 5000):
            records = []
            for index in range(start, min(count, start + 5000)):
                country = names[index % len(names)]
                currency, amount = COUNTRIES[country]
                person = f"bench-person-{index:07d}"
                event = EligibilityDecided(
                    row_id=f"row-{index}", batch_id="bench", partner_id="p-bench", partner_name="Bench",
                    person_id=person, decision="eligible", reasons=[], policy_version="v1",
                    cycle=settings.cycle, assistance="cash_relief", country=country, sex="F",  # type: ignore[attr-defined]
                    age_years=30, household_size=2, registered_on=date(2026, 1, 5), amount_minor=amount,
                    currency=currency, payout_method="e_wallet", payout_account_sealed=sealer.seal(f"ACC-{index}"),
                )  # fmt: skip
                records.append((topic, person, event.to_bytes()))
            await publisher.send_many(records)
    finally:
        await broker.stop()
    return time.perf_counter() - started


def count_rows(engine: object, status: str | None = None) -> int:
    from services.disbursement import store

    query = select(func.count()).select_from(store.PAYMENT)
    if status:
        query = query.where(store.PAYMENT.c.status == status)
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return int(connection.execute(query).scalar_one())


def unsent_outbox(engine: object) -> int:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return int(
            connection.execute(text("SELECT coalesce(sum(messages), 0) FROM outbox_batch")).scalar_one()
        )


def run(
    count: int, database_url: str | None, bootstrap: str | None, failure_rate: float, latency_ms: int
) -> dict[str, float]:
    from shared.kafka import ensure_topics
    from shared.settings import Settings

    with tempfile.TemporaryDirectory(prefix="relief-bench-") as tmp:
        workdir = Path(tmp)
        broker = None
        if bootstrap is None:
            from shared.kafka_local import LocalKafka, ensure_jars

            kafka_port, controller_port = free_port(), free_port()
            ensure_jars()
            broker = LocalKafka(workdir / "kafka", kafka_port, controller_port)
            broker.start()
            bootstrap = f"127.0.0.1:{kafka_port}"
        run_id = f"{os.getpid()}{int(time.time()) % 100000}"
        if database_url:
            base, _, query = database_url.partition("?")
            database_url = f"{base}{run_id}" + (f"?{query}" if query else "")
        settings = Settings(
            data_dir=workdir / "data", kafka_bootstrap_servers=bootstrap,
            identity_secret=secrets.token_urlsafe(24), intake_port=free_port(),
            eligibility_port=free_port(), disbursement_port=free_port(), reporting_port=free_port(),
            database_url=database_url, topic_prefix=f"bench{run_id}.", fsp_transient_failure_rate=failure_rate,
            fsp_latency_ms=latency_ms, log_level="WARNING",
        )  # fmt: skip
        service = None
        try:
            ensure_topics(settings)
            published = asyncio.run(publish_decisions(settings, count))
            print(f"published {count:,} decisions in {published:.1f}s", file=sys.stderr)
            env = {**os.environ, **settings.child_environment()}
            log = open(workdir / "disbursement.log", "wb")  # noqa: SIM115 - handed to the child
            service = subprocess.Popen(
                [sys.executable, "-m", "services.disbursement"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            url = settings.service_url("disbursement")
            while True:
                if service.poll() is not None:
                    raise SystemExit((workdir / "disbursement.log").read_text()[-3000:])
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            # Read-only polling: a plain engine, so the bench never takes SQLite's write lock.
            engine = create_engine(settings.database_url_for("disbursement"))
            started = time.perf_counter()
            created_at = None
            first_seen = None
            while True:
                created = count_rows(engine)
                if created and first_seen is None:
                    first_seen = time.perf_counter()
                if created >= count and created_at is None:
                    created_at = time.perf_counter()
                settled = count_rows(engine, "paid") + count_rows(engine, "failed")
                if settled >= count:
                    break
                time.sleep(0.2)
            settled_at = time.perf_counter()
            while unsent_outbox(engine):
                time.sleep(0.2)
            published_at = time.perf_counter()
            begin = first_seen or started
            kind = "PostgreSQL" if database_url else "SQLite"
            print(
                f"disbursement stage on {kind}, {count:,} eligible decisions, provider failure rate {failure_rate:.0%}"
            )
            print(f"  payments created:  {count / ((created_at or settled_at) - begin):,.0f}/s")
            print(f"  payments settled:  {count / (settled_at - begin):,.0f}/s end to end "
                  f"(created + sent + recorded, {settled_at - begin:.1f}s)")  # fmt: skip
            print(
                f"  status events out: {published_at - begin:.1f}s after the first payment ({3 * count:,} events)"
            )
            print(f"  paid: {count_rows(engine, 'paid'):,}, failed: {count_rows(engine, 'failed'):,}")
            engine.dispose()
            return {
                "decisions": count,
                "payments_created_per_second": round(count / ((created_at or settled_at) - begin)),
                "payments_settled_per_second": round(count / (settled_at - begin)),
                "status_events_published_seconds": round(published_at - begin, 1),
            }
        finally:
            if service is not None:
                service.terminate()
                service.wait(30)
            if broker is not None:
                broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--database-url", default=None, help="a postgresql+psycopg:// URL; default SQLite")
    parser.add_argument("--bootstrap", default=None, help="a running Kafka broker; default: start one")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=int, default=0)
    args = parser.parse_args()
    run(args.count, args.database_url, args.bootstrap, args.failure_rate, args.latency_ms)


if __name__ == "__main__":
    main()
