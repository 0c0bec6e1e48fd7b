"""Benchmarks of the ingest pipeline, run against a throwaway database.

Two phases on one demo channel:

* full pipeline: every post is new; ~20% come from contacts known before the run (a warm-up
  batch creates them) and about 30% are replies, as ``generate_posts`` produces them;
* duplicate storm: the very same batches again, which must store nothing.

With ``--routing`` the run first sets up what a support team routes with (``routing_setup.py``:
a business calendar, three SLA policies, ten rules), so both phases also evaluate the rules
and run the SLA clocks; ``--routing rules`` or ``--routing sla`` sets up only one of the two.
``routing_overhead.py`` compares runs with and without them.

For each phase it prints posts per second, the SQL queries of one representative batch, the
batch latencies, peak Python memory (tracemalloc) and the process's peak RSS, and which call
sites spend the database time. It reports figures only and never judges them.

Without DATABASE_URL the database is a SQLite file in a temporary folder; with DATABASE_URL
(PostgreSQL) it is Django's test database ``test_<name>``, dropped at the end. The developer's
own database and data folder are never opened. ``--schema-from`` copies a database migrated
before instead of migrating (most of a short run's time goes into migrating).

    python bench/run.py --posts 20000 --batch 500 [--routing [rules|sla]] [--json results.json]
"""

import argparse
import cProfile
import gc
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from channels_ingest.models import ChannelAccount
    from channels_ingest.types import InboundAuthor, InboundPost

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = REPO_ROOT / ".venv"
THIS_FILE = Path(__file__).resolve()

BRAND = "@acme"
FLAVOUR = "x"
START = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
SPACING = timedelta(seconds=3)
TOP_CALL_SITES = 6


# --- Environment and throwaway database --------------------------------------------------


def prepare_environment() -> Path:
    """Point the settings at a fresh data folder, before Django reads them.

    The folder holds the SQLite file (when DATABASE_URL is unset) and whatever else the settings
    create on first run (keys, broker and cache folders), so nothing real is read or written.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="scrm-bench-"))
    os.environ["SCRM_DATA_DIR"] = str(data_dir)
    os.environ["DEBUG"] = "false"  # no query log growing during the timed runs
    # Tasks the pipeline enqueues (a rule's acknowledgement) stay in this process: nothing is
    # consumed or sent, and no broker of the developer's is ever reached.
    os.environ["CELERY_BROKER_URL"] = "memory://localhost/"
    os.environ.pop("CELERY_BROKER_URL_FILE", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return data_dir


@contextmanager
def throwaway_database(data_dir: Path, schema_from: str | None = None) -> Iterator[str]:
    """Create and migrate a database that exists only for this run; yields its name.

    ``schema_from``: a database migrated before, copied instead of migrating (a SQLite file,
    or on PostgreSQL the name of a database on the same server, used as the template), for a
    series of runs that would otherwise spend most of their time migrating. It must hold
    every migration of this checkout, or the run stops."""
    from django.core.management import call_command
    from django.db import connection

    try:
        if not os.environ.get("DATABASE_URL"):
            name = Path(str(connection.settings_dict["NAME"])).resolve()
            if not name.is_relative_to(data_dir.resolve()):
                raise SystemExit(f"Refusing to benchmark on {name}: not in the temporary folder.")
            if schema_from:
                connection.close()
                sqlite_copy(schema_from, name)
                schema_check(schema_from)
            else:
                call_command("migrate", interactive=False, verbosity=0)
            yield str(name)
        elif schema_from and connection.vendor == "postgresql":
            with template_copy(schema_from) as test_name:
                schema_check(schema_from)
                yield test_name
        else:
            old_name = connection.settings_dict["NAME"]
            if connection.vendor == "sqlite" and not connection.settings_dict["TEST"].get("NAME"):
                # A file rather than Django's default in-memory test database.
                connection.settings_dict["TEST"]["NAME"] = str(data_dir / "test.sqlite3")
            test_name = connection.creation.create_test_db(
                verbosity=0, autoclobber=True, keepdb=False
            )
            try:
                yield test_name
            finally:
                connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)
    finally:
        connection.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def sqlite_copy(source: str, target: Path) -> None:
    """Copy a SQLite database through SQLite's backup API: what the source's write-ahead log
    holds is copied too, where copying the file alone would leave it out."""
    import sqlite3

    reader = sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True)
    writer = sqlite3.connect(target)
    try:
        reader.backup(writer)
    finally:
        writer.close()
        reader.close()


@contextmanager
def template_copy(template: str) -> Iterator[str]:
    """Django's test database (``test_<name>``), created on PostgreSQL as a copy of the
    database ``template``, and dropped at the end (also when creating it is cut short). The
    template may be neither the database the settings name nor that test database."""
    from django.db import connection
    from django.db.backends.base.creation import TEST_DATABASE_PREFIX

    quote = connection.ops.quote_name
    old_name = connection.settings_dict["NAME"]
    test_name = connection.settings_dict["TEST"].get("NAME") or f"{TEST_DATABASE_PREFIX}{old_name}"
    if template in (old_name, test_name):
        raise SystemExit(f"Refusing {template} as the template: it is the run's own database.")

    def drop() -> None:
        with connection._nodb_cursor() as cursor:
            force = " WITH (FORCE)" if cursor.connection.server_version >= 130000 else ""
            cursor.execute(f"DROP DATABASE IF EXISTS {quote(test_name)}{force}")

    try:
        drop()
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {quote(test_name)} TEMPLATE {quote(template)}")
        connection.close()
        connection.settings_dict["NAME"] = test_name
        yield test_name
    finally:
        connection.close()
        connection.settings_dict["NAME"] = old_name
        drop()


def schema_check(schema_from: str) -> None:
    """Stop unless the copied database holds every migration of this checkout."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        raise SystemExit(f"{schema_from} lacks migrations of this checkout: migrate it again.")


