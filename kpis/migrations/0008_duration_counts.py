"""Durations per day, channel, measure and bucket (`DurationCounts`), kept by triggers on the
response and conversation facts, and the indexes that read the facts of one bucket.

A report sums a range's buckets to find the bucket that holds the value of a rank (the
median's, the 90th percentile's), then reads only the facts of that bucket, in order, to pick
the exact value. As with the day counts, every insert, update and delete of a fact row adds
what it counts, or takes it away, in the same statement: PostgreSQL with one statement-level
trigger per table and event over the transition tables, SQLite with row triggers.

A bucket is found by comparing the duration with zero and with whole-second edges (`EDGES`),
on PostgreSQL by `width_bucket`, on SQLite by a binary search written as nested CASE: both
compare the stored value with the same integers, as the reports' bucket bounds do. The definitions are
frozen here, as a migration must be; a test holds `EDGES` to `kpis.models.DURATION_EDGES`.
"""

import re

import django.db.models.deletion
from django.db import migrations, models

DURATIONS = "kpis_durationcounts"
# Upper bounds of the buckets in seconds (kpis.models.DURATION_EDGES).
EDGES = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 26, 28, 31, 34, 37,
    41, 45, 50, 55, 60, 66, 73, 80, 88, 97, 107, 117, 129, 142, 156, 172, 189, 208, 229,
    252, 277, 304, 335, 368, 405, 446, 490, 539, 593, 653, 718, 790, 869, 956, 1051, 1156,
    1272, 1399, 1539, 1693, 1862, 2048, 2253, 2479, 2726, 2999, 3299, 3629, 3992, 4391,
    4830, 5313, 5844, 6429, 7072, 7779, 8557, 9412, 10354, 11389, 12528, 13781, 15159,
    16675, 18342, 20176, 22194, 24413, 26855, 29540, 32494, 35743, 39318, 43249, 47574,
    52332, 57565, 63322, 69654, 76619, 84281, 92709, 101980, 112178, 123396, 135735, 149309,
    164240, 180664, 198730, 218603, 240463, 264510, 290961, 320057, 352063, 387269, 425996,
    468595, 515455, 567000, 623700, 686070, 754677, 830145, 913160, 1004475, 1104923,
    1215415, 1336957, 1470653, 1617718, 1779490, 1957439, 2153182, 2368501, 2605351,
    2865886, 3152474, 3467722, 3814494, 4195943, 4615538, 5077092, 5584801, 6143281,
    6757609, 7433370, 8176707, 8994377,
)  # fmt: skip
# Bucket 0 holds what is below zero, bucket 1 exactly zero (a reply before business hours
# open takes none of them: many do), bucket 2 what is between zero and the first edge, bucket
# 2 + i what is from edge i - 1 up to edge i, the last what is from the last edge up.
BUCKETS = len(EDGES) + 3
KEY = ("day", "channel_id", "platform", "measure")
COUNTERS = ("n", "total", *(f"b{i}" for i in range(BUCKETS)))

# Per fact table: (the day column, the measure as SQL over the row "r", the duration column,
# which rows count). kpis.models.DurationMeasure: 0 first response, 1 in business time,
# 2 next response, 3 in business time, 4 resolution, 5 in business time.
MEASURES: dict[str, list[tuple[str, str, str, str]]] = {
    "kpis_responsefact": [
        ("day", "CASE WHEN r.is_first THEN 0 ELSE 2 END", "seconds", ""),
        ("day", "CASE WHEN r.is_first THEN 1 ELSE 3 END", "business_seconds", ""),
    ],
    "kpis_conversationfact": [
        ("resolved_day", "4", "resolution_seconds", "r.resolved_day IS NOT NULL"),
        ("resolved_day", "5", "resolution_business_seconds", "r.resolved_day IS NOT NULL"),
    ],
}


