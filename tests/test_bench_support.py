"""What the benchmarks say of the machine they ran on."""

import os
import re
import subprocess
import sys
import time

import pytest
from django.db import connection

from bench.support import (
    ServerProcess,
    machine_description,
    process_cpu_seconds,
    server_process,
    server_process_same,
    stat_parse,
)


def test_the_machine_is_named_with_its_cpus():
    description = machine_description()
    cpus = len(os.sched_getaffinity(0))
    assert description.endswith(f", {cpus} CPUs")
    model = description.removesuffix(f", {cpus} CPUs")
    assert model and not model.startswith(",")
    if " at " in model:
        assert re.search(r" at [\d,]+ MHz$", model)


def test_a_process_line_is_read_past_a_name_holding_parentheses():
    line = "4242 (postgres: a) (b) S 1 4242 4242 0 -1 4194560 10 0 0 0 731 69 0 0 20 0 1 0\n"
    name, fields = stat_parse(line)
    assert name == "postgres: a) (b"
    assert fields[0] == "S" and fields[11:13] == ["731", "69"]


def test_the_cpu_time_of_a_process_grows_as_it_works():
    before = process_cpu_seconds(os.getpid())
    assert before is not None and before > 0
    started = time.process_time()
    while time.process_time() - started < 0.2:
        sum(range(1000))
    after = process_cpu_seconds(os.getpid())
    # The kernel counts in clock ticks (10 ms here): a little less than measured is fine.
    assert after is not None and after - before >= 0.15


def test_a_process_gone_has_no_cpu_time():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_cpu_seconds(child.pid) is None


@pytest.mark.django_db
def test_the_server_process_is_postgresql_serving_the_connection():
    server = server_process(connection)
    if connection.vendor != "postgresql":
        assert server is None  # SQLite's work is the caller's own
        return
    assert server is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert server.pid == cursor.fetchone()[0]
    before = server.cpu_seconds()
    with connection.cursor() as cursor:
        # Work done by the server alone, none by this process.
        cursor.execute("SELECT count(*) FROM generate_series(1, 3000000)")
    after = server.cpu_seconds()
    assert before is not None and after is not None and after - before >= 0.05
    assert server_process_same(connection, server)
    assert not server_process_same(connection, ServerProcess(server.pid + 1))