def database_description() -> dict[str, str]:
    import django
    from django.db import connection

    from bench.support import machine_description

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
        elif connection.vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
        else:
            cursor.execute("SELECT 'unknown'")
        server_version = str(cursor.fetchone()[0])
    driver = connection.Database  # type: ignore[attr-defined]  # set by each backend
    return {
        "vendor": connection.vendor,
        "server_version": server_version,
        "driver": f"{driver.__name__} {getattr(driver, '__version__', '')}".strip(),
        "django": django.get_version(),
        "python": platform.python_version(),
        "machine": machine_description(),
    }


# --- Workload ----------------------------------------------------------------------------


@dataclass
class Workload:
    posts: list["InboundPost"]
    warmup: list["InboundPost"]
    known_share: float  # share of posts whose author exists before the run
    reply_share: float
    dm_share: float
    distinct_authors: int


def build_workload(*, count: int, population: int, known_target: float, seed: int) -> Workload:
    """Posts from ``generate_posts``, plus one warm-up post for each of a random set of their
    authors, chosen so that about ``known_target`` of the posts come from known contacts."""
    from channels_ingest.connectors.demo import generate_posts

    rng = random.Random(seed)
    posts, _ = generate_posts(
        flavour=FLAVOUR,
        brand=BRAND,
        seq=0,
        recent=[],
        population=population,
        count=count,
        start=START,
        spacing=SPACING,
        rng=rng,
    )

    authors: dict[str, InboundAuthor] = {}
    posts_by_author: dict[str, int] = {}
    for post in posts:
        authors.setdefault(post.author.platform_user_id, post.author)
        posts_by_author[post.author.platform_user_id] = (
            posts_by_author.get(post.author.platform_user_id, 0) + 1
        )
    candidates = list(authors)
    rng.shuffle(candidates)
    known: list[str] = []
    covered = 0
    for user_id in candidates:
        if covered >= known_target * count:
            break
        known.append(user_id)
        covered += posts_by_author[user_id]

    return Workload(
        posts=posts,
        warmup=[_warmup_post(i, authors[user_id]) for i, user_id in enumerate(known)],
        known_share=covered / count if count else 0.0,
        reply_share=sum(1 for p in posts if p.in_reply_to_id) / count if count else 0.0,
        dm_share=sum(1 for p in posts if p.kind == "dm") / count if count else 0.0,
        distinct_authors=len(authors),
    )


