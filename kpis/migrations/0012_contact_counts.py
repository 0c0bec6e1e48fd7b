"""Each conversation's facts hold the days its contact's previous and second previous
conversations started, on any channel and on the same channel, and `ContactCounts` counts
the conversations per day, channel and earlier day, so a range's contacts (and those with two
or more conversations) are read from the counts instead of from every conversation started.

The counts are kept by triggers on the conversation facts, as the day counts are: every
insert, update and delete of a fact row adds what it counts, or takes it away, in the same
statement. Which conversations a change of another one touches (its contact's next two, on
any channel and on its channel) is marked stale by `kpis.facts` when it computes a moved or
new conversation, and by a trigger here when a conversation is deleted.

The new columns of the stored facts are filled from the facts themselves (the contact's
conversations in order of start, then id, as `kpis.facts` reads them), then the counts
computed. The definitions are frozen here, as a migration must be; `counts_rebuild()` in
`kpis.facts` reads them from here.
"""

import django.db.models.deletion
from django.db import migrations, models

CONTACT_COUNTS = "kpis_contactcounts"
FACTS = "kpis_conversationfact"
CONVERSATION = "conversations_conversation"
STALE = "kpis_staleconversation"
KEY = ("day", "earlier_day", "channel_id", "platform")
# The counter each earlier day of a fact row counts in.
PARTS = {
    "previous": "previous_day",
    "second_previous": "second_previous_day",
    "channel_previous": "channel_previous_day",
    "channel_second_previous": "channel_second_previous_day",
}
COUNTERS = tuple(PARTS)


def select(rows: str, *, sign: str = "") -> str:
    """SQL: the key and counters of what fact rows count (rows: the table, a transition
    table, or one row), ``sign`` "-" to take them away."""
    parts = []
    for counter, column in PARTS.items():
        values = ", ".join(
            f"{sign}1 AS {name}" if name == counter else f"0 AS {name}" for name in COUNTERS
        )
        parts.append(
            f"SELECT r.day AS day, r.{column} AS earlier_day, r.channel_id AS channel_id,"
            f" r.platform AS platform, {values} FROM {rows} r WHERE r.{column} IS NOT NULL"
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


def _insert() -> str:
    return f"INSERT INTO {CONTACT_COUNTS} ({', '.join(KEY)}, {', '.join(COUNTERS)})"


def _upsert() -> str:
    added = ", ".join(f"{name} = {CONTACT_COUNTS}.{name} + excluded.{name}" for name in COUNTERS)
    return f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}"


def fill_sql() -> str:
    """SQL: the counts of every fact row, for an empty table."""
    return f"{_insert()} {grouped(select(FACTS))}"


# The facts' earlier days from the facts themselves: the contact's conversations in order of
# start, then id, on any channel and on each channel.
FACT_DAYS_SQL = f"""
UPDATE {FACTS} SET
    previous_day = h.previous_day,
    second_previous_day = h.second_previous_day,
    channel_previous_day = h.channel_previous_day,
    channel_second_previous_day = h.channel_second_previous_day
FROM (
    SELECT conversation_id,
        LAG(day, 1) OVER everywhere AS previous_day,
        LAG(day, 2) OVER everywhere AS second_previous_day,
        LAG(day, 1) OVER here AS channel_previous_day,
        LAG(day, 2) OVER here AS channel_second_previous_day
    FROM {FACTS}
    WINDOW everywhere AS (PARTITION BY contact_id ORDER BY started_at, conversation_id),
        here AS (PARTITION BY contact_id, channel_id ORDER BY started_at, conversation_id)
) h
WHERE h.conversation_id = {FACTS}.conversation_id
"""


def _name(event: str) -> str:
    return f"kpis_contacts_{FACTS.split('_', 1)[1]}_{event}"


# A deleted conversation's contact's next two conversations, on any channel and on its
# channel, are marked stale: their previous conversations changed. "{row}" is the deleted row.
_NEXT = """
    SELECT o.id FROM {conversation} o
    WHERE o.contact_id = {row}.contact_id{channel}
        AND (o.created_at > {row}.created_at OR (o.created_at = {row}.created_at AND o.id > {row}.id))
    ORDER BY o.created_at, o.id LIMIT 2
"""


