"""`make bench`: the whole pipeline at the real programme's scale, against the broker's own limit.

    python -m bench.run                                   # 220,472 persons on SQLite
    python -m bench.run --persons 50000 --postgres        # on a local PostgreSQL cluster
    python -m bench.run --skip-baselines --skip-stage     # the pipeline only
    python -m bench.run --postgres --pg-statements 20     # and the server's 20 costliest statements

Measured in one run, on one broker: raw aiokafka produce/consume rates; four chained FastStream
pass-through consumers (the practical ceiling of this design); the disbursement stage alone;
then the programme submitted over HTTP by its partners in parallel, from first upload to drained:
rows per second, latency from acceptance to the reach update (p50/p95/p99), peak RSS per service,
and whether every reach figure equals the ground truth. Prints one JSON summary and writes
docs/bench.png (throughput and consumer lag over time) and docs/bench-<database>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text

from relief_cli.drain import PipelineProbe
from relief_cli.generator import generate_programme
from relief_cli.runner import create_partner, fetch_reach, submit_batch
from relief_cli.stack import Stack, parse_replicas
from shared.kafka import LagReader
from shared.settings import Settings
from shared.topics import SUBSCRIPTIONS, all_topic_names

# Figures that do not depend on the order in which rows arrive. The truth is computed for batches
# submitted one after another; here they go in concurrently, so which of a person's rows is paid
# (and so the breakdowns, the amounts and, for the few people joined by a late linking row, the
# household counted) follows arrival order. Who is reached, and with what help, does not.
ORDER_INDEPENDENT = ("beneficiaries_reached", "by_assistance")
DOCS = Path(__file__).resolve().parent.parent / "docs"
SAMPLE_SECONDS = 0.5
ADMIN_URL = "postgresql+psycopg://relief@127.0.0.1:55499/postgres"  # the bench cluster's own database


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return round(ordered[index], 3)


class Sampler(threading.Thread):
    """Every second: rows final, total consumer lag, and each service's resident memory."""

    def __init__(self, stack: Stack, started: float) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.started = started
        self.samples: list[dict[str, Any]] = []
        self.peak_rss: dict[str, float] = {}
        self.stopping = threading.Event()
        self.missed = ""
        self.cpu_seconds: dict[str, float] = {}
        self._cpu_at_start: dict[str, float] = {}
        self.postgres_pid: int | None = None  # the server's backends are counted too, when there is one
        # The only poller of the pipeline's state (the main thread waits on `drained`), with its
        # HTTP and Kafka clients kept open: three pollers with clients made afresh each time took
        # a fifth of a core from the pipeline they measured, and one such poller still a tenth.
        self.probe = PipelineProbe(stack.settings)
        self.uploaded = threading.Event()  # set by the main thread once every file is in
        self.drained = threading.Event()
        self.drained_at = 0.0

    def _cpu(self, name: str, used: float) -> None:
        """CPU seconds a process used since the pipeline started (baselines and stage excluded)."""
        first = self._cpu_at_start.setdefault(name, used)
        self.cpu_seconds[name] = round(used - first, 1)

    def run(self) -> None:
        while not self.stopping.is_set():
            for managed in self.stack.managed:
                if managed.process is None or managed.process.poll() is not None:
                    continue
                name = f"{managed.service}#{managed.replica}"
                try:
                    process = psutil.Process(managed.process.pid)
                    rss = process.memory_info().rss / 2**20
                    times = process.cpu_times()
                    self._cpu(name, times.user + times.system)
                except psutil.Error:
                    continue
                self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), round(rss, 1))
            if self.postgres_pid is not None:
                try:
                    server = psutil.Process(self.postgres_pid)
                    times = [server.cpu_times(), *(c.cpu_times() for c in server.children(recursive=True))]
                    self._cpu("postgresql", sum(t.user + t.system for t in times))
                except psutil.Error:
                    pass
            if self.stack.kafka is not None and self.stack.kafka.process is not None:
                try:
                    process = psutil.Process(self.stack.kafka.process.pid)
                    rss = process.memory_info().rss / 2**20
                    self.peak_rss["kafka"] = max(self.peak_rss.get("kafka", 0.0), round(rss, 1))
                    times = process.cpu_times()
                    self._cpu("kafka", times.user + times.system)
                except psutil.Error:
                    pass
            # This process too: the uploads (files made and sent) and this sampling take their
            # share of the same two cores.
            own = psutil.Process().cpu_times()
            self._cpu("bench", own.user + own.system)
            # Only a read begun after the last upload was accepted can say the programme drained.
            uploads_done = self.uploaded.is_set()
            try:
                state = self.probe.state()
                at = time.monotonic()
                machine = psutil.cpu_times()
                self.samples.append(
                    {
                        "t": round(at - self.started, 1),
                        # Seconds every core of the machine has sat idle so far (all processes).
                        "idle": machine.idle + getattr(machine, "iowait", 0.0),
                        "final": state["final"],
                        "accepted": state["accepted"],
                        "lag": state["consumer_lag"],
                        "lag_by_group": state["lag_by_group"],
                    }
                )
                if state["drained"] and uploads_done:
                    self.drained_at = at
                    self.drained.set()
            except Exception as error:  # a sample missed under load is not a failure
                self.missed = f"{type(error).__name__}: {error}"
            self.stopping.wait(SAMPLE_SECONDS)
        self.probe.close()