def _warmup_post(index: int, author: "InboundAuthor") -> "InboundPost":
    from channels_ingest.types import InboundPost

    external_id = f"bench-warmup-{index}"
    created = START - timedelta(days=1) + SPACING * index
    body = f"{BRAND} hello, first time writing to you."
    return InboundPost(
        external_id=external_id,
        kind="mention",
        author=author,
        body=body,
        created_at=created,
        thread_id=external_id,
        language="en",
        raw={"id": external_id, "text": body, "author_id": author.platform_user_id},
    )


def batched(posts: Sequence["InboundPost"], size: int) -> list[Sequence["InboundPost"]]:
    return [posts[i : i + size] for i in range(0, len(posts), size)]


# --- Measurement -------------------------------------------------------------------------


@dataclass
class CallSite:
    label: str
    transaction_control: bool
    queries: int = 0
    seconds: float = 0.0


@dataclass
class QueryProfile:
    """Database time per call site in the project's code, measured around every execute.

    Cheap next to a batch (one stack walk per query), so it stays on during the timed runs.
    """

    sites: dict[str, CallSite] = field(default_factory=dict)

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            label = f"{_caller(sys._getframe(1))}  {_statement(sql)}"
            site = self.sites.get(label) or self.sites.setdefault(
                label, CallSite(label, _is_transaction_control(sql))
            )
            site.queries += 1
            site.seconds += elapsed

    def top(self, n: int) -> list[CallSite]:
        return sorted(self.sites.values(), key=lambda s: s.seconds, reverse=True)[:n]

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.sites.values())


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START")


def _is_transaction_control(sql: str) -> bool:
    return sql.lstrip().upper().startswith(_TRANSACTION_CONTROL)


_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"(\w+)"', re.IGNORECASE)


def _statement(sql: str) -> str:
    verb = sql.split(None, 1)[0].upper() if sql.strip() else "?"
    table = _TABLE.search(sql)
    return f"{verb} {table.group(1)}" if table else verb


def _caller(frame: FrameType | None) -> str:
    """The innermost frame in the project's own code (not Django, not this harness)."""
    while frame is not None:
        where = _project_path(frame.f_code.co_filename)
        if where is not None:
            return f"{where}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return "(outside the project)"


@cache
def _project_path(filename: str) -> str | None:
    """The file's path in the project, None outside it (Django, the harness). Asked for every
    frame of every query's stack: once per file, so the harness's own cost does not grow
    with the stack walks of a run that sends more queries."""
    path = Path(filename)
    if path.is_relative_to(REPO_ROOT) and not path.is_relative_to(VENV_DIR) and path != THIS_FILE:
        return str(path.relative_to(REPO_ROOT))
    return None


