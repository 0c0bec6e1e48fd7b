"""Webhook-to-inbox latency: from a Facebook Page webhook POST to its conversation in the inbox.

Everything runs for real, on loopback, in a throwaway environment: a web server (gunicorn by
default, or ``runserver``) and one Celery worker are started as subprocesses, a Facebook channel
is added, and N signed feed-comment webhooks are sent at a steady rate. For each one the script
records when the POST left, when the 200 came back, and when the comment was first seen stored
with its conversation on the first page of the inbox (``conversations.selectors.inbox_page``,
view "all", as an admin), polled from this process every ``--poll-ms``.

It prints the HTTP status counts, the response time of the webhook request, the latency from
sending to visible (p50/p95/max) and a breakdown into web, broker + worker, and observation,
from the ``WebhookDelivery`` rows' ``received_at``/``processed_at``. Figures only: the exit
status is 1 when a webhook was refused or never became visible, never because of a timing.

The environment: a temporary ``SCRM_DATA_DIR``; without ``DATABASE_URL`` a SQLite file there,
with it (PostgreSQL) a database ``scrm_latency_<pid>`` on the same server, created here and
dropped at the end. With ``REDIS_URL`` the broker (and cache) is Redis database 15
(``--redis-db``) of that server, which must be empty and is emptied at the end; without it
kombu's filesystem transport in the temporary folder. ``CELERY_BROKER_URL`` from the caller's
environment is ignored. Only loopback hosts are accepted. The developer's own database, broker
and data folder are never opened.

    python bench/webhook_latency.py --requests 200 --rate 10 [--json latency.json]
"""

import argparse
import hashlib
import hmac
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

# Run as a file (python bench/x.py), the repository root is not on the path yet.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import (
    RunOverdue,
    loopback,
    overdue,
    postgres_target,
    restore_environ,
    shield_teardown,
    terminated,
    throwaway_postgres,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

PAGE_ID = "1234567890"
CHANNEL_NAME = "Bench"
ADMIN_USERNAME = "latency-admin"
REDIS_SCHEMES = {"redis", "rediss"}
# Settings read from the environment that could point a process at real data: each is set
# here or removed, with its ``<NAME>_FILE`` variant (the settings read those too).
CONTROLLED_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SCRM_DATA_DIR",
    "SECRET_KEY",
    "SCRM_ENCRYPTION_KEYS",
    "DJANGO_ENV",
    "DEBUG",
    "ALLOWED_HOSTS",
    "LOG_LEVEL",
)
INBOX_PAGE_SIZE = 50  # the inbox's first page, as SCRM_INBOX_PAGE_SIZE defaults
MAX_AUTHORS = 40  # so every conversation of the run fits on that first page
MIGRATE_TIMEOUT = 600.0
HTTP_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0
SENDER_THREADS = 16
TARGET_P95_MS = 2000.0

COMMENT_TEXTS = (
    "Hi, my order {n} has not arrived yet. Can you check?",
    "Why was I charged twice for order {n}?",
    "Love the new collection! Is size M back in stock?",
    "Still waiting for an answer about my refund ({n}).",
    "The app keeps logging me out, please help.",
    "Do you ship to Belgium? Asking for order {n}.",
)


# --- Throwaway environment ---------------------------------------------------------------


@contextmanager
def throwaway_redis(redis_url: str, db: int) -> Iterator[tuple[str, str]]:
    """Redis database ``db`` of the same server, which must be empty; emptied at the end.
    Yields its URL and the server's version."""
    import redis

    parts = urlsplit(redis_url)
    if parts.scheme not in REDIS_SCHEMES:
        raise SystemExit(f"REDIS_URL must be a redis:// URL ({parts.scheme}:// given).")
    if not loopback(parts.hostname):
        raise SystemExit(f"Refusing a Redis server on {parts.hostname}: loopback only.")
    url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = client.dbsize()
        if keys:
            raise SystemExit(
                f"Redis database {db} holds {keys} keys; this benchmark needs it empty (it "
                f"empties it at the end). Choose another with --redis-db, or clear it: "
                f"redis-cli -n {db} FLUSHDB"
            )
        version = str(client.info("server").get("redis_version", "?"))
        try:
            yield url, version
        finally:
            client.flushdb()
    finally:
        client.close()


