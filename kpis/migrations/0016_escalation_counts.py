"""Conversations resolved after an escalation, per day of the resolution, channel and the
department their last escalation went to, by how it ended (`EscalationCounts`), so a range's
escalations are summed from a few rows per day instead of read from every escalated
conversation resolved in it.

Kept by triggers on the conversation facts, as the agent counts are: every insert, update and
delete of a fact row adds what it counts, or takes it away, in the same statement. The
definitions are frozen here, as a migration must be; `counts_rebuild()` in `kpis.facts` reads
them from here.
"""

import re

import django.db.models.deletion
from django.db import migrations, models

ESCALATION_COUNTS = "kpis_escalationcounts"
FACTS = "kpis_conversationfact"
KEY = ("day", "channel_id", "platform", "department_key")
# The counter of each outcome (conversations.models.EscalationOutcome); an escalation without
# one (still open when the conversation was resolved) counts in `still_open`.
OUTCOMES = {
    "resolved_in_channel": "resolved_in_channel",
    "resolved_by_department": "resolved_by_department",
    "moved_offline": "moved_offline",
    "abandoned": "abandoned",
}
COUNTERS = ("still_open", *OUTCOMES.values())


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _counters() -> dict[str, str]:
    known = ", ".join(f"'{code}'" for code in OUTCOMES)
    found = {"still_open": _flag(f"r.escalation_outcome NOT IN ({known})")}
    for code, name in OUTCOMES.items():
        found[name] = _flag(f"r.escalation_outcome = '{code}'")
    return found


def select(rows: str, *, sign: str = "") -> str:
    """SQL: the key and counters of what fact rows count (rows: the table, a transition
    table, or one row), ``sign`` "-" to take them away."""
    counters = _counters()
    values = ", ".join(f"{sign}({counters[name]}) AS {name}" for name in COUNTERS)
    return (
        "SELECT r.resolved_day AS day, r.channel_id AS channel_id, r.platform AS platform,"
        f" COALESCE(r.escalation_department_id, 0) AS department_key, {values} FROM {rows} r"
        " WHERE r.resolved_day IS NOT NULL AND r.escalations > 0"
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
    return f"INSERT INTO {ESCALATION_COUNTS} ({', '.join(KEY)}, {', '.join(COUNTERS)})"


def _upsert() -> str:
    added = ", ".join(
        f"{name} = {ESCALATION_COUNTS}.{name} + excluded.{name}" for name in COUNTERS
    )
    return f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}"


def fill_sql() -> str:
    """SQL: the counts of every fact row, for an empty table."""
    return f"{_insert()} {grouped(select(FACTS))}"


def _name(event: str) -> str:
    return f"kpis_escalations_conversationfact_{event}"


def triggers() -> list[tuple[str, str]]:
    """(trigger, table) of every trigger this migration creates."""
    return [(_name(e), FACTS) for e in ("insert", "update", "delete")]


def _postgresql() -> tuple[list[str], list[str]]:
    forward, backward = [], []
    for event, transitions, rows_sql in (
        ("insert", "NEW TABLE AS added", select("added")),
        ("delete", "OLD TABLE AS removed", select("removed", sign="-")),
        (
            "update",
            "OLD TABLE AS removed NEW TABLE AS added",
            select("added") + " UNION ALL " + select("removed", sign="-"),
        ),
    ):
        name = _name(event)
        forward.append(
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {_insert()} {grouped(rows_sql)}
                {_upsert()};
                RETURN NULL;
            END $$;
            CREATE TRIGGER {name} AFTER {event.upper()} ON {FACTS}
            REFERENCING {transitions}
            FOR EACH STATEMENT EXECUTE FUNCTION {name}();
            """
        )
        backward.append(f"DROP TRIGGER IF EXISTS {name} ON {FACTS}; DROP FUNCTION IF EXISTS {name}();")
    return forward, backward


def _sqlite() -> tuple[list[str], list[str]]:
    columns = {"resolved_day", "channel_id", "platform", "escalation_department_id"}
    columns.update(c for sql in _counters().values() for c in re.findall(r"\br\.(\w+)", sql))
    columns.add("escalations")

    def row(prefix: str) -> str:
        # The row as a one-row table.
        return "(SELECT " + ", ".join(f"{prefix}.{c} AS {c}" for c in sorted(columns)) + ")"

    def statement(prefix: str, sign: str = "") -> str:
        # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
        rows = grouped(select(row(prefix), sign=sign))
        return f"\n{_insert()} SELECT * FROM ({rows}) WHERE true {_upsert()};"

    forward, backward = [], []
    for event, body in (
        ("insert", statement("NEW")),
        ("delete", statement("OLD", "-")),
        ("update", statement("OLD", "-") + statement("NEW")),
    ):
        name = _name(event)
        forward.append(
            f"CREATE TRIGGER {name} AFTER {event.upper()} ON {FACTS} FOR EACH ROW BEGIN"
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
        ("channels_ingest", "0007_inbound_api_platform"),
        ("kpis", "0015_channel_contacts_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="EscalationCounts",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField(help_text="The day of the resolution")),
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
                ("department_key", models.BigIntegerField()),
                *((name, models.IntegerField(default=0)) for name in COUNTERS),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "channel", "platform", "department_key"),
                        name="kpi_escalation_counts_key",
                    )
                ],
            },
        ),
        migrations.RunPython(
            lambda apps, se: _run(apps, se, forward=True),
            lambda apps, se: _run(apps, se, forward=False),
        ),
    ]