def peak_rss_mib() -> float:
    """The process's peak resident set size: KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class PhaseResult:
    name: str
    posts: int
    batches: int
    seconds: float
    cpu_seconds: float  # this process's CPU time: all of it on SQLite, PostgreSQL's excluded
    # The PostgreSQL process serving the connection, when on this machine (bench/support.py).
    server_cpu_seconds: float | None
    posts_per_second: float
    batch_ms_median: float
    batch_ms_p95: float
    batch_ms_max: float
    sample_batch: int
    sample_batch_posts: int
    sample_batch_queries: int  # SQL statements, transaction control left out
    sample_batch_transaction_statements: int  # BEGIN, COMMIT, SAVEPOINT... as Django logs them
    queries_per_batch_mean: float  # over all batches, transaction control left out
    stored: int
    new_messages: int
    new_conversations: int
    new_contacts: int
    tracemalloc_peak_mib: float | None
    maxrss_mib: float
    db_seconds: float
    top_call_sites: list[dict[str, Any]]
    # With --sections: the pipeline's parts, their calls and wall time (bench/sections.py).
    sections: list[dict[str, Any]] | None = None


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _row_counts() -> tuple[int, int, int]:
    from contacts.models import Contact
    from conversations.models import Conversation, Message

    return Message.objects.count(), Conversation.objects.count(), Contact.objects.count()


def run_phase(
    name: str,
    channel: "ChannelAccount",
    batches: list[Sequence["InboundPost"]],
    *,
    trace_memory: bool,
    profile_to: Path | None = None,
    sections: bool = False,
) -> PhaseResult:
    """Ingest the batches in order, one ``ingest`` call each, as a poller would; with
    ``profile_to``, under cProfile, the statistics written there; with ``sections``, the wall
    time of the pipeline's parts (``bench/sections.py``)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench.sections import Timing, sections_rows, sections_timed
    from bench.support import server_process, server_process_same
    from channels_ingest.pipeline import ingest

    messages_before, conversations_before, contacts_before = _row_counts()
    sample = len(batches) // 2
    sample_queries: list[str] = []
    stored = 0
    durations: list[float] = []
    profile = QueryProfile()
    position = 0

    server = server_process(connection)
    gc.collect()
    if trace_memory:
        tracemalloc.reset_peak()
    profiler = cProfile.Profile() if profile_to else None
    timed: AbstractContextManager[list[Timing]] = sections_timed() if sections else nullcontext([])
    with connection.execute_wrapper(profile), timed as timings:
        if profiler:
            profiler.enable()
        server_cpu_started = server.cpu_seconds() if server else None
        started = time.perf_counter()
        cpu_started = time.process_time()
        for index, batch in enumerate(batches):
            position += len(batch)
            cursor = {"seq": position}
            batch_started = time.perf_counter()
            if index == sample:
                with CaptureQueriesContext(connection) as captured:
                    result = ingest(channel=channel, posts=batch, cursor=cursor)
                sample_queries = [q["sql"] for q in captured.captured_queries]
            else:
                result = ingest(channel=channel, posts=batch, cursor=cursor)
            durations.append(time.perf_counter() - batch_started)
            stored += result.stored
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        server_cpu_ended = server.cpu_seconds() if server else None
        if profiler and profile_to:
            profiler.disable()
            profiler.dump_stats(profile_to)
    traced_peak = tracemalloc.get_traced_memory()[1] / (1024 * 1024) if trace_memory else None

    server_cpu_seconds = (
        server_cpu_ended - server_cpu_started
        if server
        and server_cpu_started is not None
        and server_cpu_ended is not None
        and server_process_same(connection, server)
        else None
    )
    messages_after, conversations_after, contacts_after = _row_counts()
    total_queries = sum(
        site.queries for site in profile.sites.values() if not site.transaction_control
    )
    sample_tx = sum(1 for sql in sample_queries if _is_transaction_control(sql))
    db_seconds = profile.total_seconds
    return PhaseResult(
        name=name,
        posts=position,
        batches=len(batches),
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        server_cpu_seconds=server_cpu_seconds,
        posts_per_second=position / seconds if seconds else 0.0,
        batch_ms_median=statistics.median(durations) * 1000,
        batch_ms_p95=_percentile(durations, 0.95) * 1000,
        batch_ms_max=max(durations) * 1000,
        sample_batch=sample,
        sample_batch_posts=len(batches[sample]),
        sample_batch_queries=len(sample_queries) - sample_tx,
        sample_batch_transaction_statements=sample_tx,
        queries_per_batch_mean=total_queries / len(batches),
        stored=stored,
        new_messages=messages_after - messages_before,
        new_conversations=conversations_after - conversations_before,
        new_contacts=contacts_after - contacts_before,
        tracemalloc_peak_mib=traced_peak,
        maxrss_mib=peak_rss_mib(),
        db_seconds=db_seconds,
        sections=sections_rows(timings, seconds) if sections else None,
        top_call_sites=[
            {
                "call_site": site.label,
                "queries": site.queries,
                "seconds": site.seconds,
                "share_of_db_time": site.seconds / db_seconds if db_seconds else 0.0,
            }
            for site in profile.top(TOP_CALL_SITES)
        ],
    )


def worker_started() -> None:
    """Do once what a Celery worker does when it starts, before it ingests anything: import
    the task modules, finalize the app, load its result backend and open a producer. The
    pipeline runs in workers; without this the first batch that publishes a task (a rule's
    acknowledgement) would pay for all of it, tens of milliseconds a worker pays once. Last,
    what the worker's ``worker_process_init`` handler does: build the app's task sender and
    put what the process holds out of the garbage collector's reach."""
    from scrm.celery import app, worker_process_started

    app.loader.import_default_modules()
    app.finalize(auto=True)
    app.backend  # noqa: B018 (loaded on first use)
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection()
    worker_process_started()