def take_profile(stack: Stack, after: float, seconds: int, summary: dict[str, Any]) -> None:
    from bench.profile import record, summarise

    time.sleep(after)
    pids = {
        f"{m.service}-{m.replica}": m.process.pid
        for m in stack.managed
        if m.process is not None and m.process.poll() is None
    }
    print(f"bench: sampling {len(pids)} services with py-spy for {seconds} s", file=sys.stderr)
    files = record(pids, seconds, Path(".relief/bench/profiles").resolve())
    summary["profile"] = {name: summarise(path) for name, path in sorted(files.items())}


def latencies(settings: Settings) -> list[float]:
    """Seconds from a row's acceptance (its batch's creation) to its final state in the report."""
    intake = create_engine(settings.database_url_for("intake"))
    reporting = create_engine(settings.database_url_for("reporting"))
    try:
        with intake.connect() as connection:
            accepted = dict(connection.execute(text("SELECT batch_id, created_at FROM intake_batch")).all())
        with reporting.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT r.batch_id, r.recorded_at, MAX(p.recorded_at) FROM reach_row r "
                    "LEFT JOIN reach_payment p ON p.row_id = r.row_id GROUP BY r.row_id, r.batch_id, r.recorded_at"
                )
            ).all()
    finally:
        intake.dispose()
        reporting.dispose()

    def moment(value: Any) -> float:
        if isinstance(value, str):
            from datetime import datetime

            value = datetime.fromisoformat(value)
        return (
            float(value.timestamp())
            if value.tzinfo
            else float(value.replace(tzinfo=__import__("datetime").UTC).timestamp())
        )

    result = []
    for batch_id, decided_at, paid_at in rows:
        start = accepted.get(batch_id)
        end = paid_at or decided_at
        if start is not None and end is not None:
            result.append(max(0.0, moment(end) - moment(start)))
    return result


def drop_earlier_runs(admin_url: str) -> None:
    """Drop the databases earlier runs left in the bench cluster (a few GB each at full scale);
    the last run's stay until the next one, to be looked into."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            names = connection.execute(
                text(r"SELECT datname FROM pg_database WHERE datname ~ '^(bench|stage)[0-9]+_'")
            ).scalars()
            for name in list(names):
                connection.execute(text(f'DROP DATABASE "{name}"'))
    finally:
        engine.dispose()


def server_counters(admin_url: str) -> dict[str, int]:
    """PostgreSQL's own cumulative write counters: the log it wrote (and how much of it was whole
    pages copied after a checkpoint), its checkpoints, and pages its backends had to write
    themselves because no clean buffer was free. Read before and after the measured window."""
    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            wal = connection.execute(text("SELECT wal_bytes, wal_fpi FROM pg_stat_wal")).one()
            writer = connection.execute(
                text("SELECT checkpoints_timed + checkpoints_req, buffers_backend FROM pg_stat_bgwriter")
            ).one()
    finally:
        engine.dispose()
    return {
        "wal_mib": int(wal[0]) // 1048576,
        "wal_full_page_images": int(wal[1]),
        "checkpoints": int(writer[0]),
        "pages_written_by_backends": int(writer[1]),
    }


def reset_statement_statistics(admin_url: str) -> None:
    """Start pg_stat_statements' counts afresh, just before the measured window."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            connection.execute(text("SELECT pg_stat_statements_reset()"))
    finally:
        engine.dispose()


