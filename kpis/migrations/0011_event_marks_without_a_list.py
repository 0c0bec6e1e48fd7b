"""On SQLite, an event's kind is checked against the kinds the facts read with comparisons
rather than an ``IN`` list.

SQLite evaluates ``kind IN (four kinds)`` in a trigger's ``WHEN`` by building a temporary
index of the list, anew for every row: opening, filling and closing it cost more than
writing the row's own index entries, on every event the ingest pipeline writes (one per new
conversation, one per conversation a routing rule changed). Comparisons one after the other
decide the same, at a fraction of the cost. PostgreSQL compares with the array as it is and
keeps its triggers.
"""

import importlib

from django.db import migrations

marks = importlib.import_module("kpis.migrations.0004_stale_marks_what_facts_read")

TABLE = "conversations_conversationevent"
COLUMNS = next(m.columns for m in marks.ROW_MARKS if m.table == TABLE)
INSERT = marks._name(TABLE, "insert")
UPDATE = marks._name(TABLE, "update")


def _read(row: str) -> str:
    return "(" + " OR ".join(f"{row}.kind = '{kind}'" for kind in marks.EVENT_KINDS) + ")"


def _mark(row: str) -> str:
    return f"""
        INSERT INTO {marks.STALE} (conversation_id, version) VALUES ({row}, 1)
        ON CONFLICT (conversation_id) DO UPDATE SET version = version + 1;"""


_MOVED = f"""
        INSERT INTO {marks.STALE} (conversation_id, version)
        SELECT OLD.conversation_id, 1 WHERE OLD.conversation_id IS NOT NEW.conversation_id
        ON CONFLICT (conversation_id) DO UPDATE SET version = version + 1;"""

_CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in COLUMNS)

FORWARD = [
    f"DROP TRIGGER IF EXISTS {INSERT};",
    f"DROP TRIGGER IF EXISTS {UPDATE};",
    f"""
    CREATE TRIGGER {INSERT} AFTER INSERT ON {TABLE} FOR EACH ROW
    WHEN {_read("NEW")} BEGIN{_mark("NEW.conversation_id")}
    END;
    """,
    f"""
    CREATE TRIGGER {UPDATE} AFTER UPDATE ON {TABLE} FOR EACH ROW
    WHEN ({_read("OLD")} OR {_read("NEW")}) AND ({_CHANGED}) BEGIN{_mark("NEW.conversation_id")}
    {_MOVED}
    END;
    """,
]


def _forward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        for sql in FORWARD:
            schema_editor.execute(sql)


def _backward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {INSERT};")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {UPDATE};")
        create, _ = marks.statements("sqlite")
        for sql in create:
            if f" ON {TABLE} " in sql:
                schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("kpis", "0010_contacts_and_escalations_from_indexes")]

    operations = [migrations.RunPython(_forward, _backward)]
