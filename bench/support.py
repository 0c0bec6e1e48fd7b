"""What the benchmarks share: a throwaway PostgreSQL database on a loopback server, and the
care their teardown needs. The developer's own database is never opened."""

import os
import platform
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql"}


def loopback(host: str | None) -> bool:
    """Loopback or a local socket (no host at all)."""
    return not host or host.lower() in LOOPBACK_HOSTS


@dataclass
class PostgresTarget:
    url: str  # DATABASE_URL of the throwaway database
    name: str
    connect: dict[str, Any]  # psycopg2 arguments for the server's maintenance database


def postgres_target(database_url: str, *, prefix: str) -> PostgresTarget:
    """Where a throwaway database named ``<prefix>_<pid>`` goes, on the server of the URL."""
    parts = urlsplit(database_url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise SystemExit(f"A PostgreSQL URL is needed ({parts.scheme}:// given).")
    if not loopback(parts.hostname):
        raise SystemExit(f"Refusing a database server on {parts.hostname}: loopback only.")
    name = f"{prefix}_{os.getpid()}"
    # The server's maintenance database, to create and drop the throwaway one; the database
    # named in the URL is never opened.
    connect: dict[str, Any] = {"dbname": "postgres", "connect_timeout": 10}
    for key, value in (
        ("host", parts.hostname),
        ("port", parts.port),
        ("user", parts.username),
        ("password", parts.password),
    ):
        if value:
            connect[key] = value
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    return PostgresTarget(url=url, name=name, connect=connect)


@contextmanager
def throwaway_postgres(target: PostgresTarget) -> Iterator[str]:
    """Create the database, yield the server's version, and drop it at the end (forcibly: a
    statement still running in it, cut short by a time budget, is ended with it)."""
    import psycopg2
    from psycopg2 import sql

    def admin_connection() -> Any:
        conn = psycopg2.connect(**target.connect)
        conn.autocommit = True
        return conn

    conn = admin_connection()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = str(cursor.fetchone()[0])
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.name)))
        server_version_num = conn.server_version
    finally:
        conn.close()
    try:
        yield version
    finally:
        conn = admin_connection()
        try:
            force = sql.SQL(" WITH (FORCE)") if server_version_num >= 130000 else sql.SQL("")
            with conn.cursor() as cursor:
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(target.name))
                    + force
                )
        finally:
            conn.close()


def shield_teardown() -> None:
    """Cleaning up is bounded on its own: the time budget's alarm, a second Ctrl-C or a kill
    must not cut it short halfway."""
    signal.alarm(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def restore_environ(caller: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(caller)


class RunOverdue(Exception):
    """The run took longer than its time budget (raised from the alarm's handler)."""


def overdue(signum: int, frame: FrameType | None) -> None:
    raise RunOverdue("the run took longer than its time budget")


def terminated(signum: int, frame: FrameType | None) -> None:
    """On SIGTERM, leave through the normal way out, so cleanup runs."""
    sys.exit(128 + signum)


def machine_description() -> str:
    """The processor's model and the CPUs this process may run on, for the reports: the
    figures of one machine do not carry over to another (two runs of the same code on two
    machines of the same kind here differed by a fifth)."""
    model, clock = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            # The last processor's fields, the same as the first's on the machines measured.
            fields = {
                key.strip(): value.strip()
                for key, _, value in (line.partition(":") for line in info)
                if value
            }
    except OSError:
        fields = {}
    model = fields.get("model name", model)
    if mhz := fields.get("cpu MHz"):
        clock = f" at {float(mhz):,.0f} MHz"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}{clock}, {cpus} CPUs"