def top_statements(admin_url: str, database_prefix: str, limit: int) -> dict[str, Any]:
    """The statements the services' databases spent most server time on in the measured window,
    as pg_stat_statements normalises them (values become $1, $2: no data of anyone's), with each
    one's share of all statements' time and the log it wrote: which statement to make cheaper."""
    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT d.datname, s.query, s.calls, s.rows, s.total_exec_time, s.wal_bytes,"
                    " sum(s.total_exec_time) OVER () AS all_time, sum(s.wal_bytes) OVER () AS all_wal"
                    " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                    " WHERE d.datname LIKE :prefix ORDER BY s.total_exec_time DESC LIMIT :limit"
                ),
                {"prefix": f"{database_prefix}\\_%", "limit": limit},
            ).all()
    finally:
        engine.dispose()
    if not rows:
        return {"statements": []}
    return {
        "all_statements_seconds": round(float(rows[0].all_time) / 1000, 2),
        "all_statements_wal_mib": int(rows[0].all_wal) // 1048576,
        "statements": [
            {
                "database": row.datname.rpartition("_")[2],
                "seconds": round(row.total_exec_time / 1000, 2),
                "share": round(row.total_exec_time / float(row.all_time), 3),
                "calls": row.calls,
                "rows": row.rows,
                "ms_per_call": round(row.total_exec_time / max(row.calls, 1), 2),
                "wal_mib": round(int(row.wal_bytes) / 1048576, 1),
                "query": " ".join(row.query.split())[:300],
            }
            for row in rows
        ],
    }


def storage(settings: Settings) -> dict[str, Any]:
    """Each service's database size once drained, and the near-key rows eligibility keeps (one per
    registration that brought its person new near keys): where eligibility's writes go."""
    sizes: dict[str, float] = {}
    for service in ("intake", "eligibility", "disbursement", "reporting"):
        engine = create_engine(settings.database_url_for(service))
        try:
            with engine.connect() as connection:
                if engine.dialect.name == "postgresql":
                    size = connection.execute(
                        text("SELECT pg_database_size(current_database())")
                    ).scalar_one()
                else:
                    path = Path(str(engine.url.database))
                    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
                if service == "eligibility":
                    near = connection.execute(text("SELECT count(*) FROM eligibility_near_set")).scalar_one()
        finally:
            engine.dispose()
        sizes[service] = round(int(size) / 1048576, 1)
    return {"database_mib": sizes, "eligibility_near_sets": int(near)}


