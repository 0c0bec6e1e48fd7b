"""Mark a conversation stale only when something its facts are computed from changed.

The first triggers marked a conversation for any change of its row and for any event on its
timeline, though the facts read a few columns and four kinds of events: the ingest pipeline's
updates of the inbox columns and its `created` events were marks that changed nothing. Now:

- a conversation inserted, or updated in a column the facts read; its message counters stand
  for its messages, which the pipeline inserts in bulk (a trigger on them would mark once per
  message, where the conversation's row is written once per batch);
- an event of a kind the facts read, inserted or changed;
- a message changed in a column the facts read (an outbound one counts once sent);
- an escalation inserted or changed in a column the facts read.

PostgreSQL marks the conversations' bulk writes with one statement-level trigger each, over
their transition tables; the rarer writes of the other tables with row triggers whose `WHEN`
clause is checked before any function runs. SQLite has only row triggers, with `WHEN` too.
The lists below are frozen here, as a migration must be; a test holds them to `kpis.facts`.
"""

import importlib

from django.db import migrations

STALE = "kpis_staleconversation"
CONVERSATION = "conversations_conversation"
# Columns of a conversation the facts read, and the counters its messages move.
CONVERSATION_COLUMNS = (
    "contact_id",
    "channel_id",
    "team_id",
    "assignee_id",
    "priority",
    "status",
    "is_monitoring",
    "created_at",
    "resolved_at",
    "sla_policy_id",
    "message_count",
    "inbound_count",
)
EVENT_KINDS = ("reply_sent", "status_changed", "reopened", "sla_breached")


class RowMarks:
    """Row triggers on a table whose rows belong to a conversation: on insert (if ``insert``)
    and on an update of ``columns``, both only for rows matching ``only`` (SQL on the row)."""

    def __init__(
        self, table: str, columns: tuple[str, ...], *, insert: bool, only: str = ""
    ) -> None:
        self.table = table
        self.columns = columns
        self.insert = insert
        self.only = only

    def condition(self, row: str) -> str:
        return self.only.replace("ROW.", f"{row}.")


_EVENT_ONLY = "ROW.kind IN (" + ", ".join(f"'{kind}'" for kind in EVENT_KINDS) + ")"
ROW_MARKS = (
    RowMarks(
        "conversations_conversationevent",
        ("conversation_id", "kind", "data", "actor_id", "created_at"),
        insert=True,
        only=_EVENT_ONLY,
    ),
    RowMarks(
        "conversations_message",
        ("conversation_id", "direction", "kind", "delivery_status", "created_at", "sentiment"),
        insert=False,
    ),
    RowMarks(
        "conversations_escalation",
        ("conversation_id", "department_id", "outcome", "created_at"),
        insert=True,
    ),
)

_UPSERT = "ON CONFLICT (conversation_id) DO UPDATE SET version = {stale}.version + 1"


def _name(table: str, event: str) -> str:
    return f"kpis_stale_{table.split('_', 1)[1]}_{event}"


def triggers() -> list[tuple[str, str]]:
    """(trigger, table) of every trigger this migration creates, on either database."""
    names = [
        (_name(CONVERSATION, "insert"), CONVERSATION),
        (_name(CONVERSATION, "update"), CONVERSATION),
    ]
    for marks in ROW_MARKS:
        if marks.insert:
            names.append((_name(marks.table, "insert"), marks.table))
        names.append((_name(marks.table, "update"), marks.table))
    return names


def _changed(columns: tuple[str, ...], *, distinct: str) -> str:
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in columns)


def _update_condition(marks: RowMarks, *, distinct: str) -> str:
    changed = f"({_changed(marks.columns, distinct=distinct)})"
    if not marks.only:
        return changed
    return f"({marks.condition('OLD')} OR {marks.condition('NEW')}) AND {changed}"


