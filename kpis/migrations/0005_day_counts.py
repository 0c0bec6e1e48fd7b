"""Counts per day, channel, team and priority (`DayCounts`), kept by triggers on the facts.

Every insert, update and delete of a fact row adds what the row counts to its day's counts,
or takes it away, in the same statement: the refresh, a rebuild, the ORM's cascades (a
conversation or channel deleted, a team's references set to NULL) and changes by hand all
keep them equal to what the facts add up to. PostgreSQL runs one statement-level trigger per
table and event over its transition tables (one upsert per statement, whatever the rows);
SQLite has row triggers.

`COUNTS` says what each fact table adds to which day; `counts_rebuild()` in `kpis.facts`
computes the counts anew from the same definitions (``select``), so a rebuild gives what
the triggers keep. The definitions are frozen here, as a migration must be.
"""

import re

import django.db.models.deletion
from django.db import migrations, models

DAY_COUNTS = "kpis_daycounts"
RESOLVED_IN_CHANNEL = "resolved_in_channel"  # conversations.models.EscalationOutcome
KEY = ("day", "channel_id", "platform", "team_key", "priority")
# Upper bounds of the response time buckets in seconds (metrics.RESPONSE_BUCKETS), the last
# one open.
_BOUNDS = (0, 300, 900, 3600, 14400, 86400, None)


def _bucket(first: bool, i: int) -> str:
    which = "r.is_first" if first else "NOT r.is_first"
    upper = _BOUNDS[i + 1]
    below = f" AND r.seconds < {upper}" if upper is not None else ""
    return f"CASE WHEN {which} AND r.seconds >= {_BOUNDS[i]}{below} THEN 1 ELSE 0 END"


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


# Per fact table: (the day column, the rows that count, {counter: SQL over the row "r"}).
COUNTS: dict[str, list[tuple[str, str, dict[str, str]]]] = {
    "kpis_messageday": [
        (
            "day",
            "",
            {
                name: f"r.{name}"
                for name in ("inbound", "outbound", "positive", "neutral", "negative")
            },
        )
    ],
    "kpis_conversationfact": [
        (
            "day",
            "",
            {
                "started": "1",
                "new_contacts": _flag("r.new_contact"),
                "returning_30": _flag("r.days_since_previous <= 30"),
                "returning_90": _flag("r.days_since_previous <= 90"),
                "vip": _flag("r.is_vip AND NOT r.is_monitoring"),
                "vip_answered": _flag(
                    "r.is_vip AND NOT r.is_monitoring AND r.first_response_at IS NOT NULL"
                ),
                "breaches": "r.breaches",
            },
        ),
        (
            "resolved_day",
            "r.resolved_day IS NOT NULL",
            {
                "resolved": "1",
                "in_channel": _flag(
                    f"r.escalations = 0 OR r.escalation_outcome = '{RESOLVED_IN_CHANNEL}'"
                ),
                "escalated": _flag("r.escalations > 0"),
                "reopened": _flag("r.reopens > 0"),
                "resolution_met": _flag("r.resolution_met"),
                "resolution_missed": _flag("NOT r.resolution_met"),
            },
        ),
    ],
    "kpis_responsefact": [
        (
            "day",
            "",
            {
                "first_response_met": _flag("r.is_first AND r.sla_met"),
                "first_response_missed": _flag("r.is_first AND NOT r.sla_met"),
                **{f"f{i}": _bucket(True, i) for i in range(6)},
                **{f"n{i}": _bucket(False, i) for i in range(6)},
            },
        )
    ],
}
COUNTERS = tuple(dict.fromkeys(name for parts in COUNTS.values() for *_, c in parts for name in c))


def select(table: str, rows: str, *, sign: str = "") -> str:
    """SQL: the key and every counter of each part of what rows of a fact table count (rows:
    the table, or a transition table), ``sign`` "-" to take them away."""
    parts = []
    for day, only, counters in COUNTS[table]:
        values = ", ".join(
            f"{sign}({counters[name]}) AS {name}" if name in counters else f"0 AS {name}"
            for name in COUNTERS
        )
        where = f" WHERE {only}" if only else ""
        parts.append(
            f"SELECT r.{day} AS day, r.channel_id, r.platform, COALESCE(r.team_id, 0) AS team_key,"
            f" r.priority, {values} FROM {rows} r{where}"
        )
    return " UNION ALL ".join(parts)