def machine_busy(samples: list[dict[str, Any]], start: float, end: float) -> float | None:
    """The share of the machine's cores busy (with anything) between two moments of the run:
    1.0 means every core worked all along, so only less work per row makes the run faster."""
    inside = [s for s in samples if start <= s["t"] <= end]
    if len(inside) < 2:
        return None
    elapsed = (inside[-1]["t"] - inside[0]["t"]) * (psutil.cpu_count() or 1)
    idle = inside[-1]["idle"] - inside[0]["idle"]
    return round(max(0.0, min(1.0, 1 - idle / elapsed)), 3) if elapsed > 0 else None


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(samples) < 2:
        return
    times = [s["t"] for s in samples]
    rates = [0.0] + [
        max(0.0, (b["final"] - a["final"]) / max(0.1, b["t"] - a["t"]))
        for a, b in zip(samples, samples[1:], strict=False)
    ]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(times, rates, color="#1f6feb")
    top.set_ylabel("rows final / s")
    if all("idle" in s for s in samples):
        cores = psutil.cpu_count() or 1
        busy = [0.0] + [
            max(0.0, min(100.0, 100 * (1 - (b["idle"] - a["idle"]) / max(0.1, (b["t"] - a["t"]) * cores))))
            for a, b in zip(samples, samples[1:], strict=False)
        ]
        share = top.twinx()
        share.plot(times, busy, color="#8c959f", linewidth=0.8)
        share.set_ylim(0, 105)
        share.set_ylabel("machine busy %", color="#57606a")
    top.set_title(title)
    top.grid(alpha=0.3)
    bottom.plot(times, [s["lag"] for s in samples], color="#d1242f", label="all")
    # Where the records wait: the stage whose lag grows is the one holding the pipeline back.
    for name in sorted({name for s in samples for name in s.get("lag_by_group", {})}):
        bottom.plot(
            times, [s.get("lag_by_group", {}).get(name, 0) for s in samples], linewidth=0.9, label=name
        )
    bottom.legend(fontsize=7, loc="upper left")
    bottom.set_ylabel("consumer lag (records)")
    bottom.set_xlabel("seconds since first upload")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def topic_sizes(settings: Settings) -> dict[str, int]:
    """Records each of the pipeline's topics holds now (dead-letter topics included)."""
    with LagReader(settings) as reader:
        return reader.held([settings.topic(name) for name, _ in all_topic_names()])


