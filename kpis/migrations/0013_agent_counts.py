"""What each agent did per day and channel (`AgentCounts`): responses and those within SLA,
conversations resolved and those within SLA, so the agents page counts them from a few rows
per agent and day instead of from every response of the range.

Kept by triggers on the response and conversation facts, as the day counts are: every
insert, update and delete of a fact row adds what it counts, or takes it away, in the same
statement. The definitions are frozen here, as a migration must be; `counts_rebuild()` in
`kpis.facts` reads them from here.
"""

import re

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

AGENT_COUNTS = "kpis_agentcounts"
KEY = ("day", "agent_id", "channel_id", "platform")


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


# Per fact table: (the day column, the agent column, {counter: SQL over the row "r"}).
COUNTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "kpis_responsefact": (
        "day",
        "agent_id",
        {
            "responses": "1",
            "responses_met": _flag("r.sla_met"),
            "responses_missed": _flag("NOT r.sla_met"),
        },
    ),
    "kpis_conversationfact": (
        "resolved_day",
        "resolved_by_id",
        {
            "resolved": "1",
            "resolved_met": _flag("r.resolution_met"),
            "resolved_missed": _flag("NOT r.resolution_met"),
        },
    ),
}
COUNTERS = tuple(name for *_, counters in COUNTS.values() for name in counters)


def select(table: str, rows: str, *, sign: str = "") -> str:
    """SQL: the key and counters of what rows of a fact table count (rows: the table, a
    transition table, or one row), ``sign`` "-" to take them away."""
    day, agent, counters = COUNTS[table]
    values = ", ".join(
        f"{sign}({counters[name]}) AS {name}" if name in counters else f"0 AS {name}"
        for name in COUNTERS
    )
    return (
        f"SELECT r.{day} AS day, r.{agent} AS agent_id, r.channel_id AS channel_id,"
        f" r.platform AS platform, {values} FROM {rows} r"
        f" WHERE r.{day} IS NOT NULL AND r.{agent} IS NOT NULL"
    )


def grouped(rows_sql: str) -> str:
    """SQL: the rows summed per key, leaving out sums that are all zero."""
    sums = ", ".join(f"SUM({name})" for name in COUNTERS)
    nothing = " AND ".join(f"SUM({name}) = 0" for name in COUNTERS)
    keys = ", ".join(KEY)
    return (
        f"SELECT {keys}, {sums} FROM ({rows_sql}) d GROUP BY {keys} HAVING NOT ({nothing})"
        f" ORDER BY {keys}"
    )


def _insert() -> str:
    return f"INSERT INTO {AGENT_COUNTS} ({', '.join(KEY)}, {', '.join(COUNTERS)})"


def _upsert() -> str:
    added = ", ".join(f"{name} = {AGENT_COUNTS}.{name} + excluded.{name}" for name in COUNTERS)
    return f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}"


def fill_sql() -> str:
    """SQL: the counts of every fact row, for an empty table."""
    return f"{_insert()} {grouped(' UNION ALL '.join(select(t, t) for t in COUNTS))}"


def _name(table: str, event: str) -> str:
    return f"kpis_agents_{table.split('_', 1)[1]}_{event}"


def triggers() -> list[tuple[str, str]]:
    """(trigger, table) of every trigger this migration creates."""
    return [(_name(t, e), t) for t in COUNTS for e in ("insert", "update", "delete")]


def _postgresql() -> tuple[list[str], list[str]]:
    forward, backward = [], []
    for table in COUNTS:
        for event, transitions, rows_sql in (
            ("insert", "NEW TABLE AS added", select(table, "added")),
            ("delete", "OLD TABLE AS removed", select(table, "removed", sign="-")),
            (
                "update",
                "OLD TABLE AS removed NEW TABLE AS added",
                select(table, "added") + " UNION ALL " + select(table, "removed", sign="-"),
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
    for table, (day, agent, counters) in COUNTS.items():
        columns = {day, agent, "channel_id", "platform"}
        for sql in counters.values():
            columns.update(re.findall(r"\br\.(\w+)", sql))

        def row(prefix: str, columns: set[str] = columns) -> str:
            # The row as a one-row table.
            return "(SELECT " + ", ".join(f"{prefix}.{c} AS {c}" for c in sorted(columns)) + ")"

        def statement(prefix: str, sign: str = "", table: str = table) -> str:
            # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
            rows = grouped(select(table, row(prefix), sign=sign))
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


def _run(apps, schema_editor, *, forward: bool) -> None:
    create, drop = statements(schema_editor.connection.vendor)
    if forward:
        for sql in create:
            schema_editor.execute(sql)
        schema_editor.execute(fill_sql())
    else:
        for sql in drop:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("channels_ingest", "0007_inbound_api_platform"),
        ("kpis", "0012_contact_counts"),
    ]

    operations = [
        migrations.CreateModel(
            name="AgentCounts",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("platform", models.CharField(max_length=20)),
                *((name, models.IntegerField(default=0)) for name in COUNTERS),
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
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "agent", "channel", "platform"),
                        name="kpi_agent_counts_key",
                    )
                ],
            },
        ),
        migrations.RunPython(
            lambda apps, se: _run(apps, se, forward=True),
            lambda apps, se: _run(apps, se, forward=False),
        ),
    ]