def _postgresql() -> tuple[list[str], list[str]]:
    upsert = _UPSERT.format(stale=STALE)
    insert, update = _name(CONVERSATION, "insert"), _name(CONVERSATION, "update")
    old = ", ".join(f"o.{c}" for c in CONVERSATION_COLUMNS)
    new = ", ".join(f"n.{c}" for c in CONVERSATION_COLUMNS)
    forward = [
        f"""
        CREATE FUNCTION {insert}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {STALE} (conversation_id, version)
            SELECT id, 1 FROM changed ORDER BY 1
            {upsert};
            RETURN NULL;
        END $$;
        CREATE TRIGGER {insert} AFTER INSERT ON {CONVERSATION}
        REFERENCING NEW TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION {insert}();
        """,
        f"""
        CREATE FUNCTION {update}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {STALE} (conversation_id, version)
            SELECT n.id, 1 FROM changed n JOIN previous o ON o.id = n.id
            WHERE ({new}) IS DISTINCT FROM ({old})
            ORDER BY 1
            {upsert};
            RETURN NULL;
        END $$;
        CREATE TRIGGER {update} AFTER UPDATE ON {CONVERSATION}
        REFERENCING OLD TABLE AS previous NEW TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION {update}();
        """,
    ]
    backward = [
        f"DROP TRIGGER IF EXISTS {insert} ON {CONVERSATION}; DROP FUNCTION IF EXISTS {insert}();",
        f"DROP TRIGGER IF EXISTS {update} ON {CONVERSATION}; DROP FUNCTION IF EXISTS {update}();",
    ]
    for marks in ROW_MARKS:
        events = [("insert", marks.condition("NEW"))] if marks.insert else []
        events.append(("update", _update_condition(marks, distinct="IS DISTINCT FROM")))
        for event, condition in events:
            name = _name(marks.table, event)
            # An update that moves a row to another conversation marks both.
            rows = "(NEW.conversation_id)" + (", (OLD.conversation_id)" if event == "update" else "")
            forward.append(
                f"""
                CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO {STALE} (conversation_id, version)
                    SELECT DISTINCT c, 1 FROM (VALUES {rows}) AS v (c) ORDER BY 1
                    {upsert};
                    RETURN NULL;
                END $$;
                CREATE TRIGGER {name} AFTER {event.upper()} ON {marks.table}
                FOR EACH ROW {f"WHEN ({condition})" if condition else ""}
                EXECUTE FUNCTION {name}();
                """
            )
            backward.append(
                f"DROP TRIGGER IF EXISTS {name} ON {marks.table}; "
                f"DROP FUNCTION IF EXISTS {name}();"
            )
    return forward, backward


def _sqlite() -> tuple[list[str], list[str]]:
    def mark(row: str) -> str:
        return f"""
            INSERT INTO {STALE} (conversation_id, version) VALUES ({row}, 1)
            ON CONFLICT (conversation_id) DO UPDATE SET version = version + 1;"""

    # A second mark for the row's old conversation, if an update moved it (the WHERE also
    # keeps SQLite from reading ON CONFLICT as part of the SELECT).
    moved = f"""
            INSERT INTO {STALE} (conversation_id, version)
            SELECT OLD.conversation_id, 1 WHERE OLD.conversation_id IS NOT NEW.conversation_id
            ON CONFLICT (conversation_id) DO UPDATE SET version = version + 1;"""
    insert, update = _name(CONVERSATION, "insert"), _name(CONVERSATION, "update")
    forward = [
        f"""
        CREATE TRIGGER {insert} AFTER INSERT ON {CONVERSATION} FOR EACH ROW BEGIN{mark("NEW.id")}
        END;
        """,
        f"""
        CREATE TRIGGER {update} AFTER UPDATE ON {CONVERSATION} FOR EACH ROW
        WHEN {_changed(CONVERSATION_COLUMNS, distinct="IS NOT")} BEGIN{mark("NEW.id")}
        END;
        """,
    ]
    backward = [f"DROP TRIGGER IF EXISTS {insert};", f"DROP TRIGGER IF EXISTS {update};"]
    for marks in ROW_MARKS:
        if marks.insert:
            name = _name(marks.table, "insert")
            condition = marks.condition("NEW")
            forward.append(
                f"""
                CREATE TRIGGER {name} AFTER INSERT ON {marks.table} FOR EACH ROW
                {f"WHEN {condition}" if condition else ""} BEGIN{mark("NEW.conversation_id")}
                END;
                """
            )
            backward.append(f"DROP TRIGGER IF EXISTS {name};")
        name = _name(marks.table, "update")
        forward.append(
            f"""
            CREATE TRIGGER {name} AFTER UPDATE ON {marks.table} FOR EACH ROW
            WHEN {_update_condition(marks, distinct="IS NOT")} BEGIN{mark("NEW.conversation_id")}
            {moved}
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
    vendor = schema_editor.connection.vendor
    first = importlib.import_module("kpis.migrations.0002_stale_triggers")
    if vendor == "postgresql":
        before = first._postgresql()
    elif vendor == "sqlite":
        before = first._sqlite()
    else:
        raise RuntimeError(f"No KPI triggers for {vendor}")
    after = statements(vendor)
    # Forward: the first triggers go, these come; backward the other way round.
    for sql in [*before[1], *after[0]] if forward else [*after[1], *before[0]]:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0003_fact_references"),
        ("conversations", "0010_webhook_subscriptions"),
    ]

    operations = [
        migrations.RunPython(
            lambda apps, se: _run(apps, se, forward=True),
            lambda apps, se: _run(apps, se, forward=False),
        )
    ]