def _count_published_tasks() -> Counter[str]:
    """Tasks published from now on, by name (acknowledgements queue a send each)."""
    from celery.signals import before_task_publish

    published: Counter[str] = Counter()

    def count(sender: str | None = None, **kwargs: Any) -> None:
        published[sender or "?"] += 1

    before_task_publish.connect(count, weak=False)
    return published


def routing_outcome(published: Counter[str]) -> dict[str, Any]:
    """What the rules and SLA policies did in the phases, the warm-up left out (read after
    them, untimed). Rules and clocks take the posts' times, which start at ``START``."""
    from conversations.models import (
        Conversation,
        ConversationEvent,
        DeliveryStatus,
        Direction,
        EventKind,
        Message,
        RoutingRule,
    )

    names = dict(RoutingRule.objects.values_list("pk", "name"))
    by_rule: Counter[int] = Counter()
    routed: set[int] = set()
    applied = ConversationEvent.objects.filter(
        kind__in=(EventKind.RULE_APPLIED, EventKind.CREATED), created_at__gte=START
    )
    for conversation_id, data in applied.values_list("conversation_id", "data"):
        # One event per conversation and batch lists the rules that did something: the
        # conversation's creation when they applied as it was created.
        for entry in data.get("rules", ()):
            by_rule[entry["rule"]] += 1
            routed.add(conversation_id)
    policies = Counter(
        Conversation.objects.filter(created_at__gte=START)
        .values_list("sla_policy__name", flat=True)
        .iterator()
    )
    return {
        "rule_applications": sum(by_rule.values()),
        "routed_conversations": len(routed),
        "by_rule": {name: by_rule[pk] for pk, name in names.items()},
        "sla_policies": {str(name or "none"): n for name, n in policies.most_common()},
        "acknowledgements": Message.objects.filter(
            direction=Direction.OUT, delivery_status=DeliveryStatus.QUEUED
        ).count(),
        "tasks_published": sum(published.values()),
    }


# --- Output ------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _routing_line(routing: dict[str, Any]) -> str:
    if not routing["enabled"]:
        return "Routing  : off (no rules, no SLA policies, no business calendar)"
    return (
        f"Routing  : on, {routing['setup']}\n"
        f"           actions not exercised: {routing['left_out']}"
    )


def _routing_outcome(routing: dict[str, Any]) -> list[str]:
    if not routing["enabled"]:
        return []
    outcome = routing["outcome"]
    lines = [
        "",
        f"routing in the phases: {outcome['rule_applications']:,} rule applications on "
        f"{outcome['routed_conversations']:,} conversations; SLA policy per new conversation: "
        + ", ".join(f"{name} {n:,}" for name, n in outcome["sla_policies"].items()),
        f"  acknowledgements: {outcome['acknowledgements']:,} queued (outbound messages, "
        "counted in 'new messages' above), "
        f"{outcome['tasks_published']:,} send tasks published to the in-memory broker, "
        "none consumed or sent",
    ]
    if outcome["by_rule"]:
        lines.append(
            _table(
                ["  rule (position order)", "applied"],
                [["  " + name, f"{n:,}"] for name, n in outcome["by_rule"].items()],
            )
        )
    return lines


