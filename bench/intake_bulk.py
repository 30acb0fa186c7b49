"""Bulk intake: a 50,000-row batch file uploaded to intake, with throughput and the service's peak RSS.

    python -m bench.intake_bulk                       # starts its own broker and intake (SQLite) in a temp dir
    python -m bench.intake_bulk --database-url postgresql+psycopg://relief@127.0.0.1:55432/bench
    python -m bench.intake_bulk --url http://127.0.0.1:8001 --partner-key rk_... [--pid PID]

Prints rows per second for the upload (wall clock, and per CPU-second of the intake process) (validation, hashing, sealing and the one transaction that
stores rows and outbox events), the time until the relay has published every event (own stack
only), and the intake process's resident memory: before the upload and at its peak during it.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import psutil

from services.intake.domain import TEMPLATE_COLUMNS
from shared.money import PROGRAMME_COUNTRIES

GIVEN = [
    "Nguyễn Văn",
    "Trần Thị",
    "Maria",
    "Jose",
    "Siti",
    "Budi",
    "สมชาย",
    "Aung",
    "Sita",
    "Rina",
    "Ahmad",
    "Lakshmi",
]
FAMILY = [
    "An",
    "Hoa",
    "Santos",
    "Dela Cruz",
    "Aminah",
    "Wijaya",
    "ใจดี",
    "Kyaw",
    "Gurung",
    "Perera",
    "Rahman",
    "",
]
NATIONALITIES = ["VNM", "PHL", "IDN", "MMR", "NPL", "KHM", "LAO", "BGD", "LKA", "THA"]
VULNERABILITIES = [
    "job_loss",
    "wage_theft",
    "medical",
    "pregnant",
    "disability",
    "stranded",
    "debt_bondage",
    "gbv",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_batch(path: Path, rows: int, seed: int = 7) -> None:
    """A realistic batch: mixed scripts, countries, documents and assistance types, all valid."""
    rng = random.Random(seed)
    run = rng.randrange(10**6)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TEMPLATE_COLUMNS)
        for number in range(rows):
            assistance = rng.choice(
                ["cash_relief"] * 6 + ["food_kit", "hygiene_kit", "remediation", "safe_migration_info"]
            )
            method = (
                rng.choice(["bank_transfer", "e_wallet", "cash_pickup"])
                if assistance == "cash_relief"
                else ""
            )
            id_type = rng.choice(["passport", "national_id", "work_permit", "none"])
            birth = date(1960, 1, 1) + timedelta(days=rng.randrange(365 * 45))
            writer.writerow(
                [
                    f"BULK-{run}-{number:06d}",
                    rng.choice(GIVEN),
                    rng.choice(FAMILY),
                    rng.choice("FMX"),
                    birth.isoformat(),
                    rng.choice(NATIONALITIES),
                    rng.choice(PROGRAMME_COUNTRIES),
                    id_type,
                    "" if id_type == "none" else f"{rng.choice('ABCDEFGH')}{rng.randrange(10**7):07d}",
                    f"+{rng.choice(['852', '60', '63', '66', '84'])}{rng.randrange(10**8):08d}"
                    if rng.random() < 0.7
                    else "",
                    str(rng.randint(1, 8)),
                    ";".join(rng.sample(VULNERABILITIES, rng.randint(0, 2))),
                    "yes",
                    assistance,
                    method,
                    f"ACC-{rng.randrange(10**9)}" if method in ("bank_transfer", "e_wallet") else "",
                    (date(2026, 1, 5) + timedelta(days=rng.randrange(40))).isoformat(),
                ]
            )


class PeakMemory:
    """Samples a process's RSS every few milliseconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.Error:
                return
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def high_water_mark(pid: int) -> int | None:
    """Linux's own record of the process's peak RSS since it started (VmHWM), when available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def pid_listening_on(port: int) -> int | None:
    for connection in psutil.net_connections(kind="tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
            return connection.pid
    return None


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1048576:.0f} MiB"


def run(url: str, partner_key: str, pid: int, rows: int, workdir: Path, outbox_engine: object | None) -> None:
    batch = workdir / "bulk.csv"
    started = time.perf_counter()
    write_batch(batch, rows)
    size = batch.stat().st_size
    print(
        f"generated {rows:,} rows, {size / 1048576:.1f} MiB in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )

    memory = PeakMemory(pid)
    before = memory.rss()
    cpu_before = sum(memory.process.cpu_times()[:2])
    with memory, batch.open("rb") as handle:
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/batches",
            content=handle,
            headers={
                "Authorization": f"Bearer {partner_key}",
                "Content-Type": "text/csv",
                "Content-Length": str(size),
            },
            timeout=600,
        )
        elapsed = time.perf_counter() - started
    cpu_seconds = sum(memory.process.cpu_times()[:2]) - cpu_before
    response.raise_for_status()
    body = response.json()
    print(f"batch {body['batch_id']}: {body['accepted']:,} accepted, {body['rejected']:,} rejected")
    print(f"upload and validation: {elapsed:.1f}s, {body['accepted'] / elapsed:,.0f} rows/s")
    # Wall time depends on what else the machine runs; intake's own CPU time does much less.
    print(
        f"intake CPU time for the upload: {cpu_seconds:.1f}s, {body['accepted'] / max(cpu_seconds, 1e-9):,.0f} rows per CPU-second"
    )
    print(
        f"intake RSS: {mib(before)} before, {mib(memory.peak)} peak during the upload (+{mib(memory.peak - before)})"
    )
    print(f"intake VmHWM (peak since start): {mib(high_water_mark(pid))}")
    if outbox_engine is not None:
        from sqlalchemy import text

        while True:
            with outbox_engine.connect() as connection:  # type: ignore[attr-defined]
                unsent = connection.execute(
                    text("SELECT coalesce(sum(messages), 0) FROM outbox_batch")
                ).scalar()
            if not unsent:
                break
            time.sleep(0.2)
        published = time.perf_counter() - started
        print(
            f"every event published to Kafka {published:.1f}s after the upload began ({rows / published:,.0f} rows/s end to end)"
        )


def run_own_stack(rows: int, database_url: str | None) -> None:
    from datetime import UTC, datetime

    from services.intake import handlers, store
    from shared.db import create_tables, make_engine, transaction
    from shared.kafka_local import LocalKafka, ensure_jars
    from shared.settings import Settings

    with tempfile.TemporaryDirectory(prefix="relief-bench-") as tmp:
        workdir = Path(tmp)
        kafka_port = free_port()
        controller_port = free_port()
        settings = Settings(
            data_dir=workdir / "data",
            kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
            identity_secret=secrets.token_urlsafe(32),
            intake_port=free_port(),
            eligibility_port=free_port(),
            disbursement_port=free_port(),
            reporting_port=free_port(),
            database_url=database_url,
            topic_prefix=f"bench{os.getpid()}.",
        )
        ensure_jars()
        broker = LocalKafka(workdir / "kafka", kafka_port, controller_port)
        broker.start()
        service = None
        engine = make_engine(settings.database_url_for("intake"))
        try:
            create_tables(engine, store.TABLES)
            with transaction(engine) as session:
                _, key = handlers.register_partner(
                    session, name="Bench CSO", role="partner", now=datetime.now(UTC)
                )
            log = (workdir / "intake.log").open("wb")
            service = subprocess.Popen(
                [sys.executable, "-m", "services.intake"],
                env={**os.environ, **settings.child_environment(), "RELIEF_LOG_LEVEL": "WARNING"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            url = settings.service_url("intake")
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if service.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"intake did not start: {(workdir / 'intake.log').read_text()[-2000:]}")
                time.sleep(0.3)
            run(url, key, service.pid, rows, workdir, engine)
        finally:
            if service is not None:
                service.terminate()
                service.wait(30)
            engine.dispose()
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--url", help="a running intake (else the bench starts its own broker and intake)")
    parser.add_argument("--partner-key", help="a partner key of that intake")
    parser.add_argument(
        "--pid", type=int, help="intake's process id (default: the process listening on the URL's port)"
    )
    parser.add_argument(
        "--database-url", help="own stack only: RELIEF_DATABASE_URL for intake (default SQLite)"
    )
    args = parser.parse_args()
    if not args.url:
        run_own_stack(args.rows, args.database_url)
        return
    if not args.partner_key:
        parser.error("--partner-key is required with --url")
    pid = args.pid or pid_listening_on(httpx.URL(args.url).port or 80)
    if pid is None:
        parser.error("cannot find intake's process: pass --pid")
    with tempfile.TemporaryDirectory(prefix="relief-bench-") as tmp:
        run(args.url.rstrip("/"), args.partner_key, pid, args.rows, Path(tmp), None)


if __name__ == "__main__":
    main()