def bucket_sql(value: str, vendor: str) -> str:
    """SQL: the bucket of a duration (see BUCKETS)."""
    if vendor == "postgresql":
        above = f"2 + width_bucket({value}, ARRAY[{', '.join(map(str, EDGES))}]::float8[])"
    else:

        def search(low: int, high: int) -> str:
            # The number of edges the duration is not below, by halves.
            if low == high:
                return str(2 + low)
            middle = (low + high + 1) // 2
            return (
                f"CASE WHEN {value} >= {EDGES[middle - 1]} THEN {search(middle, high)}"
                f" ELSE {search(low, middle - 1)} END"
            )

        above = search(0, len(EDGES))
    return f"CASE WHEN {value} < 0 THEN 0 WHEN {value} = 0 THEN 1 ELSE {above} END"


def select(table: str, rows: str, vendor: str, *, sign: str = "") -> str:
    """SQL: per duration the rows of a fact table hold (rows: the table, a transition table,
    or one row), its key, bucket, count and microseconds; ``sign`` "-" to take them away."""
    parts = []
    for day, measure, column, only in MEASURES[table]:
        where = f"r.{column} IS NOT NULL" + (f" AND {only}" if only else "")
        parts.append(
            f"SELECT r.{day} AS day, r.channel_id AS channel_id, r.platform AS platform,"
            f" {measure} AS measure, {bucket_sql(f'r.{column}', vendor)} AS bucket,"
            f" {sign}1 AS n, {sign}CAST(ROUND(r.{column} * 1000000) AS BIGINT) AS total"
            f" FROM {rows} r WHERE {where}"
        )
    return " UNION ALL ".join(parts)


def grouped(rows_sql: str) -> str:
    """SQL: the durations summed per key and bucket, then spread over the bucket columns per
    key, leaving out keys whose sums are all zero (a row taken away and written again)."""
    keys = ", ".join(KEY)
    sums = ", ".join(
        ["SUM(n)", "SUM(total)"]
        + [f"SUM(CASE WHEN bucket = {i} THEN n ELSE 0 END)" for i in range(BUCKETS)]
    )
    nothing = " AND ".join(
        ["SUM(n) = 0", "SUM(total) = 0"]
        + [f"SUM(CASE WHEN bucket = {i} THEN n ELSE 0 END) = 0" for i in range(BUCKETS)]
    )
    by_bucket = (
        f"SELECT {keys}, bucket, SUM(n) AS n, SUM(total) AS total FROM ({rows_sql}) d"
        f" GROUP BY {keys}, bucket HAVING NOT (SUM(n) = 0 AND SUM(total) = 0)"
    )
    return (
        f"SELECT {keys}, {sums} FROM ({by_bucket}) b GROUP BY {keys} HAVING NOT ({nothing})"
        f" ORDER BY {keys}"
    )


def _insert() -> str:
    return f"INSERT INTO {DURATIONS} ({', '.join(KEY)}, {', '.join(COUNTERS)})"


def _upsert() -> str:
    added = ", ".join(f"{name} = {DURATIONS}.{name} + excluded.{name}" for name in COUNTERS)
    return f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}"


def _name(table: str, event: str) -> str:
    return f"kpis_durations_{table.split('_', 1)[1]}_{event}"


def triggers() -> list[tuple[str, str]]:
    """(trigger, table) of every trigger this migration creates."""
    return [(_name(t, e), t) for t in MEASURES for e in ("insert", "update", "delete")]


def _postgresql() -> tuple[list[str], list[str]]:
    forward, backward = [], []
    for table in MEASURES:
        for event, transitions, rows_sql in (
            ("insert", "NEW TABLE AS added", select(table, "added", "postgresql")),
            ("delete", "OLD TABLE AS removed", select(table, "removed", "postgresql", sign="-")),
            (
                "update",
                "OLD TABLE AS removed NEW TABLE AS added",
                select(table, "added", "postgresql")
                + " UNION ALL "
                + select(table, "removed", "postgresql", sign="-"),
            ),
        ):
            name = _name(table, event)
            forward.append(
                f"""
                CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    {_insert()} {grouped(rows_sql)}
                    {_upsert()};
                    RETURN NULL;
                END $$;
                CREATE TRIGGER {name} AFTER {event.upper()} ON {table}
                REFERENCING {transitions}
                FOR EACH STATEMENT EXECUTE FUNCTION {name}();
                """
            )
            backward.append(
                f"DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}();"
            )
    return forward, backward


