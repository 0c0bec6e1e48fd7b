"""Each agent's first responses and resolutions per day, channel and duration bucket
(`AgentDurations`), so the agents page finds each agent's medians from the counts and the
facts of the one bucket that holds them, instead of sorting every first response and
resolution of the range per agent.

Kept by triggers on the response and conversation facts, as the duration counts are, with
their buckets (`kpis/migrations/0008_duration_counts.py`). The definitions are frozen here,
as a migration must be; `counts_rebuild()` in `kpis.facts` reads them from here.
"""

import importlib
import re

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

_DURATIONS = importlib.import_module("kpis.migrations.0008_duration_counts")

AGENT_DURATIONS = "kpis_agentdurations"
BUCKETS = _DURATIONS.BUCKETS
KEY = ("day", "agent_id", "channel_id", "platform", "measure")
COUNTERS = ("n", *(f"b{i}" for i in range(BUCKETS)))

# Per fact table: (the day column, the agent column, the measure, the duration column, which
# rows count). kpis.models.DurationMeasure: 0 first response, 4 resolution.
MEASURES: dict[str, tuple[str, str, int, str, str]] = {
    "kpis_responsefact": ("day", "agent_id", 0, "seconds", "r.is_first"),
    "kpis_conversationfact": (
        "resolved_day",
        "resolved_by_id",
        4,
        "resolution_seconds",
        "r.resolved_day IS NOT NULL",
    ),
}


def select(table: str, rows: str, vendor: str, *, sign: str = "") -> str:
    """SQL: per duration the rows of a fact table hold (rows: the table, a transition table,
    or one row), its key, bucket and count; ``sign`` "-" to take them away."""
    day, agent, measure, column, only = MEASURES[table]
    return (
        f"SELECT r.{day} AS day, r.{agent} AS agent_id, r.channel_id AS channel_id,"
        f" r.platform AS platform, {measure} AS measure,"
        f" {_DURATIONS.bucket_sql(f'r.{column}', vendor)} AS bucket, {sign}1 AS n"
        f" FROM {rows} r WHERE r.{column} IS NOT NULL AND r.{agent} IS NOT NULL AND {only}"
    )


def grouped(rows_sql: str) -> str:
    """SQL: the durations counted per key and bucket, then spread over the bucket columns per
    key, leaving out keys whose counts are all zero."""
    keys = ", ".join(KEY)
    sums = ", ".join(
        ["SUM(n)", *(f"SUM(CASE WHEN bucket = {i} THEN n ELSE 0 END)" for i in range(BUCKETS))]
    )
    nothing = " AND ".join(
        ["SUM(n) = 0"]
        + [f"SUM(CASE WHEN bucket = {i} THEN n ELSE 0 END) = 0" for i in range(BUCKETS)]
    )
    by_bucket = (
        f"SELECT {keys}, bucket, SUM(n) AS n FROM ({rows_sql}) d"
        f" GROUP BY {keys}, bucket HAVING SUM(n) <> 0"
    )
    return (
        f"SELECT {keys}, {sums} FROM ({by_bucket}) b GROUP BY {keys} HAVING NOT ({nothing})"
        f" ORDER BY {keys}"
    )


def _insert() -> str:
    return f"INSERT INTO {AGENT_DURATIONS} ({', '.join(KEY)}, {', '.join(COUNTERS)})"


def _upsert() -> str:
    added = ", ".join(f"{name} = {AGENT_DURATIONS}.{name} + excluded.{name}" for name in COUNTERS)
    return f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}"


def _name(table: str, event: str) -> str:
    return f"kpis_agent_durations_{table.split('_', 1)[1]}_{event}"


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
    for table, (day, agent, _, column, only) in MEASURES.items():
        columns = {"channel_id", "platform", day, agent, column, *re.findall(r"\br\.(\w+)", only)}

        def row(prefix: str, columns: set[str] = columns) -> str:
            # The row as a one-row table.
            return "(SELECT " + ", ".join(f"{prefix}.{c} AS {c}" for c in sorted(columns)) + ")"

        def statement(prefix: str, sign: str = "", table: str = table) -> str:
            # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
            rows = grouped(select(table, row(prefix), "sqlite", sign=sign))
            return f"\n{_insert()} SELECT * FROM ({rows}) WHERE true {_upsert()};"

        for event, body in (
            ("insert", statement("NEW")),
            ("delete", statement("OLD", "-")),
            ("update", statement("OLD", "-") + statement("NEW")),
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
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("channels_ingest", "0007_inbound_api_platform"),
        ("kpis", "0016_escalation_counts"),
    ]

    operations = [
        migrations.CreateModel(
            name="AgentDurations",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                (
                    "agent",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
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
                *((name, models.IntegerField(default=0)) for name in COUNTERS),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "agent", "channel", "platform", "measure"),
                        name="kpi_agent_durations_key",
                    )
                ],
            },
        ),
        migrations.RunPython(
            lambda apps, se: _run(apps, se, forward=True),
            lambda apps, se: _run(apps, se, forward=False),
        ),
    ]
