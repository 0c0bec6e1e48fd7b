"""The KPI reports at scale: dashboard latency, a rebuild of the facts, and what keeping the
facts current costs the ingest pipeline.

The issue's targets: with 10^7 messages and 10^6 conversations over a year, the 90-day
dashboard renders in p95 <= 200 ms, a rebuild is timed, and maintaining the facts costs at most
5% of ingestion throughput.

1. Load a year of conversations (``bench/kpis_data.py``): the stored rows (contacts,
   identities, conversations, messages, timeline events, escalations, tags), with the
   stale-marking triggers off, then the facts: on PostgreSQL derived from those rows by
   set-based SQL (``--facts sql``, the default there; a sample is checked against
   ``facts_compute``), or by ``facts_rebuild()`` (``--facts rebuild``, the default on SQLite).
   ``VACUUM ANALYZE`` (PostgreSQL) or ``ANALYZE`` (SQLite) after.
2. Time the dashboard of the data's last 90 days through Django's test client, logged in as
   the admin and as a manager (who sees two of the four channels): the overview, the overview
   filtered to one channel, and the agents page; the queries of one render, the slowest
   explained; and each metric call the overview makes, on its own.
3. Time the rebuild: ``facts_rebuild()`` itself, or on PostgreSQL by default the same loop over
   the first ``--rebuild-conversations`` conversations, with the rate and the extrapolation.
4. Ingest posts through the pipeline (as ``bench/run.py`` does) with the stale-marking
   triggers on and off, alternating, and time ``facts_refresh()`` on what the ingest touched:
   overhead = (trigger cost + refresh time) / ingest time without triggers.
5. PostgreSQL: ingest again, alternating rounds with the triggers off and rounds with the
   triggers on and a refresher process beside the ingest, as a second worker runs the beat's
   refresh: the throughput the ingest loses, the CPU time both add, and how long after the
   ingest's end the facts are current.

The database is Django's test database ``test_<name>`` of ``DATABASE_URL`` (PostgreSQL, loopback
only), or a SQLite file, created for the run and dropped at the end unless ``--keep``;
``--skip-load`` reuses one kept earlier. The developer's own database is never opened. Figures
only: the exit status is 0 whatever the timings.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/scrm_bench .venv/bin/python bench/kpis.py
    .venv/bin/python bench/kpis.py --conversations 20000 [--json kpis.json]
"""

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import POSTGRES_SCHEMES, loopback

REPO_ROOT = Path(__file__).resolve().parent.parent
KEPT_SQLITE = Path(tempfile.gettempdir()) / "scrm-bench-kpis" / "test_kpis.sqlite3"
TARGET_P95_MS = 200.0
TARGET_OVERHEAD = 0.05
RANGE_DAYS = 90
FACT_CHUNK = 50_000  # conversations per statement of the SQL facts
TOP_QUERIES = 8
INGEST_BRAND = "@acme"

# --- Environment and database ------------------------------------------------------------


_BENCH_KEY = "BnskEupCeuz01rFT6KjATvPtwXfiLh1N73oQdMy9t0s="


def prepare_environment(redis_url: str | None = None) -> Path:
    """A throwaway data folder and safe settings, before Django reads them; the figures cached
    in Redis at ``redis_url`` if given (as deployed with docker-compose), else in files (as
    without services)."""
    data_dir = Path(tempfile.mkdtemp(prefix="scrm-bench-kpis-"))
    os.environ["SCRM_DATA_DIR"] = str(data_dir)
    os.environ["DEBUG"] = "false"
    os.environ["DJANGO_ENV"] = "development"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["DB_CONN_MAX_AGE"] = "3600"  # one connection for the whole run
    os.environ["CELERY_BROKER_URL"] = "memory://localhost/"
    # One key for every run, so a database kept by one run (--keep) can be read by the next
    # (--skip-load): its channels' credentials are encrypted with it. Benchmark data only.
    os.environ["SCRM_ENCRYPTION_KEYS"] = _BENCH_KEY
    for name in ("CELERY_BROKER_URL_FILE", "REDIS_URL", "REDIS_URL_FILE", "DATABASE_URL_FILE"):
        os.environ.pop(name, None)
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return data_dir


def check_database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        return "sqlite"
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise SystemExit(f"DATABASE_URL must be PostgreSQL ({parts.scheme}:// given).")
    if not loopback(parts.hostname):
        raise SystemExit(f"Refusing a database server on {parts.hostname}: loopback only.")
    return "postgresql"