def _sqlite() -> tuple[list[str], list[str]]:
    forward, backward = [], []
    for table in MEASURES:
        columns = {"channel_id", "platform"}
        for day, measure, column, only in MEASURES[table]:
            columns |= {day, column, *re.findall(r"\br\.(\w+)", measure + only)}

        def row(prefix: str, columns: set[str] = columns) -> str:
            # The row as a one-row table.
            return "(SELECT " + ", ".join(f"{prefix}.{c} AS {c}" for c in sorted(columns)) + ")"

        def statements(prefix: str, sign: str = "", table: str = table) -> str:
            # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
            return "".join(
                f"\n{_insert()} SELECT * FROM ({grouped(part)}) WHERE true {_upsert()};"
                for part in select(table, row(prefix), "sqlite", sign=sign).split(" UNION ALL ")
            )

        for event, body in (
            ("insert", statements("NEW")),
            ("delete", statements("OLD", "-")),
            ("update", statements("OLD", "-") + statements("NEW")),
        ):
            name = _name(table, event)
            forward.append(
                f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} FOR EACH ROW BEGIN"
                f"{body}\nEND;"
            )
            backward.append(f"DROP TRIGGER IF EXISTS {name};")
    return forward, backward


def statements(vendor: str) -> tuple[list[str], list[str]]:
    """The SQL creating the triggers, and the SQL dropping them."""
    if vendor == "postgresql":
        return _postgresql()
    if vendor == "sqlite":
        return _sqlite()
    raise RuntimeError(f"No KPI triggers for {vendor}")


def fill_sql(vendor: str) -> str:
    """SQL: the durations of every fact row, for an empty table."""
    rows = " UNION ALL ".join(select(table, table, vendor) for table in MEASURES)
    return f"{_insert()} {grouped(rows)}"


def _run(apps, schema_editor, *, forward: bool) -> None:
    vendor = schema_editor.connection.vendor
    create, drop = statements(vendor)
    if forward:
        for sql in create:
            schema_editor.execute(sql)
        schema_editor.execute(fill_sql(vendor))
    else:
        for sql in drop:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("channels_ingest", "0007_inbound_api_platform"),
        ("kpis", "0007_first_responses_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="DurationCounts",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("platform", models.CharField(max_length=20)),
                (
                    "measure",
                    models.PositiveSmallIntegerField(
                        choices=[
                            (0, "First response"),
                            (1, "First response, business time"),
                            (2, "Next response"),
                            (3, "Next response, business time"),
                            (4, "Resolution"),
                            (5, "Resolution, business time"),
                        ]
                    ),
                ),
                ("n", models.IntegerField(default=0)),
                ("total", models.BigIntegerField(default=0)),
                (
                    "channel",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="channels_ingest.channelaccount",
                    ),
                ),
                *((f"b{i}", models.IntegerField(default=0)) for i in range(BUCKETS)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "channel", "platform", "measure"),
                        name="kpi_duration_counts_key",
                    )
                ],
            },
        ),
        migrations.RemoveIndex(model_name="conversationfact", name="kpi_conv_resolved_idx"),
        migrations.AddIndex(
            model_name="conversationfact",
            index=models.Index(
                fields=["resolved_day", "resolution_seconds"],
                include=["channel"],
                name="kpi_conv_resolution_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="conversationfact",
            index=models.Index(
                fields=["resolved_day", "resolution_business_seconds"],
                include=["channel"],
                name="kpi_conv_resolution_bus_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="responsefact", name="kpi_response_first_idx"),
        migrations.AddIndex(
            model_name="responsefact",
            index=models.Index(
                fields=["is_first", "day", "seconds"],
                include=["channel"],
                name="kpi_response_seconds_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="responsefact",
            index=models.Index(
                fields=["is_first", "day", "business_seconds"],
                include=["channel"],
                name="kpi_response_business_idx",
            ),
        ),
        migrations.RunPython(
            lambda apps, se: _run(apps, se, forward=True),
            lambda apps, se: _run(apps, se, forward=False),
        ),
    ]
