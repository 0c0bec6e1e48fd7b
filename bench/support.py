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


def _stat(pid: int) -> tuple[str, list[str]] | None:
    """A process's name and the fields after it in ``/proc/<pid>/stat``; None where there is
    no such file (another system, a process gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat_parse(stat.read())
    except OSError:
        return None


def stat_parse(text: str) -> tuple[str, list[str]]:
    """The name in a ``/proc/<pid>/stat`` line, which may hold spaces and parentheses itself,
    and the fields after it."""
    return text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 1 :].split()


def process_cpu_seconds(pid: int) -> float | None:
    """The CPU time (user and system) a process of this machine has used so far."""
    stat = _stat(pid)
    if stat is None:
        return None
    # proc(5) numbers the fields from 1, the pid: utime is 14, stime 15, the state (3) first
    # after the name.
    fields = stat[1]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ServerProcess:
    """The PostgreSQL process serving a connection, on this machine."""

    pid: int

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.pid)


def server_process(connection: Any) -> ServerProcess | None:
    """The database server's process serving ``connection`` (Django's), when it is PostgreSQL
    on this machine and its ``/proc`` entry can be read; else None. On SQLite all the
    database's work is the caller's own CPU time; on PostgreSQL most of it is the server
    process's, which a benchmark adds to its own CPU time to weigh the whole work."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        # No address: a Unix socket, so this machine.
        cursor.execute("SELECT pg_backend_pid(), host(inet_server_addr())")
        pid, address = cursor.fetchone()
    if address is not None and not loopback(address):
        return None
    # A server in a container reached through a forwarded port would name a pid of its own
    # namespace: the process must be PostgreSQL's here.
    stat = _stat(pid)
    if stat is None or not stat[0].startswith("postgres"):
        return None
    return ServerProcess(pid)


def server_process_same(connection: Any, server: ServerProcess) -> bool:
    """Whether ``connection`` is still served by ``server``: a connection closed and opened
    again in between has another process, whose CPU time cannot be subtracted."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0]) == server.pid