@contextmanager
def bench_database(*, data_dir: Path, keep: bool, reuse: bool) -> Iterator[str]:
    """Django's test database: created (or, with ``reuse``, found), dropped unless ``keep``."""
    from django.db import connection

    old_name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        path = KEPT_SQLITE if (keep or reuse) else data_dir / "test_kpis.sqlite3"
        if reuse and not path.exists():
            raise SystemExit(f"--skip-load: no database kept at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        connection.settings_dict["TEST"]["NAME"] = str(path)
    try:
        # serialize=False: Django would otherwise read the whole database into a string.
        name = connection.creation.create_test_db(
            verbosity=0, autoclobber=True, serialize=False, keepdb=reuse
        )
        try:
            yield name
        finally:
            if keep:
                connection.close()
            else:
                connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)
    finally:
        connection.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def progress(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


@contextmanager
def step(steps: dict[str, float], name: str) -> Iterator[None]:
    progress(f"{name} ...")
    started = time.perf_counter()
    yield
    steps[name] = round(time.perf_counter() - started, 2)
    progress(f"{name}: {steps[name]:.1f} s")


def _percentile(values: Sequence[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def server_settings(vendor: str) -> dict[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        if vendor != "postgresql":
            cursor.execute("SELECT sqlite_version()")
            return {"version": str(cursor.fetchone()[0])}
        found = {}
        for name in ("server_version", "shared_buffers", "work_mem", "effective_cache_size"):
            cursor.execute(f"SHOW {name}")
            found[name] = str(cursor.fetchone()[0])
        return found


# --- 1. Load ------------------------------------------------------------------------------


@dataclass
class Load:
    conversations: int
    messages: int
    events: int
    contacts: int
    identities: int
    escalations: int
    tag_links: int
    statuses: dict[str, int]
    reopened: int
    repeat_conversations: int
    first_day: str
    last_day: str
    facts: dict[str, int]
    facts_method: str
    steps_seconds: dict[str, float]
    sizes_mb: dict[str, float] = field(default_factory=dict)


def load(args: argparse.Namespace, vendor: str) -> tuple[Any, Load]:
    from django.conf import settings
    from django.db import DatabaseError, connection

    from bench import kpis_data
    from kpis.facts import facts_rebuild
    from kpis.models import StaleConversation

    steps: dict[str, float] = {}
    with step(steps, "world (users, teams, channels, policies, targets)"):
        world = kpis_data.world_create()
    dropped: list[tuple[str, str]] = []
    if vendor == "postgresql":
        kpis_data.check_columns()
        with connection.cursor() as cursor:
            cursor.execute("SET work_mem = '256MB'")
            cursor.execute("SET maintenance_work_mem = '1GB'")
            cursor.execute("SET synchronous_commit = off")
            with suppress(DatabaseError):  # foreign-key checks off (superusers only)
                cursor.execute("SET session_replication_role = replica")
        kpis_data.user_triggers_set(enabled=False)
        for table in kpis_data.TABLES:
            for name, definition in kpis_data.secondary_indexes(table):
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP INDEX {name}")
                dropped.append((name, definition))
    else:
        kpis_data.stale_triggers_set(enabled=False, vendor=vendor)

    totals: dict[str, int] = dict.fromkeys(kpis_data.TABLES, 0)
    now = int(time.time())
    shape = kpis_data.Shape()
    with step(steps, f"stored rows ({args.conversations:,} conversations)"):
        reported = 0.0
        for chunk, shape in kpis_data.generate(
            world,
            conversations=args.conversations,
            per_conversation=args.messages_per_conversation,
            days=args.days,
            now=now,
            seed=args.seed,
        ):
            for table, n in kpis_data.write_chunk(chunk, vendor=vendor).items():
                totals[table] += n
            done = shape.conversations / args.conversations
            if done - reported >= 0.1:
                reported = done
                progress(
                    f"  {shape.conversations:,} conversations, "
                    f"{totals['conversations_message']:,} messages ({done:.0%})"
                )
    if vendor == "postgresql":
        with step(steps, f"indexes ({len(dropped)})"), connection.cursor() as cursor:
            for _name, definition in dropped:
                cursor.execute(definition)
        with connection.cursor() as cursor:
            cursor.execute("RESET session_replication_role")
        kpis_data.user_triggers_set(enabled=True)
    else:
        kpis_data.stale_triggers_set(enabled=True, vendor=vendor)
    kpis_data.sequences_reset(vendor)
    StaleConversation.objects.all().delete()

    if args.facts == "sql":
        with step(steps, "facts (SQL from the stored rows)"):
            for name, seconds in kpis_data.facts_sql(
                chunk=FACT_CHUNK, progress=progress, time_zone=settings.TIME_ZONE
            ).items():
                steps[f"  {name}"] = round(seconds, 2)
    else:
        with step(steps, "facts (facts_rebuild)"):
            facts_rebuild()
    kpis_data.sequences_reset(vendor)
    StaleConversation.objects.all().delete()
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SET synchronous_commit = on")
            with step(steps, "VACUUM ANALYZE"):
                cursor.execute("VACUUM ANALYZE")
            with suppress(DatabaseError):
                cursor.execute("CHECKPOINT")
        else:
            with step(steps, "ANALYZE"):
                cursor.execute("ANALYZE")
    loaded = Load(
        conversations=totals["conversations_conversation"],
        messages=totals["conversations_message"],
        events=totals["conversations_conversationevent"],
        contacts=totals["contacts_contact"],
        identities=totals["contacts_socialidentity"],
        escalations=totals["conversations_escalation"],
        tag_links=totals["conversations_conversation_tags"],
        statuses=dict(sorted(shape.statuses.items(), key=lambda kv: -kv[1])),
        reopened=shape.reopened,
        repeat_conversations=shape.repeat_conversations,
        first_day=shape.first_day,
        last_day=shape.last_day,
        facts=fact_counts(),
        facts_method=args.facts,
        steps_seconds=steps,
    )
    return world, loaded


def fact_counts() -> dict[str, int]:
    from kpis.models import ContactCounts, ConversationFact, DayCounts, MessageDay, ResponseFact

    return {
        "conversation facts": ConversationFact.objects.count(),
        "response facts": ResponseFact.objects.count(),
        "message days": MessageDay.objects.count(),
        "day counts": DayCounts.objects.count(),
        "contact counts": ContactCounts.objects.count(),
    }


def sizes(vendor: str) -> dict[str, float]:
    from django.db import connection

    if vendor != "postgresql":
        name = Path(str(connection.settings_dict["NAME"]))
        return {"database": round(name.stat().st_size / 2**20, 1)} if name.exists() else {}
    found: dict[str, float] = {}
    with connection.cursor() as cursor:
        for table in (
            "conversations_message",
            "conversations_conversationevent",
            "conversations_conversation",
            "kpis_conversationfact",
            "kpis_responsefact",
            "kpis_messageday",
            "kpis_daycounts",
            "kpis_contactcounts",
        ):
            cursor.execute(
                "SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass)",
                [table, table],
            )
            heap, indexes = cursor.fetchone()
            found[table] = round((heap + indexes) / 2**20, 1)
        cursor.execute("SELECT pg_database_size(current_database())")
        found["database"] = round(cursor.fetchone()[0] / 2**20, 1)
    return found


# --- Facts check ----------------------------------------------------------------------------


def _fact_rows(ids: Sequence[int]) -> dict[str, dict[Any, dict[str, Any]]]:
    from kpis.models import ConversationFact, MessageDay, ResponseFact

    def without_id(row: Any) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k != "id"}

    return {
        "conversation facts": {
            r["conversation_id"]: without_id(r)
            for r in ConversationFact.objects.filter(conversation_id__in=ids).values()
        },
        "response facts": {
            (r["conversation_id"], r["at"], r["seconds"]): without_id(r)
            for r in ResponseFact.objects.filter(conversation_id__in=ids).values()
        },
        "message days": {
            (r["conversation_id"], r["day"]): without_id(r)
            for r in MessageDay.objects.filter(conversation_id__in=ids).values()
        },
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


def facts_check(sample: int, seed: int) -> dict[str, Any]:
    """Facts loaded by SQL against what ``facts_compute`` stores for a sample of
    conversations (which then keep the computed rows)."""
    from conversations.models import Conversation
    from kpis.facts import facts_compute

    highest = Conversation.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    rng = random.Random(seed)
    ids = sorted(rng.sample(range(1, highest + 1), min(sample, highest)))
    before = _fact_rows(ids)
    facts_compute(ids)
    after = _fact_rows(ids)
    result: dict[str, Any] = {"conversations": len(ids), "tables": {}}
    for table, rows in before.items():
        computed = after[table]
        columns: dict[str, int] = {}
        for key in rows.keys() & computed.keys():
            for column, value in computed[key].items():
                if not _same(rows[key].get(column), value):
                    columns[column] = columns.get(column, 0) + 1
        result["tables"][table] = {
            "rows": len(computed),
            "missing": len(computed.keys() - rows.keys()),
            "extra": len(rows.keys() - computed.keys()),
            "differing_columns": columns,
        }
    result["identical"] = all(
        not t["missing"] and not t["extra"] and not t["differing_columns"]
        for t in result["tables"].values()
    )
    return result


# --- 2. Dashboard ---------------------------------------------------------------------------


@dataclass
class PageFigure:
    page: str
    user: str
    url: str
    samples: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float
    queries: int
    sql_ms: float
    status: int
    top_queries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.p95_ms <= TARGET_P95_MS


def _statement(sql: str) -> str:
    return " ".join(sql.split())


def _timed(call: Callable[[], Any], *, repeat: int, warmup: int, budget: float) -> list[float]:
    """Milliseconds of each call; stops early, after at least 5, once past the budget."""
    for _ in range(warmup):
        call()
    timings: list[float] = []
    started = time.perf_counter()
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        timings.append((time.perf_counter() - began) * 1000)
        if len(timings) >= 5 and time.perf_counter() - started > budget:
            break
    return timings


def figures_forget() -> None:
    """Cached figures are not used again: as after every computation of facts (the refresh
    runs on the beat, so a manager mostly sees figures computed for the request)."""
    from kpis import metrics

    invalidate = getattr(metrics, "facts_changed", None)
    if invalidate is not None:
        invalidate()
    else:
        from django.core.cache import cache

        cache.clear()


def page_measure(
    client: Any, *, page: str, user: str, url: str, args: argparse.Namespace, cold: bool
) -> PageFigure:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    status = 0

    def get() -> None:
        nonlocal status
        if cold:
            figures_forget()
        status = client.get(url).status_code
        if status != 200:
            raise RuntimeError(f"GET {url} as {user} answered {status}")

    kind = "computed" if cold else "cached"
    page = f"{page}, {kind}"
    progress(f"timing {page} as {user} ...")
    timings = _timed(get, repeat=args.repeat, warmup=args.warmup, budget=args.page_budget)
    with CaptureQueriesContext(connection) as captured:
        get()
    queries = [(float(q["time"]) * 1000, _statement(q["sql"])) for q in captured]
    queries.sort(key=lambda q: -q[0])
    return PageFigure(
        page=page,
        user=user,
        url=url,
        samples=len(timings),
        p50_ms=round(_percentile(timings, 0.5), 1),
        p95_ms=round(_percentile(timings, 0.95), 1),
        max_ms=round(max(timings), 1),
        mean_ms=round(statistics.mean(timings), 1),
        queries=len(queries),
        sql_ms=round(sum(ms for ms, _ in queries), 1),
        status=status,
        top_queries=[{"ms": round(ms, 1), "sql": sql} for ms, sql in queries[:TOP_QUERIES]],
    )


@dataclass
class CallFigure:
    call: str
    samples: int
    p50_ms: float
    p95_ms: float
    queries: int
    sql_ms: float


def metric_calls(user: Any, range_: Any, today: date) -> list[tuple[str, Callable[[], Any]]]:
    """What the overview computes, one call each (as ``kpis.views.reports`` makes them)."""
    from kpis.metrics import (
        Filters,
        backlog_by_age,
        baseline,
        response_distribution,
        series,
        summary,
    )
    from kpis.targets import targets_status

    filters = Filters()
    return [
        ("summary (range)", lambda: summary(user=user, range_=range_, filters=filters)),
        (
            "baseline (previous range)",
            lambda: baseline(user=user, range_=range_.previous(), filters=filters),
        ),
        (
            "series (week)",
            lambda: series(user=user, range_=range_, filters=filters, grain="week"),
        ),
        (
            "response_distribution",
            lambda: response_distribution(user=user, range_=range_, filters=filters),
        ),
        ("backlog_by_age", lambda: backlog_by_age(user=user, filters=filters)),
        ("targets_status", lambda: targets_status(user=user, today=today)),
    ]


def calls_measure(
    user: Any, range_: Any, today: date, args: argparse.Namespace
) -> list[CallFigure]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    figures = []
    for name, call in metric_calls(user, range_, today):
        progress(f"timing {name} ...")

        def computed(call: Callable[[], Any] = call) -> None:
            figures_forget()
            call()

        timings = _timed(computed, repeat=args.call_repeat, warmup=1, budget=args.page_budget / 2)
        with CaptureQueriesContext(connection) as captured:
            computed()
        figures.append(
            CallFigure(
                call=name,
                samples=len(timings),
                p50_ms=round(_percentile(timings, 0.5), 1),
                p95_ms=round(_percentile(timings, 0.95), 1),
                queries=len(captured),
                sql_ms=round(sum(float(q["time"]) * 1000 for q in captured), 1),
            )
        )
    return figures


def explain(sql: str, vendor: str) -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
        lines = [" ".join(str(c) for c in row) for row in cursor.fetchall()]
    execution = next(
        (
            float(m.group(1))
            for line in lines
            if (m := re.search(r"Execution Time: ([\d.]+)", line))
        ),
        None,
    )
    return {"sql": sql, "execution_ms": execution, "plan": lines}


@dataclass
class Dashboard:
    range_start: str
    range_end: str
    pages: list[PageFigure]
    calls: list[CallFigure]
    plans: list[dict[str, Any]]
    load_average: tuple[float, float]


def dashboard_measure(
    args: argparse.Namespace, vendor: str, world: Any, *, with_plans: bool = True
) -> Dashboard:
    from django.contrib.auth.models import User
    from django.db.models import Max
    from django.test import Client
    from django.utils import timezone

    from kpis.metrics import DateRange
    from kpis.models import ConversationFact

    end = ConversationFact.objects.aggregate(end=Max("day"))["end"]
    if end is None:
        raise SystemExit("No facts loaded: nothing to report on.")
    range_ = DateRange(end - timedelta(days=RANGE_DAYS - 1), end)
    query = f"start={range_.start}&end={range_.end}"
    admin = User.objects.get(pk=world.admin_id)
    manager = User.objects.get(pk=world.manager_id)
    clients = {}
    for label, person in (("admin", admin), ("manager", manager)):
        client = Client()
        client.force_login(person)
        clients[label] = client
    pages_to_time = [
        ("overview, 90 days", "admin", f"/reports/?{query}"),
        ("overview, 90 days", "manager", f"/reports/?{query}"),
        (
            "overview, 90 days, one channel",
            "admin",
            f"/reports/?{query}&channel={world.channel_ids[0]}",
        ),
        ("agents, 90 days", "admin", f"/reports/agents/?{query}"),
    ]
    before = load_average()
    pages = [
        page_measure(clients[user], page=page, user=user, url=url, args=args, cold=cold)
        for cold in (True, False)
        for page, user, url in pages_to_time
    ]
    today = timezone.localdate(timezone.now(), timezone.get_default_timezone())
    calls = calls_measure(admin, range_, today, args)
    after = load_average()
    plans = []
    if with_plans:
        progress("EXPLAIN of the slowest queries ...")
        for entry in pages[0].top_queries[: args.explain]:
            plans.append(explain(entry["sql"], vendor) | {"render_ms": entry["ms"]})
    return Dashboard(
        range_start=str(range_.start),
        range_end=str(range_.end),
        pages=pages,
        calls=calls,
        plans=plans,
        load_average=(before, after),
    )


@dataclass
class IndexTrial:
    statements: list[str]
    build_seconds: float
    size_mb: float
    dashboard: Dashboard


def indexes_try(args: argparse.Namespace, vendor: str, world: Any) -> IndexTrial | None:
    """Candidate indexes created in the benchmark's database, the dashboard timed again, and
    the indexes dropped (the product's schema is left as it was)."""
    from django.db import connection

    if not args.try_index:
        return None
    names = []
    started = time.perf_counter()
    size = 0.0
    with connection.cursor() as cursor:
        for statement in args.try_index:
            progress(f"trying: {statement}")
            cursor.execute(statement)
            match = re.search(r"INDEX\s+(?:IF NOT EXISTS\s+)?(\w+)", statement, re.IGNORECASE)
            if match:
                names.append(match.group(1))
        build = time.perf_counter() - started
        cursor.execute("ANALYZE" if vendor == "sqlite" else "VACUUM ANALYZE kpis_responsefact")
        if vendor == "postgresql":
            for table in ("kpis_conversationfact", "kpis_messageday"):
                cursor.execute(f"VACUUM ANALYZE {table}")
            for name in names:
                cursor.execute("SELECT pg_relation_size(%s::regclass)", [name])
                size += cursor.fetchone()[0] / 2**20
    dashboard = dashboard_measure(args, vendor, world, with_plans=True)
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")
    return IndexTrial(
        statements=list(args.try_index),
        build_seconds=round(build, 1),
        size_mb=round(size, 1),
        dashboard=dashboard,
    )


# --- 3. Rebuild -----------------------------------------------------------------------------


@dataclass
class Rebuild:
    conversations: int
    of_total: int
    seconds: float
    per_second: float
    extrapolated_seconds: float
    whole: bool
    cleanup: dict[str, Any]
    facts_after: dict[str, int]


CLEANUP_TIMEOUT = 60  # seconds the rebuild's final statement may run before it is cancelled


def cleanup_measure() -> dict[str, Any]:
    """facts_rebuild()'s last statement (facts of conversations deleted since, by an
    anti-join), bounded by a statement timeout on PostgreSQL, with its plan."""
    from django.db import OperationalError, connection, transaction
    from django.db.models import Exists, OuterRef

    from conversations.models import Conversation
    from kpis.models import ConversationFact

    orphans = ConversationFact.objects.filter(
        ~Exists(Conversation.objects.filter(pk=OuterRef("conversation_id")))
    )
    found: dict[str, Any] = {"timeout_seconds": CLEANUP_TIMEOUT}
    postgres = connection.vendor == "postgresql"
    if postgres:
        sql, params = orphans.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + sql, params)
            found["plan"] = [str(row[0]) for row in cursor.fetchall()]
    started = time.perf_counter()
    try:
        with transaction.atomic():
            if postgres:
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL statement_timeout = '{CLEANUP_TIMEOUT}s'")
            orphans.delete()
        found["seconds"] = round(time.perf_counter() - started, 2)
        found["finished"] = True
    except OperationalError:
        found["seconds"] = round(time.perf_counter() - started, 2)
        found["finished"] = False
    return found


def rebuild_measure(args: argparse.Namespace, total: int) -> Rebuild:
    from django.db import connection

    from conversations.models import Conversation
    from kpis.facts import CHUNK, Calendars, facts_compute

    limit = min(args.rebuild_conversations or total, total)
    progress(f"rebuild of {limit:,} of {total:,} conversations ...")
    # facts_rebuild()'s own loop, stopped after ``limit`` conversations, then its final
    # statement timed on its own (it is bounded: see cleanup_measure).
    started = time.perf_counter()
    calendars = Calendars.load()
    done, last = 0, 0
    while done < limit:
        ids = list(
            Conversation.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[: min(CHUNK, limit - done)]
        )
        if not ids:
            break
        done += facts_compute(ids, calendars=calendars)
        last = ids[-1]
    seconds = time.perf_counter() - started
    progress(f"  {seconds:.1f} s; the final clean-up statement ...")
    cleanup = cleanup_measure()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for table in ("kpis_conversationfact", "kpis_responsefact", "kpis_messageday"):
                cursor.execute(f"VACUUM ANALYZE {table}")
    rate = done / seconds if seconds else 0.0
    return Rebuild(
        conversations=done,
        of_total=total,
        seconds=round(seconds, 1),
        per_second=round(rate, 1),
        extrapolated_seconds=round(total / rate, 0) if rate else 0.0,
        whole=limit >= total,
        cleanup=cleanup,
        facts_after=fact_counts(),
    )


# --- 4. Maintenance -------------------------------------------------------------------------


@dataclass
class IngestRound:
    round: int
    triggers: bool
    seconds: float
    posts: int
    stored: int
    trigger_function_ms: float | None  # PostgreSQL: time spent in the trigger functions
    stale_marked: int
    refresh_seconds: float
    refreshed: int


@dataclass
class Maintenance:
    posts: int
    batch: int
    rounds: list[IngestRound]
    ingest_seconds_without: float
    ingest_seconds_with: float
    posts_per_second_without: float
    posts_per_second_with: float
    trigger_seconds_by_difference: float
    trigger_seconds_measured: float | None
    refresh_seconds: float
    refreshed: int
    overhead: float
    overhead_measured_triggers: float | None
    load_average: tuple[float, float]


def _rename_authors(posts: Sequence[Any], prefix: str) -> list[Any]:
    """The same posts by people nobody has seen yet: each round creates its contacts."""
    renamed = []
    for post in posts:
        author = replace(
            post.author,
            platform_user_id=prefix + post.author.platform_user_id,
            handle=prefix + post.author.handle,
        )
        renamed.append(replace(post, author=author))
    return renamed


def _round_channel(tag: str, warmup: Sequence[Any], batch: int) -> Any:
    """A new channel for a round, with the contacts its posts know from before (the warm-up
    posts, by authors renamed for the round) and nothing left stale."""
    from bench.run import batched
    from channels_ingest.models import ChannelAccount
    from channels_ingest.pipeline import ingest
    from kpis.facts import facts_refresh
    from kpis.models import StaleConversation

    channel = ChannelAccount.objects.create(
        platform="demo",
        name=f"KPI ingest {tag}",
        handle=INGEST_BRAND,
        settings={"flavour": "x"},
        is_active=False,
    )
    for posts in batched(_rename_authors(warmup, tag), batch):
        ingest(channel=channel, posts=posts)
    while facts_refresh():
        pass
    StaleConversation.objects.all().delete()
    return channel


def _trigger_function_ms() -> float | None:
    from django.db import DatabaseError, connection

    if connection.vendor != "postgresql":
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.05)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT coalesce(sum(total_time), 0) FROM pg_stat_user_functions "
                "WHERE funcname LIKE 'kpis_stale_%%'"
            )
            return float(cursor.fetchone()[0])
    except DatabaseError:
        return None


def maintenance_measure(args: argparse.Namespace, vendor: str) -> Maintenance:
    from django.db import DatabaseError, connection

    from bench import kpis_data
    from bench.run import batched, build_workload
    from channels_ingest.pipeline import ingest
    from kpis.facts import facts_refresh
    from kpis.models import StaleConversation

    if vendor == "postgresql":
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET track_functions = 'pl'")
        except DatabaseError:
            pass
    workload = build_workload(
        count=args.ingest_posts, population=args.ingest_posts, known_target=0.2, seed=args.seed
    )
    rounds: list[IngestRound] = []
    before = load_average()
    # Channels and authors of this run: new ones also on a database an earlier run kept.
    run = f"{int(time.time()) % 100_000}"
    for number in range(args.ingest_rounds):
        order = (False, True) if number % 2 == 0 else (True, False)
        for triggers in order:
            tag = f"{run}r{number}{'on' if triggers else 'off'}-"
            channel = _round_channel(tag, workload.warmup, args.ingest_batch)
            kpis_data.stale_triggers_set(enabled=triggers, vendor=vendor)
            try:
                posts = _rename_authors(workload.posts, tag)
                function_before = _trigger_function_ms()
                progress(f"ingest round {number + 1}, triggers {'on' if triggers else 'off'} ...")
                stored = 0
                started = time.perf_counter()
                for index, batch in enumerate(batched(posts, args.ingest_batch)):
                    stored += ingest(channel=channel, posts=batch, cursor={"seq": index}).stored
                seconds = time.perf_counter() - started
                function_after = _trigger_function_ms()
            finally:
                kpis_data.stale_triggers_set(enabled=True, vendor=vendor)
            marked = StaleConversation.objects.count()
            refreshed = 0
            began = time.perf_counter()
            while done := facts_refresh():
                refreshed += done
            refresh_seconds = time.perf_counter() - began
            rounds.append(
                IngestRound(
                    round=number + 1,
                    triggers=triggers,
                    seconds=round(seconds, 3),
                    posts=len(posts),
                    stored=stored,
                    trigger_function_ms=(
                        round(function_after - function_before, 1)
                        if triggers and function_before is not None and function_after is not None
                        else None
                    ),
                    stale_marked=marked,
                    refresh_seconds=round(refresh_seconds, 3),
                    refreshed=refreshed,
                )
            )
            progress(
                f"  {seconds:.2f} s, {len(posts) / seconds:,.0f} posts/s; "
                f"{marked:,} marked, refresh {refresh_seconds:.2f} s"
            )
    after = load_average()
    on = [r for r in rounds if r.triggers]
    off = [r for r in rounds if not r.triggers]
    without = statistics.median(r.seconds for r in off)
    with_ = statistics.median(r.seconds for r in on)
    refresh = statistics.median(r.refresh_seconds for r in on)
    functions = [r.trigger_function_ms for r in on if r.trigger_function_ms is not None]
    measured = statistics.median(functions) / 1000 if functions else None
    difference = with_ - without
    return Maintenance(
        posts=args.ingest_posts,
        batch=args.ingest_batch,
        rounds=rounds,
        ingest_seconds_without=round(without, 3),
        ingest_seconds_with=round(with_, 3),
        posts_per_second_without=round(args.ingest_posts / without, 1),
        posts_per_second_with=round(args.ingest_posts / with_, 1),
        trigger_seconds_by_difference=round(difference, 3),
        trigger_seconds_measured=round(measured, 4) if measured is not None else None,
        refresh_seconds=round(refresh, 3),
        refreshed=int(statistics.median(r.refreshed for r in on)),
        overhead=round((max(0.0, difference) + refresh) / without, 4),
        overhead_measured_triggers=(
            round((measured + refresh) / without, 4) if measured is not None else None
        ),
        load_average=(before, after),
    )


# --- 5. Maintenance beside the ingest --------------------------------------------------------


@dataclass
class BesideRound:
    round: int
    refresher: bool  # the stale-marking triggers on and a refresher beside, or neither
    seconds: float
    posts: int
    stored: int
    cpu_seconds: float  # the ingest's process
    server_cpu_seconds: float | None  # the PostgreSQL process serving the ingest
    refresher_cpu_seconds: float | None  # the refresher's process and its server process
    refreshed: int  # conversations the refresher computed during the round
    lag_seconds: float | None  # from the ingest's end until no conversation is stale


@dataclass
class Beside:
    posts: int
    batch: int
    tick: float
    rounds: list[BesideRound]
    posts_per_second_without: float  # medians
    posts_per_second_with: float
    throughput_loss: float  # 1 - with / without, by the medians
    throughput_loss_paired: float  # the median of each round's own
    cpu_without: float | None  # the whole work of a round: both processes and their servers
    cpu_with: float | None
    lag_seconds: float
    load_average: tuple[float, float]


def _refresher(stop: Any, tick: float, results: Any) -> None:
    """A worker that runs the beat's refresh every ``tick`` seconds until told to stop, then
    reports what it computed and the CPU time it and its database process used. Runs in a
    forked process, which opens its own connection (the parent closed its before the fork)."""
    from django.db import connection

    from bench.support import server_process
    from kpis.tasks import refresh_until_current

    connection.ensure_connection()
    server = server_process(connection)
    server_started = server.cpu_seconds() if server else None
    cpu_started = time.process_time()
    refreshed = 0
    while True:
        done = refresh_until_current(seconds=50.0)
        refreshed += done
        if stop.is_set() and not done:
            break
        if not done:
            stop.wait(tick)
    cpu = time.process_time() - cpu_started
    server_ended = server.cpu_seconds() if server else None
    connection.close()
    results.put(
        (
            refreshed,
            cpu + (server_ended - server_started)
            if server_started is not None and server_ended is not None
            else None,
        )
    )


def beside_measure(args: argparse.Namespace, vendor: str) -> Beside | None:
    """Ingest as ``maintenance_measure`` does, alternating rounds with the stale-marking
    triggers off and nothing else running, and rounds with the triggers on and a refresher
    process beside the ingest, as a second worker runs the beat's refresh: what keeping the
    facts current costs the ingest's throughput when it runs where it is deployed. After each
    round with the refresher, the time until the facts are current again (the lag).
    PostgreSQL only: on SQLite one writer at a time would serialise the two processes."""
    import multiprocessing

    from django.db import connection

    from bench import kpis_data
    from bench.run import batched, build_workload
    from bench.support import server_process
    from channels_ingest.pipeline import ingest
    from kpis.models import StaleConversation

    if vendor != "postgresql" or args.beside_rounds < 1:
        return None
    fork = multiprocessing.get_context("fork")
    workload = build_workload(
        count=args.ingest_posts, population=args.ingest_posts, known_target=0.2, seed=args.seed
    )
    rounds: list[BesideRound] = []
    before = load_average()
    run = f"{int(time.time()) % 100_000}"
    for number in range(args.beside_rounds):
        order = (False, True) if number % 2 == 0 else (True, False)
        for refresher in order:
            tag = f"{run}b{number}{'on' if refresher else 'off'}-"
            channel = _round_channel(tag, workload.warmup, args.ingest_batch)
            kpis_data.stale_triggers_set(enabled=refresher, vendor=vendor)
            stop = fork.Event()
            results = fork.Queue()
            process = None
            try:
                if refresher:
                    # The child opens its own connection; the parent's would be shared.
                    connection.close()
                    process = fork.Process(
                        target=_refresher, args=(stop, args.refresh_tick, results)
                    )
                    process.start()
                server = server_process(connection)
                progress(
                    f"ingest beside round {number + 1}, "
                    f"{'triggers on, refresher beside' if refresher else 'triggers off'} ..."
                )
                posts = _rename_authors(workload.posts, tag)
                server_started = server.cpu_seconds() if server else None
                cpu_started = time.process_time()
                started = time.perf_counter()
                stored = 0
                for index, batch in enumerate(batched(posts, args.ingest_batch)):
                    stored += ingest(channel=channel, posts=batch, cursor={"seq": index}).stored
                seconds = time.perf_counter() - started
                cpu = time.process_time() - cpu_started
                server_ended = server.cpu_seconds() if server else None
                lag = None
                refreshed, refresher_cpu = 0, None
                if process is not None:
                    while StaleConversation.objects.exists():
                        time.sleep(0.02)
                    lag = time.perf_counter() - started - seconds
                    stop.set()
                    refreshed, refresher_cpu = results.get(timeout=600)
                    process.join(timeout=60)
            finally:
                stop.set()
                if process is not None and process.is_alive():
                    process.terminate()
                kpis_data.stale_triggers_set(enabled=True, vendor=vendor)
            rounds.append(
                BesideRound(
                    round=number + 1,
                    refresher=refresher,
                    seconds=round(seconds, 3),
                    posts=len(posts),
                    stored=stored,
                    cpu_seconds=round(cpu, 3),
                    server_cpu_seconds=(
                        round(server_ended - server_started, 3)
                        if server_started is not None and server_ended is not None
                        else None
                    ),
                    refresher_cpu_seconds=(
                        round(refresher_cpu, 3) if refresher_cpu is not None else None
                    ),
                    refreshed=refreshed,
                    lag_seconds=round(lag, 3) if lag is not None else None,
                )
            )
            caught_up = f"; refreshed {refreshed:,}, current {lag:.2f} s after" if lag else ""
            progress(f"  {seconds:.2f} s, {len(posts) / seconds:,.0f} posts/s{caught_up}")
    after = load_average()
    on = [r for r in rounds if r.refresher]
    off = [r for r in rounds if not r.refresher]
    without = statistics.median(r.seconds for r in off)
    with_ = statistics.median(r.seconds for r in on)
    paired = [1 - b.seconds / a.seconds for a in on for b in off if a.round == b.round]

    def work(r: BesideRound) -> float | None:
        if r.server_cpu_seconds is None or (r.refresher and r.refresher_cpu_seconds is None):
            return None
        return r.cpu_seconds + r.server_cpu_seconds + (r.refresher_cpu_seconds or 0.0)

    works_on = [w for w in map(work, on) if w is not None]
    works_off = [w for w in map(work, off) if w is not None]
    return Beside(
        posts=args.ingest_posts,
        batch=args.ingest_batch,
        tick=args.refresh_tick,
        rounds=rounds,
        posts_per_second_without=round(args.ingest_posts / without, 1),
        posts_per_second_with=round(args.ingest_posts / with_, 1),
        throughput_loss=round(1 - without / with_, 4),
        throughput_loss_paired=round(statistics.median(paired), 4),
        cpu_without=round(statistics.median(works_off), 3) if works_off else None,
        cpu_with=round(statistics.median(works_on), 3) if works_on else None,
        lag_seconds=round(statistics.median(r.lag_seconds or 0.0 for r in on), 3),
        load_average=(before, after),
    )


# --- Report ---------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def _dashboard_lines(dashboard: Dashboard, title: str) -> list[str]:
    lines = [
        f"{title}: {dashboard.range_start}..{dashboard.range_end} (previous range for the "
        f"comparisons, weekly series), load average {dashboard.load_average[0]:.2f} before, "
        f"{dashboard.load_average[1]:.2f} after",
        _table(
            ["page", "user", "n", "p50 ms", "p95 ms", "max ms", "queries", "SQL ms", "p95<=200"],
            [
                [
                    p.page,
                    p.user,
                    str(p.samples),
                    f"{p.p50_ms:,.1f}",
                    f"{p.p95_ms:,.1f}",
                    f"{p.max_ms:,.1f}",
                    str(p.queries),
                    f"{p.sql_ms:,.1f}",
                    "yes" if p.met else "NO",
                ]
                for p in dashboard.pages
            ],
        ),
        "",
        "computed: cached figures forgotten before each render, as after every refresh of "
        "the facts; cached: the same request again within the cache's lifetime.",
        "",
        "The overview's metric calls on their own (admin, computed):",
        _table(
            ["call", "n", "p50 ms", "p95 ms", "queries", "SQL ms"],
            [
                [
                    c.call,
                    str(c.samples),
                    f"{c.p50_ms:,.1f}",
                    f"{c.p95_ms:,.1f}",
                    str(c.queries),
                    f"{c.sql_ms:,.1f}",
                ]
                for c in dashboard.calls
            ],
        ),
    ]
    first = dashboard.pages[0]
    lines += ["", f"Slowest queries of one '{first.page}' render as {first.user} (ms):"]
    lines += [f"  {q['ms']:8.1f}  {q['sql'][:230]}" for q in first.top_queries]
    return lines


def report(result: dict[str, Any]) -> str:
    args = result["args"]
    lines = [
        f"Database : {result['vendor']} {result['server']}, '{result['database']}'"
        + (" (kept)" if args["keep"] else " (dropped at exit)"),
        f"Runtime  : Python {platform.python_version()}, {platform.platform()}, "
        f"{os.cpu_count()} CPUs (shared: other work shows in the load average)",
        f"Cache    : {result.get('cache', 'files (no Redis)')}",
    ]
    loaded: Load | None = result.get("load")
    if loaded is not None:
        total = sum(v for k, v in loaded.steps_seconds.items() if not k.startswith("  "))
        lines += [
            f"Data     : {loaded.conversations:,} conversations "
            f"{loaded.first_day}..{loaded.last_day}, "
            f"{loaded.messages:,} messages, {loaded.events:,} timeline events, "
            f"{loaded.contacts:,} contacts ({loaded.repeat_conversations:,} conversations from "
            f"a returning contact), {loaded.escalations:,} escalations, {loaded.reopened:,} "
            f"reopened, {loaded.tag_links:,} tag links",
            "Statuses : " + ", ".join(f"{k} {v:,}" for k, v in loaded.statuses.items()),
            "Facts    : "
            + ", ".join(f"{k} {v:,}" for k, v in loaded.facts.items())
            + (
                " (by SQL from the stored rows)"
                if loaded.facts_method == "sql"
                else " (by facts_rebuild())"
            ),
            f"Load     : {total:,.0f} s in all: "
            + ", ".join(f"{k.strip()} {v:,.1f} s" for k, v in loaded.steps_seconds.items()),
        ]
    if result.get("sizes"):
        lines.append("Sizes MiB: " + ", ".join(f"{k} {v:,.0f}" for k, v in result["sizes"].items()))
    check = result.get("facts_check")
    if check:
        lines.append(
            f"Check    : SQL facts of {check['conversations']} sampled conversations against "
            "facts_compute: " + ("identical" if check["identical"] else json.dumps(check["tables"]))
        )
    dashboard: Dashboard | None = result.get("dashboard")
    if dashboard is not None:
        lines += ["", *_dashboard_lines(dashboard, "Dashboard, 90 days")]
        for plan in dashboard.plans:
            lines += [
                "",
                f"--- EXPLAIN ({plan['render_ms']:.1f} ms in the render): {plan['sql'][:400]}",
                *plan["plan"],
            ]
    trial: IndexTrial | None = result.get("index_trial")
    if trial is not None:
        lines += [
            "",
            f"With candidate indexes ({trial.build_seconds:.0f} s to build, {trial.size_mb:,.0f} "
            "MiB; dropped again after):",
            *(f"  {s}" for s in trial.statements),
        ]
        lines += _dashboard_lines(trial.dashboard, "Dashboard with them")
        for plan in trial.dashboard.plans[:3]:
            lines += [
                "",
                f"--- EXPLAIN ({plan['render_ms']:.1f} ms in the render): {plan['sql'][:400]}",
                *plan["plan"],
            ]
    rebuild: Rebuild | None = result.get("rebuild")
    if rebuild is not None:
        lines += [
            "",
            f"Rebuild  : {rebuild.conversations:,} of {rebuild.of_total:,} conversations in "
            f"{rebuild.seconds:,.1f} s = {rebuild.per_second:,.0f} conversations/s "
            "(facts_rebuild()'s loop, oldest first)"
            + (
                ""
                if rebuild.whole
                else f"; all {rebuild.of_total:,} at that rate: "
                f"{rebuild.extrapolated_seconds / 60:,.1f} min"
            ),
        ]
        cleanup = rebuild.cleanup
        if cleanup:
            lines.append(
                "  its final statement (delete facts of deleted conversations): "
                + (
                    f"{cleanup['seconds']:.2f} s"
                    if cleanup["finished"]
                    else f"cancelled after {cleanup['seconds']:.0f} s (statement timeout)"
                )
            )
            lines += [f"    {line}" for line in cleanup.get("plan", [])[:6]]
    maintenance: Maintenance | None = result.get("maintenance")
    if maintenance is not None:
        m = maintenance
        lines += [
            "",
            f"Maintenance: {m.posts:,} posts per round through the ingest pipeline in batches of "
            f"{m.batch}, triggers on and off alternating (load average "
            f"{m.load_average[0]:.2f} before, {m.load_average[1]:.2f} after)",
            _table(
                [
                    "round",
                    "triggers",
                    "ingest s",
                    "posts/s",
                    "trigger fn ms",
                    "marked",
                    "refresh s",
                    "refreshed",
                ],
                [
                    [
                        str(r.round),
                        "on" if r.triggers else "off",
                        f"{r.seconds:.2f}",
                        f"{r.posts / r.seconds:,.0f}",
                        "-" if r.trigger_function_ms is None else f"{r.trigger_function_ms:,.1f}",
                        f"{r.stale_marked:,}",
                        f"{r.refresh_seconds:.2f}" if r.triggers else "-",
                        f"{r.refreshed:,}" if r.triggers else "-",
                    ]
                    for r in m.rounds
                ],
            ),
            f"  medians: ingest {m.ingest_seconds_without:.2f} s without triggers "
            f"({m.posts_per_second_without:,.0f} posts/s), {m.ingest_seconds_with:.2f} s with "
            f"({m.posts_per_second_with:,.0f} posts/s); difference "
            f"{m.trigger_seconds_by_difference:+.2f} s"
            + (
                f"; time inside the trigger functions {m.trigger_seconds_measured * 1000:,.0f} ms"
                if m.trigger_seconds_measured is not None
                else ""
            ),
            f"  facts_refresh() of the {m.refreshed:,} conversations a round touched: "
            f"{m.refresh_seconds:.2f} s",
            f"  overhead = (trigger cost + refresh) / ingest time without triggers: "
            f"{m.overhead:.1%} with the trigger cost from the difference of medians (floored at 0)"
            + (
                f"; {m.overhead_measured_triggers:.1%} with the trigger functions' own time"
                if m.overhead_measured_triggers is not None
                else ""
            )
            + f" (target <= {TARGET_OVERHEAD:.0%})",
        ]
    beside: Beside | None = result.get("beside")
    if beside is not None:
        b = beside
        lines += [
            "",
            f"Maintenance beside the ingest: {b.posts:,} posts a round in batches of {b.batch}; "
            f"rounds with the triggers off and nothing beside, and with the triggers on and a "
            f"refresher process running the beat's refresh (waiting {b.tick:g} s once nothing "
            f"is stale), alternating (load average {b.load_average[0]:.2f} before, "
            f"{b.load_average[1]:.2f} after)",
            _table(
                [
                    "round",
                    "refresher",
                    "ingest s",
                    "posts/s",
                    "ingest CPU s",
                    "its server CPU s",
                    "refresher CPU s",
                    "refreshed",
                    "current after s",
                ],
                [
                    [
                        str(r.round),
                        "beside" if r.refresher else "-",
                        f"{r.seconds:.2f}",
                        f"{r.posts / r.seconds:,.0f}",
                        f"{r.cpu_seconds:.2f}",
                        "-" if r.server_cpu_seconds is None else f"{r.server_cpu_seconds:.2f}",
                        "-"
                        if r.refresher_cpu_seconds is None
                        else f"{r.refresher_cpu_seconds:.2f}",
                        f"{r.refreshed:,}" if r.refresher else "-",
                        "-" if r.lag_seconds is None else f"{r.lag_seconds:.2f}",
                    ]
                    for r in b.rounds
                ],
            ),
            f"  medians: {b.posts_per_second_without:,.0f} posts/s without, "
            f"{b.posts_per_second_with:,.0f} with the refresher beside: throughput "
            f"{-b.throughput_loss:+.1%} ({-b.throughput_loss_paired:+.1%} paired by round; "
            f"target: at most {TARGET_OVERHEAD:.0%} less); facts current "
            f"{b.lag_seconds:.2f} s after the ingest's end",
        ]
        if b.cpu_without is not None and b.cpu_with is not None:
            lines.append(
                f"  CPU of a round, both processes and their servers: {b.cpu_without:.2f} s "
                f"without, {b.cpu_with:.2f} s with ({b.cpu_with / b.cpu_without - 1:+.1%}): "
                "the work the maintenance adds, done beside the ingest"
            )
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path | date | datetime):
        return str(value)
    return value