@dataclass
class Environment:
    data_dir: Path
    env: dict[str, str]  # the children's environment
    database: str  # for the report
    broker: str


def _controlled_env(base: dict[str, str], data_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in base.items()
        if key not in CONTROLLED_VARIABLES
        and not (key.endswith("_FILE") and key[: -len("_FILE")] in CONTROLLED_VARIABLES)
    }
    env.update(
        {
            "SCRM_DATA_DIR": str(data_dir),
            "DJANGO_SETTINGS_MODULE": "scrm.settings",
            "DJANGO_ENV": "development",
            "DEBUG": "false",  # no query log growing in the server and worker
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextmanager
def throwaway_environment(args: argparse.Namespace) -> Iterator[Environment]:
    """A data folder, database and broker that exist only for this run.

    This process's own environment is switched to them too, before Django reads its settings.
    """
    caller = dict(os.environ)
    data_dir = Path(tempfile.mkdtemp(prefix="scrm-latency-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        env = _controlled_env(caller, data_dir)

        database_url = caller.get("DATABASE_URL", "")
        if database_url:
            target = postgres_target(database_url, prefix="scrm_latency")
            version = stack.enter_context(throwaway_postgres(target))
            env["DATABASE_URL"] = target.url
            database = f"PostgreSQL {version}, throwaway database '{target.name}'"
        else:
            database = f"SQLite, throwaway file {data_dir / 'scrm.sqlite3'}"

        redis_url = caller.get("REDIS_URL", "")
        if redis_url:
            url, version = stack.enter_context(throwaway_redis(redis_url, args.redis_db))
            env["REDIS_URL"] = url
            broker = f"Redis {version}, database {args.redis_db} (emptied at exit)"
        else:
            broker = f"kombu filesystem transport in {data_dir / 'broker'}"

        os.environ.clear()
        os.environ.update(env)
        stack.callback(restore_environ, caller)
        # Runs first on the way out: the removals above are not to be cut short.
        stack.callback(shield_teardown)
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))

        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=MIGRATE_TIMEOUT,
            check=False,
        )
        if migrate.returncode != 0:
            raise SystemExit(f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
        yield Environment(data_dir=data_dir, env=env, database=database, broker=broker)


# --- Subprocesses ------------------------------------------------------------------------


class Child:
    """A server process in its own session, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this script, which stops them in order
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL for the whole process group."""
        try:
            if self.alive():
                self.process.terminate()
                with suppress(subprocess.TimeoutExpired):
                    self.process.wait(STOP_TIMEOUT)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # leftovers of its group, if any
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        finally:
            self._log.close()

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def problems(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if PROBLEM_LINE.search(line)]


PROBLEM_LINE = re.compile(r"\b(ERROR|CRITICAL|Traceback)\b|\[ERROR\]")


class ChildFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def web_command(server: str, port: int, web_workers: int) -> tuple[list[str], str]:
    if server == "runserver":
        argv = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        return argv, "Django runserver (threaded, --noreload)"
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "scrm.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(web_workers),
        "--timeout",
        "30",
    ]
    return argv, f"gunicorn, {web_workers} sync workers"


def worker_command() -> list[str]:
    from django.conf import settings  # read once this process's environment is switched over

    return [
        sys.executable,
        "-m",
        "celery",
        "--app",
        "scrm",
        "worker",
        "--queues",
        ",".join(settings.SCRM_WORKER_QUEUES),
        "--concurrency",
        "1",
        "--loglevel",
        "WARNING",
        "--hostname",
        f"latency-{os.getpid()}@%h",
    ]


# Only loopback is ever requested; proxies from the environment are not consulted.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_healthy(base_url: str, web: Child, worker: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for child in (web, worker):
            if not child.alive():
                raise ChildFailed(f"{child.name} exited during start-up")
        try:
            with HTTP.open(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise ChildFailed(f"/healthz did not answer 200 within {timeout:.0f} s ({last})")


# --- Workload ----------------------------------------------------------------------------


@dataclass
class Planned:
    comment_id: str
    post_id: str
    parent_id: str
    author_id: str
    author_name: str
    message: str


def build_plan(
    count: int,
    *,
    authors: int,
    posts: int,
    reply_share: float,
    rng: random.Random,
    prefix: str,
) -> list[Planned]:
    """Comments from ``authors`` people on ``posts`` Page posts; some answer an earlier comment
    on the same post."""
    plan: list[Planned] = []
    earlier: dict[str, list[str]] = {}
    for index in range(count):
        author = rng.randrange(authors)
        post_id = f"{PAGE_ID}_{prefix}{rng.randrange(posts) + 1}"
        comment_id = f"{post_id}_{prefix}{index + 1:06d}"
        previous = earlier.setdefault(post_id, [])
        parent_id = rng.choice(previous) if previous and rng.random() < reply_share else post_id
        previous.append(comment_id)
        plan.append(
            Planned(
                comment_id=comment_id,
                post_id=post_id,
                parent_id=parent_id,
                author_id=f"{prefix}7{author + 1:05d}",
                author_name=f"Customer {prefix}{author + 1}",
                message=rng.choice(COMMENT_TEXTS).format(n=rng.randrange(10000, 99999)),
            )
        )
    return plan


def webhook_body(item: Planned) -> bytes:
    now = time.time()
    payload = {
        "object": "page",
        "entry": [
            {
                "id": PAGE_ID,
                "time": int(now * 1000),
                "changes": [
                    {
                        "field": "feed",
                        "value": {
                            "item": "comment",
                            "verb": "add",
                            "post_id": item.post_id,
                            "comment_id": item.comment_id,
                            "parent_id": item.parent_id,
                            "from": {"id": item.author_id, "name": item.author_name},
                            "message": item.message,
                            "created_time": int(now),
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


# --- Sending and watching ----------------------------------------------------------------


@dataclass
class Sample:
    index: int
    comment_id: str
    sent_at: float | None = None  # perf_counter just before the request
    sent_wall: float | None = None  # time.time() at the same moment
    answered_at: float | None = None
    status: str = ""  # "200", "403", "error URLError"...
    seen_at: float | None = None  # perf_counter of the poll that first found it visible
    seen_wall: float | None = None
    timed_out: bool = False
    received_wall: float | None = None  # WebhookDelivery.received_at (web server)
    processed_wall: float | None = None  # WebhookDelivery.processed_at (worker)

    @property
    def accepted(self) -> bool:
        return self.status == "200"

    @property
    def waiting(self) -> bool:
        """Sent, not yet seen, and not known to have been refused."""
        return (
            self.sent_at is not None
            and self.seen_at is None
            and not self.timed_out
            and (self.status in ("", "200"))
        )


def _send_one(
    url: str, app_secret: str, item: Planned, sample: Sample, lock: threading.Lock
) -> None:
    body = webhook_body(item)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(app_secret, body),
        },
    )
    with lock:
        sample.sent_wall = time.time()
        sample.sent_at = time.perf_counter()
    try:
        with HTTP.open(request, timeout=HTTP_TIMEOUT) as response:
            response.read()
            status = str(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        status = str(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        status = f"error {type(exc).__name__}"
    with lock:
        sample.answered_at = time.perf_counter()
        sample.status = status


def send_paced(
    url: str,
    app_secret: str,
    plan: Sequence[Planned],
    samples: Sequence[Sample],
    rate: float,
    lock: threading.Lock,
    stop: threading.Event,
) -> None:
    """Start request i at i / rate seconds, each on a pool thread, so a slow answer does not
    delay the next one."""
    with ThreadPoolExecutor(max_workers=SENDER_THREADS, thread_name_prefix="webhook") as pool:
        start = time.perf_counter()
        for index, (item, sample) in enumerate(zip(plan, samples, strict=True)):
            delay = start + index / rate - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                break
            if stop.is_set():
                break
            pool.submit(_send_one, url, app_secret, item, sample, lock)


def watch(
    *,
    channel_id: int,
    admin: Any,
    samples: Sequence[Sample],
    lock: threading.Lock,
    sending: threading.Thread,
    children: Sequence[Child],
    poll_seconds: float,
    timeout: float,
) -> None:
    """Until every sent webhook is visible or given up on: every ``poll_seconds``, look for the
    outstanding comments among the stored messages, and for their conversations on the first
    page of the inbox. A hit is timed at the start of the poll that found it."""
    from conversations.models import Message
    from conversations.selectors import InboxFilters, inbox_page

    filters = InboxFilters(view="all", channel=channel_id)
    while True:
        tick = time.perf_counter()
        for child in children:
            if not child.alive():
                raise ChildFailed(f"{child.name} exited during the run")
        with lock:
            outstanding = {s.comment_id: s for s in samples if s.waiting}
            for sample in outstanding.values():
                if sample.sent_at is not None and tick - sample.sent_at > timeout:
                    sample.timed_out = True
            outstanding = {k: s for k, s in outstanding.items() if not s.timed_out}
        if not outstanding:
            with lock:
                in_flight = any(s.sent_at is not None and not s.status for s in samples)
            if not sending.is_alive() and not in_flight:
                return
        else:
            observed_at, observed_wall = time.perf_counter(), time.time()
            stored = dict(
                Message.objects.filter(
                    channel_id=channel_id, external_id__in=list(outstanding)
                ).values_list("external_id", "conversation_id")
            )
            if stored:
                page = inbox_page(user=admin, filters=filters, size=INBOX_PAGE_SIZE)
                visible = {row["pk"] for row in page.rows}
                with lock:
                    for external_id, conversation_id in stored.items():
                        if external_id is not None and conversation_id in visible:
                            sample = outstanding[external_id]
                            sample.seen_at, sample.seen_wall = observed_at, observed_wall
        time.sleep(max(0.0, poll_seconds - (time.perf_counter() - tick)))


def run_batch(
    *,
    plan: Sequence[Planned],
    url: str,
    app_secret: str,
    rate: float,
    channel_id: int,
    admin: Any,
    children: Sequence[Child],
    poll_seconds: float,
    timeout: float,
) -> list[Sample]:
    samples = [Sample(index=i, comment_id=item.comment_id) for i, item in enumerate(plan)]
    lock = threading.Lock()
    stop = threading.Event()
    sender = threading.Thread(
        target=send_paced,
        args=(url, app_secret, plan, samples, rate, lock, stop),
        name="sender",
        daemon=True,
    )
    sender.start()
    try:
        watch(
            channel_id=channel_id,
            admin=admin,
            samples=samples,
            lock=lock,
            sending=sender,
            children=children,
            poll_seconds=poll_seconds,
            timeout=timeout,
        )
    finally:
        stop.set()
        sender.join(HTTP_TIMEOUT + 5)
    return samples


def attach_deliveries(channel_id: int, samples: Sequence[Sample]) -> Counter[str]:
    """Server-side times from each delivery row, matched by the comment id in its body;
    returns the count of deliveries by status."""
    from channels_ingest.models import WebhookDelivery

    by_comment = {s.comment_id: s for s in samples}
    statuses: Counter[str] = Counter()
    for body, received_at, processed_at, status in WebhookDelivery.objects.filter(
        channel_id=channel_id
    ).values_list("body", "received_at", "processed_at", "status"):
        try:
            value = json.loads(body)["entry"][0]["changes"][0]["value"]
            sample = by_comment.get(str(value["comment_id"]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        if sample is None:
            continue
        statuses[status] += 1
        sample.received_wall = _timestamp(received_at)
        sample.processed_wall = _timestamp(processed_at)
    return statuses


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


# --- Figures -----------------------------------------------------------------------------


@dataclass
class Spread:
    """Percentiles in ms. Samples given up on (``missing``) rank above every measured one, so a
    percentile that falls among them shows as "more than the time limit" rather than being
    computed from the lucky ones alone."""

    count: int  # measured
    missing: int
    p50_ms: float | None  # None: the rank falls among the missing
    p95_ms: float | None
    max_ms: float | None
    mean_ms: float | None  # of the measured ones
    limit_ms: float | None

    @classmethod
    def of(
        cls, seconds: Sequence[float], *, missing: int = 0, limit: float | None = None
    ) -> "Spread":
        ms = sorted(value * 1000 for value in seconds)
        total = len(ms) + missing

        def rank(share: float) -> float | None:
            if not total:
                return None
            index = min(total - 1, round(share * (total - 1)))
            return ms[index] if index < len(ms) else None

        return cls(
            count=len(ms),
            missing=missing,
            p50_ms=rank(0.50),
            p95_ms=rank(0.95),
            max_ms=rank(1.0),
            mean_ms=statistics.fmean(ms) if ms else None,
            limit_ms=limit * 1000 if limit is not None else None,
        )

    def text(self) -> str:
        if not self.count and not self.missing:
            return "no data"

        def shown(value: float | None) -> str:
            if value is not None:
                return f"{value:8.1f} ms"
            return f"> {self.limit_ms or 0:.0f} ms".rjust(11)

        mean = f"mean {self.mean_ms:.1f} of n={self.count}" if self.count else "none measured"
        never = f", {self.missing} never arrived" if self.missing else ""
        return (
            f"p50 {shown(self.p50_ms)}   p95 {shown(self.p95_ms)}   max {shown(self.max_ms)}"
            f"   ({mean}{never})"
        )


@dataclass
class Figures:
    sent: int
    status_counts: dict[str, int]
    visible: int
    timed_out: int
    refused: int
    send_seconds: float
    achieved_rate: float
    response: Spread
    latency: Spread  # request sent -> visible in the inbox
    after_response: Spread  # 200 received -> visible
    web_stage: Spread  # request sent -> delivery row stored (received_at)
    queue_and_worker_stage: Spread  # received_at -> processed_at
    observe_stage: Spread  # processed_at -> seen by the watcher (commit + polling)
    delivery_statuses: dict[str, int] = field(default_factory=dict)


def figures(samples: Sequence[Sample], delivery_statuses: Counter[str], timeout: float) -> Figures:
    sent = [s for s in samples if s.sent_at is not None]
    statuses = Counter(s.status or "no answer" for s in sent)
    seen = [s for s in sent if s.accepted and s.seen_at is not None]
    lost = sum(1 for s in sent if s.timed_out)
    starts = [s.sent_at for s in sent if s.sent_at is not None]
    span = max(starts) - min(starts) if len(starts) > 1 else 0.0

    def stage(group: Sequence[Sample], first: str, second: str) -> Spread:
        """From one recorded moment to another, for the samples that have both."""
        return Spread.of(
            [
                end - begin
                for s in group
                if (begin := getattr(s, first)) is not None
                and (end := getattr(s, second)) is not None
            ]
        )

    return Figures(
        sent=len(sent),
        status_counts=dict(sorted(statuses.items())),
        visible=len(seen),
        timed_out=lost,
        refused=sum(1 for s in sent if not s.accepted),
        send_seconds=span,
        achieved_rate=(len(starts) - 1) / span if span else 0.0,
        response=stage(sent, "sent_at", "answered_at"),
        latency=Spread.of(
            [s.seen_at - s.sent_at for s in seen if s.seen_at and s.sent_at],
            missing=lost,
            limit=timeout,
        ),
        after_response=Spread.of(
            [s.seen_at - s.answered_at for s in seen if s.seen_at and s.answered_at],
            missing=lost,
            limit=timeout,
        ),
        web_stage=stage(seen, "sent_wall", "received_wall"),
        queue_and_worker_stage=stage(seen, "received_wall", "processed_wall"),
        observe_stage=stage(seen, "processed_wall", "seen_wall"),
        delivery_statuses=dict(sorted(delivery_statuses.items())),
    )


def report(meta: dict[str, Any], fig: Figures) -> str:
    load = meta["load"]
    lines = [
        f"Database : {meta['database']} (removed at exit)",
        f"Broker   : {meta['broker']}",
        f"Web      : {meta['web']} on {meta['base_url']}",
        f"Worker   : {meta['worker']}",
        f"Runtime  : Python {platform.python_version()}, Django {meta['django']}, "
        f"Celery {meta['celery']}, {platform.platform()}",
        f"Load     : {fig.sent} webhooks (Facebook feed comments) over {fig.send_seconds:.1f} s "
        f"= {fig.achieved_rate:.1f}/s (asked {load['rate']}/s), {load['authors']} authors on "
        f"{load['posts']} posts, ~{load['reply_share']:.0%} replies; "
        f"{load['warmup']} warm-up webhooks before, not counted",
        f"Watcher  : inbox_page(view='all', channel) as an admin, polled every "
        f"{load['poll_ms']:.0f} ms; give up {load['timeout']:.0f} s after sending",
        "",
        "HTTP statuses      : "
        + ", ".join(f"{status} x{count}" for status, count in fig.status_counts.items()),
        f"Visible in inbox   : {fig.visible}/{fig.sent}"
        f" ({fig.timed_out} timed out, {fig.refused} refused or unanswered)",
        "Deliveries         : "
        + (", ".join(f"{k} x{v}" for k, v in fig.delivery_statuses.items()) or "none"),
        "",
        f"Webhook response   : {fig.response.text()}",
        f"Sent -> in inbox   : {fig.latency.text()}",
        f"200 -> in inbox    : {fig.after_response.text()}",
        "",
        "Where the time goes (server clocks, same host):",
        f"  sent -> delivery row stored (web)        : {fig.web_stage.text()}",
        f"  row stored -> processed (broker, worker) : {fig.queue_and_worker_stage.text()}",
        f"  processed -> seen (commit, polling)      : {fig.observe_stage.text()}",
    ]
    if fig.latency.count or fig.latency.missing:
        p95 = fig.latency.p95_ms
        verdict = "met" if p95 is not None and p95 < TARGET_P95_MS else "NOT met"
        shown = f"{p95:.0f} ms" if p95 is not None else f"over {load['timeout']:.0f} s"
        lines += ["", f"Issue target p95 < {TARGET_P95_MS:.0f} ms: {verdict} (p95 {shown})"]
    return "\n".join(lines)


# --- Entry point -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time Facebook webhooks from POST to visible in the inbox, with a real "
        "web server and Celery worker, in a throwaway environment."
    )
    parser.add_argument("--requests", type=int, default=200, help="webhooks to send (200)")
    parser.add_argument("--rate", type=float, default=10.0, help="webhooks per second (10)")
    parser.add_argument("--authors", type=int, default=6, help="distinct commenters (6)")
    parser.add_argument("--posts", type=int, default=4, help="Page posts commented on (4)")
    parser.add_argument(
        "--reply-share", type=float, default=0.2, help="share of replies to a comment (0.2)"
    )
    parser.add_argument("--warmup", type=int, default=4, help="uncounted webhooks first (4)")
    parser.add_argument(
        "--server",
        choices=("gunicorn", "runserver"),
        default="gunicorn",
        help="web server: gunicorn scrm.wsgi as the image runs it (default), or runserver",
    )
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="watcher interval (20)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each webhook (30)"
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=120.0,
        help="seconds for the server and worker to come up, and for the warm-up (120)",
    )
    parser.add_argument(
        "--redis-db", type=int, default=15, help="Redis database used with REDIS_URL (15)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload (1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures here")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rate <= 0 or args.posts < 1 or args.warmup < 0:
        parser.error("--requests, --rate and --posts must be positive, --warmup not negative")
    if not 1 <= args.authors <= MAX_AUTHORS:
        parser.error(f"--authors must be between 1 and {MAX_AUTHORS}")
    if not 0.0 <= args.reply_share <= 1.0:
        parser.error("--reply-share must be in [0, 1]")
    if args.poll_ms <= 0 or args.timeout <= 0 or args.startup_timeout <= 0:
        parser.error("--poll-ms, --timeout and --startup-timeout must be positive")
    if args.web_workers < 1:
        parser.error("--web-workers must be at least 1")
    return args


def setup_channel(app_secret: str) -> tuple[int, Any]:
    """The Facebook channel, through the management command, kept out of polling; and an
    admin to read the inbox as."""
    from datetime import timedelta
    from io import StringIO

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.utils import timezone

    from channels_ingest.models import ChannelAccount

    call_command(
        "add_channel",
        platform="facebook",
        name=CHANNEL_NAME,
        account_id=PAGE_ID,
        credential=[
            "page_access_token=x",
            f"app_secret={app_secret}",
            "verify_token=v",
        ],
        stdout=StringIO(),
    )
    channel = ChannelAccount.objects.get(name=CHANNEL_NAME)
    # No beat runs, but keep it out of any poll anyway: the webhook is the only way in.
    ChannelAccount.objects.filter(pk=channel.pk).update(
        next_poll_at=timezone.now() + timedelta(days=3650)
    )
    admin = User.objects.create_user(ADMIN_USERNAME, is_superuser=True, is_staff=True)
    return channel.pk, admin


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    budget = (
        MIGRATE_TIMEOUT
        + 2 * args.startup_timeout
        + (args.requests + args.warmup) / args.rate
        + 2 * args.timeout
        + 60
    )
    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGALRM, overdue)
    signal.alarm(int(budget) + 1)
    app_secret = secrets.token_hex(16)
    rng = random.Random(args.seed)
    warmup_plan = build_plan(args.warmup, authors=1, posts=1, reply_share=0.0, rng=rng, prefix="9")
    plan = build_plan(
        args.requests,
        authors=args.authors,
        posts=args.posts,
        reply_share=args.reply_share,
        rng=rng,
        prefix="1",
    )

    children: list[Child] = []
    try:
        with throwaway_environment(args) as environment, ExitStack() as stack:

            def stop_children() -> None:
                shield_teardown()
                try:
                    for child in reversed(children):
                        child.stop()
                finally:
                    from django.db import connections

                    connections.close_all()

            stack.callback(stop_children)

            import celery
            import django

            django.setup()
            channel_id, admin = setup_channel(app_secret)

            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            web_argv, web_label = web_command(args.server, port, args.web_workers)
            web = Child("web server", web_argv, environment.env, environment.data_dir / "web.log")
            children.append(web)
            worker = Child(
                "Celery worker",
                worker_command(),
                environment.env,
                environment.data_dir / "worker.log",
            )
            children.append(worker)
            try:
                wait_healthy(base_url, web, worker, args.startup_timeout)
                url = f"{base_url}/webhooks/facebook/{channel_id}/"
                common: dict[str, Any] = {
                    "url": url,
                    "app_secret": app_secret,
                    "channel_id": channel_id,
                    "admin": admin,
                    "children": children,
                    "poll_seconds": args.poll_ms / 1000,
                }
                # The first task also tells the worker is consuming; it pays the cold start.
                if warmup_plan:
                    warm = run_batch(
                        plan=warmup_plan,
                        rate=min(args.rate, 5.0),
                        timeout=args.startup_timeout,
                        **common,
                    )
                    bad = [s for s in warm if not (s.accepted and s.seen_at is not None)]
                    if bad:
                        raise ChildFailed(
                            f"{len(bad)} of {len(warm)} warm-up webhooks failed "
                            f"(statuses {Counter(s.status for s in bad)})"
                        )
                samples = run_batch(plan=plan, rate=args.rate, timeout=args.timeout, **common)
                delivery_statuses = attach_deliveries(channel_id, samples)
            except ChildFailed as exc:
                print(f"Stopped: {exc}", file=sys.stderr)
                for child in children:
                    print(f"--- {child.name} log, last lines ---", file=sys.stderr)
                    print(child.tail(), file=sys.stderr)
                return 2

            log_problems = {child.name: child.problems() for child in children}
            fig = figures(samples, delivery_statuses, args.timeout)
            meta = {
                "database": environment.database,
                "broker": environment.broker,
                "web": web_label,
                "base_url": base_url,
                "worker": "celery worker, prefork, --concurrency 1, prefetch and acks as the "
                "settings configure them (multiplier 1, acks late)",
                "django": django.get_version(),
                "celery": celery.__version__,
                "load": {
                    "requests": args.requests,
                    "rate": args.rate,
                    "authors": args.authors,
                    "posts": args.posts,
                    "reply_share": args.reply_share,
                    "warmup": args.warmup,
                    "poll_ms": args.poll_ms,
                    "timeout": args.timeout,
                    "seed": args.seed,
                },
            }
    except RunOverdue as exc:
        print(f"Stopped: {exc} ({budget:.0f} s).", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted; everything started was stopped and removed.", file=sys.stderr)
        return 130

    print(report(meta, fig))
    for name, problems in log_problems.items():
        if problems:
            print(f"\n{name} log: {len(problems)} error lines, the last ones:")
            print("\n".join(f"  {line}" for line in problems[-10:]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    **meta,
                    "figures": asdict(fig),
                    "log_error_lines": {k: len(v) for k, v in log_problems.items()},
                    "samples": [asdict(s) for s in samples],
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nfigures written to {args.json}")
    complete = fig.visible == fig.sent == args.requests
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