def kafka_traffic(settings: Settings, before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """What the pipeline put through the broker between two readings of `topic_sizes`: records
    published to each topic, and records delivered (each topic's records times the consumer groups
    that read it; every group has read everything once the pipeline is drained)."""
    published = {
        name: after[settings.topic(name)] - before.get(settings.topic(name), 0)
        for name, _ in all_topic_names()
    }
    delivered = sum(published[topic.name] for topics in SUBSCRIPTIONS.values() for topic in topics)
    return {"published": sum(published.values()), "delivered": delivered, "published_by_topic": published}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--persons", type=int, default=220_472)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--postgres", action="store_true", help="run on a local PostgreSQL cluster")
    parser.add_argument("--kafka-port", type=int, default=29092)
    parser.add_argument("--parallel", type=int, default=4, help="partners uploading at once")
    parser.add_argument(
        "--replicas", default=None, help="replicas per service, e.g. eligibility=2,disbursement=2"
    )
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-stage", action="store_true")
    parser.add_argument("--stage-count", type=int, default=20_000)
    parser.add_argument(
        "--profile-after", type=float, default=None, help="sample every service with py-spy, S seconds in"
    )
    parser.add_argument("--profile-seconds", type=int, default=20)
    parser.add_argument(
        "--pg-statements",
        type=int,
        default=0,
        metavar="N",
        help="with --postgres: record the N statements the server spent most time on (pg_stat_statements)",
    )
    args = parser.parse_args()

    root = Path(".relief/bench").resolve()
    shutil.rmtree(root / "data", ignore_errors=True)
    database_url = None
    cluster = None
    if args.postgres:
        from shared.pg_local import LocalPostgres

        preload = {"shared_preload_libraries": "pg_stat_statements"} if args.pg_statements else {}
        cluster = LocalPostgres(root / "postgres", 55499, server_settings=preload)
        cluster.stop()  # a cluster left running by an interrupted run may have other settings
        cluster.start()
        drop_earlier_runs(ADMIN_URL)
        database_url = f"postgresql+psycopg://relief@127.0.0.1:55499/bench{int(time.time())}"
    settings = Settings(
        data_dir=root / "data", kafka_port=args.kafka_port, database_url=database_url, log_level="WARNING",
        intake_port=18001, eligibility_port=18002, disbursement_port=18003, reporting_port=18004,
        max_rows=60_000, kafka_heap="1g",
    )  # fmt: skip
    kind = "postgresql" if args.postgres else "sqlite"
    summary: dict[str, Any] = {"persons": args.persons, "database": kind}
    print(f"bench: generating a programme of {args.persons:,} persons", file=sys.stderr)
    programme = generate_programme(args.persons, seed=args.seed)
    summary["rows"] = programme.rows
    try:
        replicas = parse_replicas(args.replicas)
    except ValueError as error:
        parser.error(str(error))
    summary["replicas"] = replicas
    stack = Stack(settings, replicas)
    stack.start()
    settings = stack.settings
    try:
        bootstrap = settings.bootstrap_servers
        if not args.skip_baselines:
            from bench.baseline import passthrough_rate, raw_rates

            print("bench: raw produce/consume rates…", file=sys.stderr)
            summary["kafka_raw"] = asyncio.run(raw_rates(bootstrap, 200_000))
            print("bench: four chained pass-through consumers…", file=sys.stderr)
            summary["passthrough_baseline"] = asyncio.run(passthrough_rate(bootstrap, 100_000))
            print("bench: the same, republishing in batches as the services do…", file=sys.stderr)
            summary["passthrough_baseline_batched"] = asyncio.run(
                passthrough_rate(bootstrap, 100_000, batched=True)
            )
        if not args.skip_stage:
            from bench.disbursement_stage import run as stage

            print("bench: disbursement stage alone…", file=sys.stderr)
            stage_url = (
                f"postgresql+psycopg://relief@127.0.0.1:55499/stage{int(time.time())}"
                if args.postgres
                else None
            )
            summary["disbursement_stage"] = stage(args.stage_count, stage_url, bootstrap, 0.0, 0)

        keys = {name: create_partner(settings, name)["api_key"] for name in programme.partners}
        print(
            f"bench: submitting {programme.rows:,} rows in {len(programme.batches)} batches, {args.parallel} at a time",
            file=sys.stderr,
        )
        counters_before = server_counters(ADMIN_URL) if cluster is not None else None
        if cluster is not None and args.pg_statements:
            reset_statement_statistics(ADMIN_URL)
        started = time.monotonic()
        sampler = Sampler(stack, started)
        if cluster is not None:
            sampler.postgres_pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        sampler.start()
        profiler = None
        if args.profile_after is not None:
            profiler = threading.Thread(
                target=take_profile,
                args=(stack, args.profile_after, args.profile_seconds, summary),
                daemon=True,
            )
            profiler.start()
        sizes_before = topic_sizes(settings)
        with ThreadPoolExecutor(args.parallel) as pool:
            results = list(
                pool.map(
                    lambda b: submit_batch(settings, keys[b.partner_name], b.to_csv()), programme.batches
                )
            )
        uploaded = time.monotonic() - started
        sampler.uploaded.set()
        accepted = sum(r["accepted"] for r in results)
        while not sampler.drained.wait(10.0):
            if sampler.samples:
                state = sampler.samples[-1]
                print(
                    f"bench: {state['final']:,}/{state['accepted']:,} rows final, lag {state['lag']:,}"
                    + (f" (last missed sample: {sampler.missed})" if sampler.missed else ""),
                    file=sys.stderr,
                )
        wall = sampler.drained_at - started
        sampler.stopping.set()
        sampler.join()
        if counters_before is not None:
            after = server_counters(ADMIN_URL)
            summary["postgresql_writes"] = {k: after[k] - counters_before[k] for k in after}
            if args.pg_statements:
                assert database_url is not None
                name = database_url.rpartition("/")[2]
                summary["postgresql_statements"] = top_statements(ADMIN_URL, name, args.pg_statements)
        if profiler is not None:
            profiler.join()
        summary["kafka_records"] = kafka_traffic(settings, sizes_before, topic_sizes(settings))
        reach = fetch_reach(settings)
        truth = {k: v for k, v in programme.truth.items() if k not in ("accepted", "rejected")}
        seconds = latencies(settings)
        summary["storage"] = storage(settings)
        pipeline_rate = accepted / wall
        summary.update(
            {
                "accepted": accepted,
                "upload_seconds": round(uploaded, 1),
                "wall_seconds_to_drained": round(wall, 1),
                "rows_per_second": round(pipeline_rate),
                "latency_seconds": {
                    "p50": percentile(seconds, 0.5),
                    "p95": percentile(seconds, 0.95),
                    "p99": percentile(seconds, 0.99),
                },
                "peak_rss_mib": dict(sorted(sampler.peak_rss.items())),
                "machine_busy": {
                    "while_uploading": machine_busy(sampler.samples, 0.0, uploaded),
                    "after_uploads": machine_busy(sampler.samples, uploaded, wall),
                    "whole_run": machine_busy(sampler.samples, 0.0, wall),
                },
                # The deepest backlog each consumer group had: the stage records waited for most.
                "peak_lag_by_group": {
                    name: max(s.get("lag_by_group", {}).get(name, 0) for s in sampler.samples)
                    for name in sorted({name for s in sampler.samples for name in s.get("lag_by_group", {})})
                },
                # CPU seconds each process used from the first upload to drained: where the time goes.
                "cpu_seconds": dict(sorted(sampler.cpu_seconds.items())),
                "beneficiaries_reached": reach["beneficiaries_reached"],
                "order_independent_figures_match": all(reach[k] == truth[k] for k in ORDER_INDEPENDENT),
                "order_independent_mismatches": {
                    k: {"reach": reach[k], "truth": truth[k]}
                    for k in ORDER_INDEPENDENT
                    if reach[k] != truth[k]
                },
                "people_reached": {
                    "reach": reach["people_reached"],
                    "sequential_truth": truth["people_reached"],
                },
                "figures_differing_from_sequential_truth": sorted(
                    k for k in truth if reach.get(k) != truth[k]
                ),
            }
        )
        if "passthrough_baseline" in summary:
            # The same baselines again, now that the pipeline is drained: on a shared machine one
            # measurement a few minutes earlier can differ from the next by 40 %, so each ratio is
            # taken against the mean of its two, and each side is shown.
            print("bench: four chained pass-through consumers again…", file=sys.stderr)
            summary["passthrough_baseline_after"] = asyncio.run(passthrough_rate(bootstrap, 100_000))
            summary["passthrough_baseline_batched_after"] = asyncio.run(
                passthrough_rate(bootstrap, 100_000, batched=True)
            )
            hops = summary["passthrough_baseline"]["hops"]
            delivered = summary["kafka_records"]["delivered"]
            for name, suffix in (("passthrough_baseline", ""), ("passthrough_baseline_batched", "_batched")):
                rates = {
                    "before": summary[name]["records_per_second"],
                    "after": summary[f"{name}_after"]["records_per_second"],
                }
                baseline_rate = (rates["before"] + rates["after"]) / 2
                summary[f"ratio_pipeline_to{suffix}_baseline"] = round(pipeline_rate / baseline_rate, 3)
                summary[f"ratio_pipeline_to_each{suffix}_baseline"] = {
                    when: round(pipeline_rate / rate, 3) for when, rate in rates.items()
                }
                # The time the pass-through hops alone, no logic and no database, would take to move
                # this many rows on this broker.
                summary[f"baseline{suffix}_seconds_for_these_rows"] = round(accepted / baseline_rate, 1)
                # The pipeline moves more records than rows: a decision is read by three groups, a
                # payment sends two statuses to two. Per record moved the hops read `hops` records
                # and publish as many; so this is the time they need to read as many records as the
                # pipeline's consumers read (publishing more than the pipeline published): the
                # broker traffic's floor for this programme in this design, before logic or database.
                summary[f"baseline{suffix}_seconds_for_these_deliveries"] = round(
                    delivered / (baseline_rate * hops), 1
                )
        DOCS.mkdir(exist_ok=True)
        plot(
            sampler.samples,
            DOCS / f"bench-{kind}.png",
            f"{args.persons:,} persons on {kind}: throughput and consumer lag",
        )
        (DOCS / f"bench-{kind}.json").write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        stack.stop()
        if cluster is not None:
            cluster.stop()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