# --- Entry point ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None, vendor: str) -> argparse.Namespace:
    postgres = vendor == "postgresql"
    parser = argparse.ArgumentParser(
        description="KPI reports at scale: dashboard latency, rebuild, maintenance cost."
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=1_000_000 if postgres else 20_000,
        help="conversations over the period (10^6 on PostgreSQL, 20000 on SQLite)",
    )
    parser.add_argument(
        "--messages-per-conversation", type=int, default=10, help="mean messages (10)"
    )
    parser.add_argument("--days", type=int, default=365, help="days of data, up to today (365)")
    parser.add_argument("--repeat", type=int, default=30, help="timed renders per page (30)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed renders first (2)")
    parser.add_argument(
        "--page-budget",
        type=float,
        default=120.0,
        help="seconds of timed renders per page; at least 5 renders are timed (120)",
    )
    parser.add_argument(
        "--call-repeat", type=int, default=10, help="timed runs of each metric call (10)"
    )
    parser.add_argument("--explain", type=int, default=4, help="slowest queries explained (4)")
    parser.add_argument(
        "--facts",
        choices=("sql", "rebuild"),
        default="sql" if postgres else "rebuild",
        help="load the facts by SQL from the stored rows (PostgreSQL default) or by "
        "facts_rebuild() (SQLite default)",
    )
    parser.add_argument(
        "--check-sample",
        type=int,
        default=500,
        help="conversations whose SQL facts are compared with facts_compute (500)",
    )
    parser.add_argument(
        "--rebuild-conversations",
        type=int,
        default=None,
        help="conversations the timed rebuild covers, oldest first (default: 100000 with "
        "SQL facts, else none: the load's facts_rebuild() is the figure); 0 for all",
    )
    parser.add_argument(
        "--try-index",
        action="append",
        default=[],
        metavar="SQL",
        help="CREATE INDEX ... to try in the benchmark database: the dashboard is timed again "
        "with it, then it is dropped (repeatable)",
    )
    parser.add_argument("--ingest-posts", type=int, default=10_000, help="posts per round (10000)")
    parser.add_argument("--ingest-batch", type=int, default=500, help="posts per ingest call (500)")
    parser.add_argument("--ingest-rounds", type=int, default=3, help="rounds of each kind (3)")
    parser.add_argument(
        "--beside-rounds",
        type=int,
        default=3,
        help="PostgreSQL: rounds of each kind with a refresher process beside the ingest, "
        "against the triggers off (3; 0 to skip)",
    )
    parser.add_argument(
        "--refresh-tick",
        type=float,
        default=1.0,
        help="seconds the refresher beside the ingest waits once nothing is stale (1.0)",
    )
    parser.add_argument("--skip-dashboard", action="store_true", help="do not time the pages")
    parser.add_argument("--skip-rebuild", action="store_true", help="do not time a rebuild")
    parser.add_argument(
        "--skip-maintenance", action="store_true", help="do not time ingest and refresh"
    )
    parser.add_argument(
        "--skip-load", action="store_true", help="reuse the database a --keep run left"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="cache the figures and sessions in Redis there, as a deployment with Redis does "
        "(default: in files, as without services; the benchmark never reads REDIS_URL, so a "
        "Redis in use is not written to unless named here)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures here")
    args = parser.parse_args(argv)
    if args.conversations < 100 or args.messages_per_conversation < 1 or args.days < RANGE_DAYS * 2:
        parser.error(
            f"--conversations >= 100, --messages-per-conversation >= 1, "
            f"--days >= {RANGE_DAYS * 2} (the range and the one before it)"
        )
    if args.repeat < 1 or args.ingest_rounds < 1 or args.ingest_posts < 1:
        parser.error("--repeat, --ingest-rounds and --ingest-posts must be positive")
    if args.beside_rounds < 0 or args.refresh_tick <= 0:
        parser.error("--beside-rounds must not be negative, --refresh-tick must be positive")
    if args.rebuild_conversations is None:
        args.rebuild_conversations = 100_000 if args.facts == "sql" else -1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    vendor = check_database_url()
    args = parse_args(argv, vendor)
    data_dir = prepare_environment(args.redis_url)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    import django

    django.setup()
    from django.urls import resolve

    from bench import kpis_data
    from conversations.models import Conversation
    from scrm.startup import startup_objects_freeze

    resolve("/reports/")  # the pages' code imports before the long load
    result: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "vendor": vendor,
        "cache": f"Redis at {args.redis_url}" if args.redis_url else "files (no Redis)",
    }
    try:
        with bench_database(data_dir=data_dir, keep=args.keep, reuse=args.skip_load) as name:
            result["database"] = name
            result["server"] = server_settings(vendor)
            if args.skip_load:
                world = kpis_data.world_load()
            else:
                world, result["load"] = load(args, vendor)
            result["sizes"] = sizes(vendor)
            total = Conversation.objects.count()
            if args.facts == "sql" and args.check_sample:
                progress("checking SQL facts against facts_compute ...")
                result["facts_check"] = facts_check(args.check_sample, args.seed)
            # What web and worker processes do once the application is loaded (``scrm/wsgi.py``,
            # ``scrm/celery.py``), before the pages and the ingest are timed.
            startup_objects_freeze()
            if not args.skip_dashboard:
                result["dashboard"] = dashboard_measure(args, vendor, world)
                result["index_trial"] = indexes_try(args, vendor, world)
            if not args.skip_rebuild:
                if args.rebuild_conversations >= 0:
                    result["rebuild"] = rebuild_measure(args, total)
                elif "load" in result:
                    seconds = result["load"].steps_seconds["facts (facts_rebuild)"]
                    result["rebuild"] = Rebuild(
                        conversations=total,
                        of_total=total,
                        seconds=seconds,
                        per_second=round(total / seconds, 1) if seconds else 0.0,
                        extrapolated_seconds=seconds,
                        whole=True,
                        cleanup={},
                        facts_after=fact_counts(),
                    )
            if not args.skip_maintenance:
                result["maintenance"] = maintenance_measure(args, vendor)
                result["beside"] = beside_measure(args, vendor)
    except KeyboardInterrupt:
        print("Interrupted; the database was dropped (unless --keep).", file=sys.stderr)
        return 130
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(_jsonable(result), indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
