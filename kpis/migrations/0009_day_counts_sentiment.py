"""Day counts also hold how the customers' sentiment changed in the conversations resolved
each day (`DayCounts.changed`, `improved`, `worsened`, and the first and last scores summed in
millionths), so a range's figures of resolved conversations all come from them; and, by the
day they started, the conversations open now and the unassigned among them (`open`,
`open_unassigned`), so the backlog is read from them but for its last days.

The triggers of `0005_day_counts` are replaced by the same triggers over the longer list of
counters, and the counts computed anew from the facts. The definitions are frozen here, as a
migration must be; `counts_rebuild()` in `kpis.facts` reads them from here.
"""

import importlib
import re

from django.db import migrations, models

_BEFORE = importlib.import_module("kpis.migrations.0005_day_counts")

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


_BOTH_SENTIMENTS = "r.sentiment_first IS NOT NULL AND r.sentiment_last IS NOT NULL"
# In the backlog now (conversations.models.ACTIVE_STATUSES, not monitoring-only).
_OPEN = "r.status IN ('new', 'open', 'pending', 'escalated') AND NOT r.is_monitoring"


def _millionths(score: str) -> str:
    """A score of a conversation with both scores, in whole millionths: integers add up the
    same whichever order the rows come in."""
    return f"CASE WHEN {_BOTH_SENTIMENTS} THEN CAST(ROUND({score} * 1000000) AS BIGINT) ELSE 0 END"


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
                "open": _flag(_OPEN),
                "open_unassigned": _flag(f"{_OPEN} AND r.assignee_id IS NULL"),
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
                "changed": _flag(_BOTH_SENTIMENTS),
                "improved": _flag(f"{_BOTH_SENTIMENTS} AND r.sentiment_last > r.sentiment_first"),
                "worsened": _flag(f"{_BOTH_SENTIMENTS} AND r.sentiment_last < r.sentiment_first"),
                "sentiment_first_total": _millionths("r.sentiment_first"),
                "sentiment_last_total": _millionths("r.sentiment_last"),
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


def _old_triggers(apps, schema_editor, *, create: bool) -> None:
    """Drop the triggers of 0005 (SQLite copies a table to add a column, which a trigger on
    another table that writes to it would not survive), or create them again."""
    create_sql, drop_sql = _BEFORE.statements(schema_editor.connection.vendor)
    for sql in create_sql if create else drop_sql:
        schema_editor.execute(sql)
    if create:
        schema_editor.execute(f"DELETE FROM {DAY_COUNTS}")
        schema_editor.execute(_BEFORE.fill_sql())


def _new_triggers(apps, schema_editor, *, create: bool) -> None:
    create_sql, drop_sql = statements(schema_editor.connection.vendor)
    for sql in create_sql if create else drop_sql:
        schema_editor.execute(sql)
    if create:
        schema_editor.execute(f"DELETE FROM {DAY_COUNTS}")
        schema_editor.execute(fill_sql())


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0008_duration_counts"),
    ]

    operations = [
        migrations.RunPython(
            lambda apps, se: _old_triggers(apps, se, create=False),
            lambda apps, se: _old_triggers(apps, se, create=True),
        ),
        *(
            migrations.AddField(
                model_name="daycounts", name=name, field=models.IntegerField(default=0)
            )
            for name in ("changed", "improved", "worsened", "open", "open_unassigned")
        ),
        *(
            migrations.AddField(
                model_name="daycounts", name=name, field=models.BigIntegerField(default=0)
            )
            for name in ("sentiment_first_total", "sentiment_last_total")
        ),
        migrations.RunPython(
            lambda apps, se: _new_triggers(apps, se, create=True),
            lambda apps, se: _new_triggers(apps, se, create=False),
        ),
    ]