def next_sql(row: str, *, same_channel: bool) -> str:
    """SQL: the ids of the next two conversations of the contact of a row of conversations."""
    channel = f" AND o.channel_id = {row}.channel_id" if same_channel else ""
    return _NEXT.format(conversation=CONVERSATION, row=row, channel=channel)


SUCCESSORS_TRIGGER = "kpis_successors_conversation_delete"


def triggers() -> list[tuple[str, str]]:
    """(trigger, table) of every trigger this migration creates."""
    return [(_name(e), FACTS) for e in ("insert", "update", "delete")] + [
        (SUCCESSORS_TRIGGER, CONVERSATION)
    ]


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
        backward.append(
            f"DROP TRIGGER IF EXISTS {name} ON {FACTS}; DROP FUNCTION IF EXISTS {name}();"
        )
    name = SUCCESSORS_TRIGGER
    forward.append(
        f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {STALE} (conversation_id, version)
            SELECT DISTINCT n.id, 1 FROM removed d
            CROSS JOIN LATERAL (
                ({next_sql("d", same_channel=False)}) UNION ({next_sql("d", same_channel=True)})
            ) n
            ORDER BY 1
            ON CONFLICT (conversation_id) DO UPDATE SET version = {STALE}.version + 1;
            RETURN NULL;
        END $$;
        CREATE TRIGGER {name} AFTER DELETE ON {CONVERSATION}
        REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION {name}();
        """
    )
    backward.append(
        f"DROP TRIGGER IF EXISTS {name} ON {CONVERSATION}; DROP FUNCTION IF EXISTS {name}();"
    )
    return forward, backward


def _sqlite() -> tuple[list[str], list[str]]:
    columns = sorted({"day", "channel_id", "platform", *PARTS.values()})

    def row(prefix: str) -> str:
        # The row as a one-row table.
        return "(SELECT " + ", ".join(f"{prefix}.{c} AS {c}" for c in columns) + ")"

    def statements(prefix: str, sign: str = "") -> str:
        # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT.
        return "".join(
            f"\n{_insert()} SELECT * FROM ({grouped(part)}) WHERE true {_upsert()};"
            for part in select(row(prefix), sign=sign).split(" UNION ALL ")
        )

    forward, backward = [], []
    for event, body in (
        ("insert", statements("NEW")),
        ("delete", statements("OLD", "-")),
        ("update", statements("OLD", "-") + statements("NEW")),
    ):
        name = _name(event)
        forward.append(
            f"CREATE TRIGGER {name} AFTER {event.upper()} ON {FACTS} FOR EACH ROW BEGIN"
            f"{body}\nEND;"
        )
        backward.append(f"DROP TRIGGER IF EXISTS {name};")
    name = SUCCESSORS_TRIGGER
    forward.append(
        f"""
        CREATE TRIGGER {name} AFTER DELETE ON {CONVERSATION} FOR EACH ROW BEGIN
            INSERT INTO {STALE} (conversation_id, version)
            SELECT id, 1 FROM (
                SELECT id FROM ({next_sql("OLD", same_channel=False)})
                UNION SELECT id FROM ({next_sql("OLD", same_channel=True)})
            ) WHERE true
            ON CONFLICT (conversation_id) DO UPDATE SET version = version + 1;
        END;
        """
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
        schema_editor.execute(FACT_DAYS_SQL)
        for sql in create:
            schema_editor.execute(sql)
        schema_editor.execute(fill_sql())
    else:
        for sql in drop:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("channels_ingest", "0007_inbound_api_platform"),
        ("conversations", "0010_webhook_subscriptions"),
        ("kpis", "0011_event_marks_without_a_list"),
    ]

    operations = [
        *(
            migrations.AddField(
                model_name="conversationfact",
                name=name,
                field=models.DateField(blank=True, null=True),
            )
            for name in PARTS.values()
        ),
        migrations.CreateModel(
            name="ContactCounts",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("earlier_day", models.DateField()),
                ("platform", models.CharField(max_length=20)),
                *((name, models.IntegerField(default=0)) for name in COUNTERS),
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
                        fields=("day", "earlier_day", "channel", "platform"),
                        name="kpi_contact_counts_key",
                    )
                ],
            },
        ),
        migrations.RunPython(
            lambda apps, se: _run(apps, se, forward=True),
            lambda apps, se: _run(apps, se, forward=False),
        ),
    ]