def report(meta: dict[str, Any], phases: list[PhaseResult]) -> str:
    db = meta["database"]
    work = meta["workload"]
    lines = [
        f"Database : {db['vendor']} {db['server_version']} via {db['driver']}, "
        f"throwaway '{db['name']}' (removed at exit)",
        f"Runtime  : Python {db['python']}, Django {db['django']}, {platform.platform()}",
        f"Machine  : {db['machine']}",
        f"Workload : {work['posts']} posts in batches of {work['batch']}, population "
        f"{work['population']} ({work['distinct_authors']} distinct authors), seed {work['seed']}",
        f"           {work['known_share']:.1%} from contacts known beforehand "
        f"({work['warmup_posts']} warm-up posts), {work['reply_share']:.1%} replies, "
        f"{work['dm_share']:.1%} DMs",
        _routing_line(meta["routing"]),
        "",
    ]
    headers = [
        "phase",
        "posts/s",
        "total s",
        "batch p50 ms",
        "p95 ms",
        "max ms",
        "queries/batch",
        "mean",
        "new messages",
        "py peak MiB",
        "max RSS MiB",
    ]
    rows = [
        [
            p.name,
            f"{p.posts_per_second:,.0f}",
            f"{p.seconds:.2f}",
            f"{p.batch_ms_median:.1f}",
            f"{p.batch_ms_p95:.1f}",
            f"{p.batch_ms_max:.1f}",
            f"{p.sample_batch_queries} (+{p.sample_batch_transaction_statements} tx)",
            f"{p.queries_per_batch_mean:.1f}",
            f"{p.new_messages:,}",
            "-" if p.tracemalloc_peak_mib is None else f"{p.tracemalloc_peak_mib:.1f}",
            f"{p.maxrss_mib:.1f}",
        ]
        for p in phases
    ]
    lines.append(_table(headers, rows))
    lines.append(
        "queries/batch: SQL statements of the middle batch, captured, plus the transaction "
        "statements Django logs; mean: over all batches, without those.\n"
        "py peak: tracemalloc peak during the phase; max RSS: ru_maxrss of the process so far."
    )
    if work["tracemalloc"]:
        lines.append(
            "Timed with tracemalloc on, which slows allocation-heavy Python code; "
            "run without --tracemalloc for undistorted posts/s."
        )
    for p in phases:
        lines.append("")
        lines.append(
            f"{p.name}: {p.stored:,} stored, {p.new_messages:,} messages / "
            f"{p.new_conversations:,} conversations / {p.new_contacts:,} contacts created; "
            f"sample batch #{p.sample_batch} ({p.sample_batch_posts} posts) "
            f"ran {p.sample_batch_queries} queries (+{p.sample_batch_transaction_statements} tx)"
        )
        server_cpu = (
            f", {p.server_cpu_seconds:.2f} s of the database server's"
            if p.server_cpu_seconds is not None
            else ""
        )
        lines.append(
            f"  {p.seconds:.2f} s in all ({p.cpu_seconds:.2f} s CPU of this process{server_cpu}): "
            f"{p.db_seconds:.2f} s executing SQL, "
            f"{p.seconds - p.db_seconds:.2f} s in Python (ORM, classification); "
            "call sites by SQL execution time:"
        )
        lines.append(
            _table(
                ["  call site and statement", "queries", "total ms", "share"],
                [
                    [
                        "  " + site["call_site"],
                        str(site["queries"]),
                        f"{site['seconds'] * 1000:.0f}",
                        f"{site['share_of_db_time']:.0%}",
                    ]
                    for site in p.top_call_sites
                ],
            )
        )
        if p.sections:
            lines.append(
                "  parts of the pipeline by wall time (inclusive: a part holds those it calls; "
                "* per post, its timer's cost included):"
            )
            lines.append(
                _table(
                    ["  part", "calls", "total ms", "share"],
                    [
                        [
                            f"  {part['label']}{' *' if part['per_post'] else ''}",
                            f"{part['calls']:,}",
                            f"{part['seconds'] * 1000:.1f}",
                            f"{part['share_of_phase']:.1%}",
                        ]
                        for part in p.sections
                    ],
                )
            )
    lines += _routing_outcome(meta["routing"])
    return "\n".join(lines)


