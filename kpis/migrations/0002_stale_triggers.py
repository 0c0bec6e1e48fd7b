"""Mark a conversation's facts stale in the same transaction as whatever changed it.

A conversation row inserted or updated, or an event on its timeline, marks it. PostgreSQL runs
one statement-level trigger per INSERT/UPDATE over its transition table, so a bulk write of
the ingest pipeline costs one extra statement, not one per row; SQLite has only row triggers.
"""

from django.db import migrations

_TABLES = {
    # table: (column holding the conversation id, events)
    "conversations_conversation": ("id", ("INSERT", "UPDATE")),
    "conversations_conversationevent": ("conversation_id", ("INSERT",)),
}


def _postgresql() -> tuple[list[str], list[str]]:
    forward, backward = [], []
    for table, (column, events) in _TABLES.items():
        for event in events:
            name = f"kpis_stale_{table.split('_', 1)[1]}_{event.lower()}"
            forward.append(
                f"""
                CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO kpis_staleconversation (conversation_id, version)
                    SELECT DISTINCT {column}, 1 FROM changed ORDER BY 1
                    ON CONFLICT (conversation_id)
                    DO UPDATE SET version = kpis_staleconversation.version + 1;
                    RETURN NULL;
                END $$;
                CREATE TRIGGER {name} AFTER {event} ON {table}
                REFERENCING NEW TABLE AS changed
                FOR EACH STATEMENT EXECUTE FUNCTION {name}();
                """
            )
            backward.append(
                f"DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}();"
            )
    return forward, backward


def _sqlite() -> tuple[list[str], list[str]]:
    forward, backward = [], []
    for table, (column, events) in _TABLES.items():
        for event in events:
            name = f"kpis_stale_{table.split('_', 1)[1]}_{event.lower()}"
            forward.append(
                f"""
                CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW BEGIN
                    INSERT INTO kpis_staleconversation (conversation_id, version)
                    VALUES (NEW.{column}, 1)
                    ON CONFLICT (conversation_id) DO UPDATE SET version = version + 1;
                END;
                """
            )
            backward.append(f"DROP TRIGGER IF EXISTS {name};")
    return forward, backward


def _run(apps, schema_editor, *, forward: bool) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        statements = _postgresql()
    elif vendor == "sqlite":
        statements = _sqlite()
    else:
        raise RuntimeError(f"No KPI triggers for {vendor}")
    for sql in statements[0 if forward else 1]:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0001_initial"),
        ("conversations", "0009_routing_sla_escalation"),
    ]

    operations = [
        migrations.RunPython(
            lambda apps, se: _run(apps, se, forward=True),
            lambda apps, se: _run(apps, se, forward=False),
        )
    ]
