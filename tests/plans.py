"""What the database would do with a statement, for tests that a query can use an index."""

from django.db import connection


def query_plan(sql: str) -> str:
    """The plan of ``sql`` as one line of text. On PostgreSQL sequential scans are switched off
    for the transaction: a test's tables are small enough that a scan would win anyway, and
    the question is whether an index can serve."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}")
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        return " ".join(str(row) for row in cursor.fetchall())
