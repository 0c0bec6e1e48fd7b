"""Mark a contact's conversations stale when what their facts read of the contact changes.

The facts copy two columns of the contact: whether it is a VIP (VIP coverage) and where it
came from (new contacts first seen on social). An agent marking a contact VIP, a merge that
keeps the VIP mark, or an import that sets the source changed them without a mark, so the
figures kept the old values until a rebuild, which read the new ones.

``UPDATE OF`` keeps the trigger out of the ingest's contact updates (they set when the contact
was last seen), and ``WHEN`` out of saves that change neither column. Named apart from the
``kpis_stale_`` triggers of migration 0004, which the KPI benchmark's load drops and
creates again around its bulk writes.
"""

from django.db import migrations

NAME = "kpis_contact_marks_update"
STALE = "kpis_staleconversation"
CONTACT = "contacts_contact"
CONVERSATION = "conversations_conversation"
COLUMNS = ("is_vip", "source")

_POSTGRESQL = [
    f"""
    CREATE FUNCTION {NAME}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {STALE} (conversation_id, version)
        SELECT id, 1 FROM {CONVERSATION} WHERE contact_id = NEW.id ORDER BY 1
        ON CONFLICT (conversation_id) DO UPDATE SET version = {STALE}.version + 1;
        RETURN NULL;
    END $$;
    """,
    f"""
    CREATE TRIGGER {NAME} AFTER UPDATE OF {", ".join(COLUMNS)} ON {CONTACT}
    FOR EACH ROW WHEN ({" OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in COLUMNS)})
    EXECUTE FUNCTION {NAME}();
    """,
]
_POSTGRESQL_REVERSE = [
    f"DROP TRIGGER IF EXISTS {NAME} ON {CONTACT}; DROP FUNCTION IF EXISTS {NAME}();"
]

_SQLITE = [
    f"""
    CREATE TRIGGER {NAME} AFTER UPDATE OF {", ".join(COLUMNS)} ON {CONTACT} FOR EACH ROW
    WHEN {" OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in COLUMNS)} BEGIN
        INSERT INTO {STALE} (conversation_id, version)
        SELECT id, 1 FROM {CONVERSATION} WHERE contact_id = NEW.id
        ON CONFLICT (conversation_id) DO UPDATE SET version = version + 1;
    END;
    """
]
_SQLITE_REVERSE = [f"DROP TRIGGER IF EXISTS {NAME};"]


def _run(schema_editor, statements: dict[str, list[str]]) -> None:
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql)


def _forward(apps, schema_editor) -> None:
    _run(schema_editor, {"postgresql": _POSTGRESQL, "sqlite": _SQLITE})


def _backward(apps, schema_editor) -> None:
    _run(schema_editor, {"postgresql": _POSTGRESQL_REVERSE, "sqlite": _SQLITE_REVERSE})


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0017_agent_durations"),
        ("contacts", "0007_inbound_api_platform"),
    ]

    operations = [migrations.RunPython(_forward, _backward)]