def grouped(rows_sql: str) -> str:
    """SQL: the rows summed per key, leaving out sums that are all zero."""
    sums = ", ".join(f"SUM({name})" for name in COUNTERS)
    nothing = " AND ".join(f"SUM({name}) = 0" for name in COUNTERS)
    keys = ", ".join(KEY)
    return (
        f"SELECT {keys}, {sums} FROM ({rows_sql}) d GROUP BY {keys} HAVING NOT ({nothing})"
        f" ORDER BY {keys}"
    )


def _upsert(where: str = "") -> str:
    added = ", ".join(f"{name} = {DAY_COUNTS}.{name} + excluded.{name}" for name in COUNTERS)
    return f"{where} ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}"


def _insert() -> str:
    return f"INSERT INTO {DAY_COUNTS} ({', '.join(KEY)}, {', '.join(COUNTERS)})"


def _name(table: str, event: str) -> str:
    return f"kpis_counts_{table.split('_', 1)[1]}_{event}"


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
    for table in COUNTS:
        # The row as a one-row table; "WHERE true" keeps SQLite from reading ON CONFLICT as
        # part of the SELECT.
        def row(prefix: str, table: str = table) -> str:
            columns = {"day", "channel_id", "platform", "team_id", "priority"}
            for day, only, counters in COUNTS[table]:
                columns.add(day)
                for sql in (only, *counters.values()):
                    columns.update(re.findall(r"\br\.(\w+)", sql))
            listed = ", ".join(f"{prefix}.{c} AS {c}" for c in sorted(columns))
            return f"(SELECT {listed})"

        def statements(prefix: str, sign: str = "", table: str = table) -> str:
            return "".join(
                f"\n{_insert()} SELECT * FROM ({part}) WHERE true {_upsert()};"
                for part in select(table, row(prefix), sign=sign).split(" UNION ALL ")
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


def fill_sql() -> str:
    """SQL: the counts of every fact row, for an empty table."""
    rows = " UNION ALL ".join(select(table, table) for table in COUNTS)
    return f"{_insert()} {grouped(rows)}"


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
        ("channels_ingest", "0007_inbound_api_platform"),
        ("kpis", "0004_stale_marks_what_facts_read"),
    ]

    operations = [
        migrations.CreateModel(
            name="DayCounts",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("platform", models.CharField(max_length=20)),
                ("team_key", models.BigIntegerField()),
                ("priority", models.PositiveSmallIntegerField()),
                ("inbound", models.IntegerField(default=0)),
                ("outbound", models.IntegerField(default=0)),
                ("positive", models.IntegerField(default=0)),
                ("neutral", models.IntegerField(default=0)),
                ("negative", models.IntegerField(default=0)),
                ("started", models.IntegerField(default=0)),
                ("new_contacts", models.IntegerField(default=0)),
                ("returning_30", models.IntegerField(default=0)),
                ("returning_90", models.IntegerField(default=0)),
                ("vip", models.IntegerField(default=0)),
                ("vip_answered", models.IntegerField(default=0)),
                ("breaches", models.IntegerField(default=0)),
                ("resolved", models.IntegerField(default=0)),
                ("in_channel", models.IntegerField(default=0)),
                ("escalated", models.IntegerField(default=0)),
                ("reopened", models.IntegerField(default=0)),
                ("resolution_met", models.IntegerField(default=0)),
                ("resolution_missed", models.IntegerField(default=0)),
                ("first_response_met", models.IntegerField(default=0)),
                ("first_response_missed", models.IntegerField(default=0)),
                ("f0", models.IntegerField(default=0)),
                ("f1", models.IntegerField(default=0)),
                ("f2", models.IntegerField(default=0)),
                ("f3", models.IntegerField(default=0)),
                ("f4", models.IntegerField(default=0)),
                ("f5", models.IntegerField(default=0)),
                ("n0", models.IntegerField(default=0)),
                ("n1", models.IntegerField(default=0)),
                ("n2", models.IntegerField(default=0)),
                ("n3", models.IntegerField(default=0)),
                ("n4", models.IntegerField(default=0)),
                ("n5", models.IntegerField(default=0)),
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
                        fields=("day", "channel", "platform", "team_key", "priority"),
                        name="kpi_day_counts_key",
                    )
                ],
            },
        ),
        migrations.RunPython(
            lambda apps, se: _run(apps, se, forward=True),
            lambda apps, se: _run(apps, se, forward=False),
        ),
    ]
