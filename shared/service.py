"""What every service has in common: database, broker, outbox relay, /healthz, /metrics, shutdown."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Table, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from shared.consumer import ApplyBatch, BatchConsumer
from shared.db import checkpoint_wal, create_tables, is_sqlite, make_engine, make_reader
from shared.kafka import BrokerPublisher, ensure_topics, make_broker
from shared.logging import configure_logging, get_logger
from shared.metrics import make_registry, metrics_endpoint, pipeline_metrics
from shared.outbox import OUTBOX_TABLES, OutboxRelay, adopt_earlier_outbox, outbox_backlog
from shared.settings import Settings
from shared.topics import Topic

log = get_logger(__name__)


class ServiceRuntime:
    """Wiring shared by the four services; each `app.py` builds one and adds its own parts."""

    def __init__(self, service: str, settings: Settings, tables: Sequence[Table]) -> None:
        self.service = service
        self.settings = settings
        self.registry = make_registry()
        self.metrics = pipeline_metrics(self.registry)
        self.engine = make_engine(settings.database_url_for(service))
        self.reader = make_reader(self.engine)  # reads that must not wait for, or hold up, writers
        self.tables = [*tables, *OUTBOX_TABLES]
        self.broker = make_broker(settings, client_id=f"relief-{service}")
        self.publisher = BrokerPublisher(self.broker)
        self.relay = OutboxRelay(self.engine, self.publisher, published=self.metrics.events_published)
        self.consumers: list[BatchConsumer] = []
        self._background: list[asyncio.Task[None]] = []
        self._prepare: list[Callable[[], Any]] = []
        self.outbox_state: tuple[int, float] | None = None  # (backlog, oldest age), as last read
        self.started = False

    def prepare(self, job: Callable[[], Any]) -> None:
        """Run `job` (blocking, in a worker thread) at start-up, once the tables exist and before
        anything is consumed or published."""
        self._prepare.append(job)

    def consume(self, topic: Topic, apply: ApplyBatch) -> BatchConsumer:
        consumer = BatchConsumer(
            broker=self.broker,
            settings=self.settings,
            topic=topic,
            service=self.service,
            apply=apply,
            metrics=self.metrics,
            after_apply=self.relay.wake,
        )
        self.consumers.append(consumer)
        return consumer

    def every(self, seconds: float, job: Any) -> None:
        """Run an async job periodically while the service is up (errors are logged, not fatal)."""

        async def loop() -> None:
            while True:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning(
                        "periodic_job_failed", job=getattr(job, "__name__", "job"), error=type(error).__name__
                    )
                await asyncio.sleep(seconds)

        self._background.append(asyncio.create_task(loop()))

    async def _refresh_outbox_gauges(self) -> None:
        def read() -> tuple[int, float]:
            with Session(self.reader) as session:
                return outbox_backlog(session)

        count, age = await asyncio.to_thread(read)
        self.outbox_state = (count, age)
        self.metrics.outbox_backlog.set(count)
        self.metrics.outbox_oldest_seconds.set(age)

    async def _checkpoint_wal(self) -> None:
        result = await asyncio.to_thread(checkpoint_wal, self.engine)
        if result is not None and result[0]:
            log.info("wal_checkpoint_busy", log_frames=result[1], copied_frames=result[2])

    async def startup(self) -> None:
        create_tables(self.engine, self.tables)
        adopted = await asyncio.to_thread(adopt_earlier_outbox, self.engine)
        if adopted:
            log.info("outbox_earlier_rows_adopted", count=adopted)
        for job in self._prepare:
            await asyncio.to_thread(job)
        await asyncio.to_thread(ensure_topics, self.settings)
        await self.broker.start()
        self.relay.start()
        self.every(5.0, self._refresh_outbox_gauges)
        if is_sqlite(self.engine):
            self.every(self.settings.sqlite_checkpoint_seconds, self._checkpoint_wal)
        self.started = True
        log.info("service_started", port=self.settings.service_port(self.service))

    async def shutdown(self) -> None:
        log.info("service_stopping")
        for task in self._background:
            task.cancel()
        await self.relay.stop()  # a last flush while the producer is still connected
        await self.broker.stop()  # stops consuming; in-flight batches finish first (graceful_timeout)
        self.engine.dispose()
        log.info("service_stopped")

    async def health(self) -> dict[str, Any]:
        checks: dict[str, str] = {}
        try:

            def ping() -> None:
                # Through the reader: on SQLite the writer engine would queue behind a long batch.
                with self.reader.connect() as connection:
                    connection.execute(text("SELECT 1"))

            await asyncio.to_thread(ping)
            checks["database"] = "ok"
        except Exception as error:
            checks["database"] = f"error: {type(error).__name__}"
        try:
            checks["kafka"] = "ok" if await self.broker.ping(timeout=2.0) else "unreachable"
        except Exception as error:
            checks["kafka"] = f"error: {type(error).__name__}"
        report: dict[str, Any] = {
            "service": self.service,
            "status": "ok" if all(v == "ok" for v in checks.values()) else "degraded",
            "checks": checks,
        }
        if self.outbox_state is not None:
            # The outbox gauges' last reading, so a health check needs no scrape of /metrics.
            backlog, oldest = self.outbox_state
            report["outbox"] = {"backlog": backlog, "oldest_age_seconds": round(oldest, 3)}
        return report

    def build_app(
        self, title: str, routers: Sequence[Any] = (), extra_startup: Any = None, extra_shutdown: Any = None
    ) -> FastAPI:
        """The service's HTTP app; `extra_startup` runs after the runtime started, `extra_shutdown`
        after it stopped (its background jobs cancelled, consumers and relay stopped)."""
        runtime = self

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await runtime.startup()
            if extra_startup is not None:
                await extra_startup()
            try:
                yield
            finally:
                try:
                    await runtime.shutdown()
                finally:  # the service's own clean-up runs even when the runtime's fails
                    if extra_shutdown is not None:
                        await extra_shutdown()

        app = FastAPI(title=title, lifespan=lifespan)
        app.state.runtime = self

        @app.get("/healthz", tags=["operations"])
        async def healthz() -> JSONResponse:
            report = await runtime.health()
            return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

        @app.exception_handler(OperationalError)
        async def database_busy(_: Request, error: OperationalError) -> JSONResponse:
            # Backpressure, not a failure: the database is busy (SQLite's single writer under
            # several large uploads) or away; nothing was stored, and the same request may be
            # sent again (with the same Idempotency-Key).
            log.warning("database_busy", error=str(error.orig)[:200] if error.orig else type(error).__name__)
            return JSONResponse(
                {
                    "code": "database_busy",
                    "message": "the database is busy or unreachable; nothing was stored, retry shortly",
                },
                status_code=503,
                headers={"Retry-After": "5"},
            )

        app.add_route("/metrics", metrics_endpoint(self.registry), include_in_schema=False)
        for router in routers:
            app.include_router(router)
        return app


# Collections of the youngest generation after this many more container objects allocated than
# freed (Python's default: 700), and of the older two after 20 and 100 of the younger ones.
GC_THRESHOLDS = (10_000, 20, 100)


def settle_heap() -> None:
    """Keep Python's cycle collector off what start-up built and out of each batch's way.

    Everything alive once a service is wired (modules, classes, the app, the engines: ~140,000
    objects) is moved out of the collector's sight (`gc.freeze`), and collections come less
    often. Before, a busy service scanned that whole heap again and again as each batch's
    objects aged: at 40,000 persons the collector took 16.9 CPU-s of the four services' ~100
    (eligibility 6.4 of 25, most of it in full collections); after, 4.1. Batches free their
    objects by reference counting; only reference cycles wait for the collector, a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(app: FastAPI, settings: Settings, service: str) -> None:
    """Run a service in the foreground; SIGTERM and SIGINT shut it down gracefully."""
    import uvicorn

    configure_logging(service, settings.log_level, settings.log_format)
    settle_heap()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.service_port(service),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
    )