# --- Entry point -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the ingest pipeline on a throwaway database."
    )
    parser.add_argument("--posts", type=int, default=20000, help="posts to ingest (20000)")
    parser.add_argument("--batch", type=int, default=500, help="posts per ingest call (500)")
    parser.add_argument(
        "--population",
        type=int,
        default=None,
        help="distinct customers the posts are drawn from (default: as many as posts)",
    )
    parser.add_argument(
        "--known-share",
        type=float,
        default=0.2,
        help="share of posts from contacts that exist before the run (0.2)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for the posts (1)")
    parser.add_argument(
        "--routing",
        nargs="?",
        const="all",
        choices=("all", "rules", "sla"),
        help="set up a business calendar, SLA policies and routing rules first "
        "(bench/routing_setup.py), so that the phases route and time SLAs; 'rules' or 'sla' "
        "sets up only the rules or only the SLA policies",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures here")
    parser.add_argument(
        "--schema-from",
        metavar="DATABASE",
        help="start from a copy of this migrated database instead of migrating: a SQLite file "
        "(without DATABASE_URL), or the name of a PostgreSQL database on DATABASE_URL's server; "
        "routing_overhead.py migrates one for all its runs",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="write cProfile statistics of the full pipeline phase here (slows it)",
    )
    parser.add_argument(
        "--sections",
        action="store_true",
        help="time the pipeline's parts in the full pipeline phase (bench/sections.py)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also record peak Python allocations; slows the pipeline about five times",
    )
    args = parser.parse_args(argv)
    if args.posts < 1 or args.batch < 1:
        parser.error("--posts and --batch must be positive")
    if not 0.0 <= args.known_share < 1.0:
        parser.error("--known-share must be in [0, 1)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    population = args.population or max(args.posts, 100)
    data_dir = prepare_environment()
    # A plain `kill` unwinds like Ctrl-C does, so the throwaway database is still removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    import django

    django.setup()

    from bench.routing_setup import LEFT_OUT, routing_setup, vip_contacts_mark
    from channels_ingest.models import ChannelAccount
    from channels_ingest.pipeline import ingest

    with throwaway_database(data_dir, args.schema_from) as db_name:
        description = database_description()
        workload = build_workload(
            count=args.posts, population=population, known_target=args.known_share, seed=args.seed
        )
        channel = ChannelAccount.objects.create(
            platform="demo", name="Benchmark", handle=BRAND, settings={"flavour": FLAVOUR}
        )
        setup = routing_setup(args.routing) if args.routing else None
        for batch in batched(workload.warmup, args.batch):
            ingest(channel=channel, posts=batch)
        if setup is not None:
            setup = replace(setup, vip_contacts=vip_contacts_mark())
        worker_started()
        published = _count_published_tasks()

        batches = batched(workload.posts, args.batch)
        trace_memory = args.tracemalloc
        if trace_memory:
            tracemalloc.start()
        try:
            phases = [
                run_phase(
                    "full pipeline",
                    channel,
                    batches,
                    trace_memory=trace_memory,
                    profile_to=args.profile,
                    sections=args.sections,
                ),
                run_phase("duplicate storm", channel, batches, trace_memory=trace_memory),
            ]
        finally:
            if trace_memory:
                tracemalloc.stop()
        routing: dict[str, Any] = {"enabled": setup is not None, "parts": args.routing}
        if setup is not None:
            routing.update(
                setup=setup.describe(),
                rules=setup.rules,
                policies=setup.policies,
                vip_contacts=setup.vip_contacts,
                left_out=LEFT_OUT,
                outcome=routing_outcome(published),
            )

    meta = {
        "database": {**description, "name": db_name},
        "workload": {
            "posts": args.posts,
            "batch": args.batch,
            "population": population,
            "seed": args.seed,
            "distinct_authors": workload.distinct_authors,
            "known_share": workload.known_share,
            "warmup_posts": len(workload.warmup),
            "reply_share": workload.reply_share,
            "dm_share": workload.dm_share,
            "tracemalloc": trace_memory,
        },
        "routing": routing,
    }
    print(report(meta, phases))

    storm = phases[1]
    duplicates_ok = storm.new_messages == 0 and storm.stored == 0
    print()
    print(
        "duplicate storm check: "
        + (
            "OK, no new Message rows"
            if duplicates_ok
            else f"FAILED, {storm.new_messages} new Message rows ({storm.stored} reported stored)"
        )
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {**meta, "phases": [asdict(p) for p in phases], "duplicates_ok": duplicates_ok},
                indent=2,
            )
            + "\n"
        )
        print(f"figures written to {args.json}")
    return 0 if duplicates_ok else 1


if __name__ == "__main__":
    sys.exit(main())
