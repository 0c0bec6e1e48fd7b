"""Mark conversations stale when the business calendar their facts were computed on changes.

Business time (of each response and of the resolution) is counted on the calendar of the
conversation's SLA policy, else on the default calendar. An edit of a calendar's hours, time
zone or holidays, another calendar made the default, or a policy moved to another calendar
changed no row the facts watch, so the figures kept the old business time until a rebuild,
which used the new calendars: incremental and rebuilt figures differed.

Only conversations whose facts hold business time are marked (those with a response or a
resolution). A holiday marks only those with a response or a resolution whose time span
reaches its day, taken a day wide on either side since the day is in the calendar's own time
zone; they are found through the indexes on the facts' and responses' days, so a holiday
ahead of every conversation reads next to nothing. Hours, a time zone or a new default mark every such conversation on the calendar: the
refresh then recomputes them in its chunks, in the background.

Named apart from the ``kpis_stale_`` triggers of migration 0004, which the KPI benchmark's
load drops and creates again around its bulk writes.
"""

from dataclasses import dataclass

from django.db import migrations

PREFIX = "kpis_calendar_marks"
STALE = "kpis_staleconversation"
FACT = "kpis_conversationfact"
RESPONSE = "kpis_responsefact"
CONVERSATION = "conversations_conversation"
POLICY = "conversations_slapolicy"
CALENDAR = "conversations_businesscalendar"
HOLIDAY = "conversations_holiday"
# What the facts read of a calendar and of a policy.
CALENDAR_COLUMNS = ("weekly_hours", "time_zone")
POLICY_COLUMNS = ("calendar_id",)


@dataclass(frozen=True)
class Span:
    """SQL of a holiday's reach: from ``lo`` (a time) to ``hi``, and ``since`` (a date) that
    the facts' and responses' days are on or after when their times are after ``lo`` (the
    days are the organisation's, at most a day behind UTC); ``began`` is true of a response
    whose wait started before ``hi``."""

    lo: str
    hi: str
    since: str
    began: str


def _select(*, calendar: str, default: str, policy: str, span: Span | None) -> str:
    """The facts holding business time that a change reaches: those of a policy, or on a
    calendar (with those on the default calendar if ``default``); within a ``span``, only
    those with a resolution or a response whose time reaches into it, found through the
    indexes on their days rather than by reading every fact."""
    if span is None:
        reached = "(f.first_response_at IS NOT NULL OR f.resolved_at IS NOT NULL)"
    else:
        reached = f"""f.conversation_id IN (
                SELECT conversation_id FROM {FACT}
                WHERE resolved_day >= {span.since} AND resolved_at >= {span.lo}
                    AND started_at < {span.hi}
                UNION
                SELECT r.conversation_id FROM {RESPONSE} r
                WHERE r.day >= {span.since} AND r.at >= {span.lo} AND {span.began}
            )"""
    return f"""
        SELECT f.conversation_id, 1 FROM {FACT} f
        INNER JOIN {CONVERSATION} c ON c.id = f.conversation_id
        LEFT JOIN {POLICY} p ON p.id = c.sla_policy_id
        WHERE (c.sla_policy_id = {policy} OR p.calendar_id = {calendar}
                OR ({default} AND p.calendar_id IS NULL))
            AND {reached}"""


# --- PostgreSQL: one function marks, the triggers say what ---------------------------------


def _pg_insert(span: Span | None) -> str:
    select = _select(
        calendar="mark_calendar", default="mark_default", policy="mark_policy", span=span
    )
    return f"""INSERT INTO {STALE} (conversation_id, version) {select}
        ORDER BY 1
        ON CONFLICT (conversation_id) DO UPDATE SET version = {STALE}.version + 1;"""


# JIT off: the planner's estimates of a holiday's reach are far above the few rows it marks,
# and compiling took longer than the statement.
_PG_MARK = f"""
CREATE FUNCTION {PREFIX}(
    mark_calendar bigint, mark_default boolean, mark_policy bigint, mark_day date
) RETURNS void LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    lo timestamptz := (mark_day - 1)::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (mark_day + 2)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF mark_day IS NULL THEN
        {_pg_insert(None)}
    ELSE
        {
    _pg_insert(
        Span(
            lo="lo",
            hi="hi",
            since="mark_day - 2",
            began="r.at - r.seconds * interval '1 second' < hi",
        )
    )
}
    END IF;
END $$;
"""
_PG_IS_DEFAULT = "COALESCE((SELECT is_default FROM {calendar} WHERE id = {row}.calendar_id), false)"


def _pg_holiday(row: str) -> str:
    default = _PG_IS_DEFAULT.format(calendar=CALENDAR, row=row)
    return f"PERFORM {PREFIX}({row}.calendar_id, {default}, NULL, {row}.date);"


_POSTGRESQL = [
    _PG_MARK,
    f"""
    CREATE FUNCTION {PREFIX}_holiday() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN {_pg_holiday("NEW")} END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') THEN {_pg_holiday("OLD")} END IF;
        RETURN NULL;
    END $$;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_holiday AFTER INSERT OR DELETE ON {HOLIDAY}
    FOR EACH ROW EXECUTE FUNCTION {PREFIX}_holiday();
    """,
    f"""
    CREATE TRIGGER {PREFIX}_holiday_update AFTER UPDATE OF date, calendar_id ON {HOLIDAY}
    FOR EACH ROW WHEN (OLD.date IS DISTINCT FROM NEW.date
        OR OLD.calendar_id IS DISTINCT FROM NEW.calendar_id)
    EXECUTE FUNCTION {PREFIX}_holiday();
    """,
    f"""
    CREATE FUNCTION {PREFIX}_hours() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM {PREFIX}(NEW.id, NEW.is_default, NULL, NULL);
        RETURN NULL;
    END $$;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_hours AFTER UPDATE OF {", ".join(CALENDAR_COLUMNS)} ON {CALENDAR}
    FOR EACH ROW WHEN ({" OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in CALENDAR_COLUMNS)})
    EXECUTE FUNCTION {PREFIX}_hours();
    """,
    # Another calendar is the default: every conversation on the default is on another.
    f"""
    CREATE FUNCTION {PREFIX}_default() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM {PREFIX}(NULL, true, NULL, NULL);
        RETURN NULL;
    END $$;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_default_update AFTER UPDATE OF is_default ON {CALENDAR}
    FOR EACH ROW WHEN (OLD.is_default IS DISTINCT FROM NEW.is_default)
    EXECUTE FUNCTION {PREFIX}_default();
    """,
    f"""
    CREATE TRIGGER {PREFIX}_default_insert AFTER INSERT ON {CALENDAR}
    FOR EACH ROW WHEN (NEW.is_default) EXECUTE FUNCTION {PREFIX}_default();
    """,
    f"""
    CREATE TRIGGER {PREFIX}_default_delete AFTER DELETE ON {CALENDAR}
    FOR EACH ROW WHEN (OLD.is_default) EXECUTE FUNCTION {PREFIX}_default();
    """,
    f"""
    CREATE FUNCTION {PREFIX}_policy() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM {PREFIX}(NULL, false, NEW.id, NULL);
        RETURN NULL;
    END $$;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_policy AFTER UPDATE OF {", ".join(POLICY_COLUMNS)} ON {POLICY}
    FOR EACH ROW WHEN ({" OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in POLICY_COLUMNS)})
    EXECUTE FUNCTION {PREFIX}_policy();
    """,
]
_POSTGRESQL_REVERSE = [
    f"DROP TRIGGER IF EXISTS {PREFIX}_holiday ON {HOLIDAY};",
    f"DROP TRIGGER IF EXISTS {PREFIX}_holiday_update ON {HOLIDAY};",
    f"DROP TRIGGER IF EXISTS {PREFIX}_hours ON {CALENDAR};",
    f"DROP TRIGGER IF EXISTS {PREFIX}_default_update ON {CALENDAR};",
    f"DROP TRIGGER IF EXISTS {PREFIX}_default_insert ON {CALENDAR};",
    f"DROP TRIGGER IF EXISTS {PREFIX}_default_delete ON {CALENDAR};",
    f"DROP TRIGGER IF EXISTS {PREFIX}_policy ON {POLICY};",
    f"DROP FUNCTION IF EXISTS {PREFIX}_holiday();",
    f"DROP FUNCTION IF EXISTS {PREFIX}_hours();",
    f"DROP FUNCTION IF EXISTS {PREFIX}_default();",
    f"DROP FUNCTION IF EXISTS {PREFIX}_policy();",
    f"DROP FUNCTION IF EXISTS {PREFIX}(bigint, boolean, bigint, date);",
]


# --- SQLite: row triggers, each with its own statement --------------------------------------


def _sqlite_mark(
    *, calendar: str = "NULL", default: str = "0", policy: str = "NULL", day: str | None = None
) -> str:
    span = None
    if day is not None:
        hi = f"date({day}, '+2 days')"
        # Stored times compare as text with a date; a response's start, in Julian days.
        span = Span(
            lo=f"date({day}, '-1 day')",
            hi=hi,
            since=f"date({day}, '-2 days')",
            began=f"julianday(r.at) - r.seconds / 86400.0 < julianday({hi})",
        )
    select = _select(calendar=calendar, default=default, policy=policy, span=span)
    return f"""
        INSERT INTO {STALE} (conversation_id, version) {select}
        ON CONFLICT (conversation_id) DO UPDATE SET version = version + 1;"""


_SQLITE_IS_DEFAULT = "COALESCE((SELECT is_default FROM {calendar} WHERE id = {row}.calendar_id), 0)"


def _sqlite_holiday(row: str) -> str:
    default = _SQLITE_IS_DEFAULT.format(calendar=CALENDAR, row=row)
    return _sqlite_mark(calendar=f"{row}.calendar_id", default=default, day=f"{row}.date")


_SQLITE = [
    f"""
    CREATE TRIGGER {PREFIX}_holiday_insert AFTER INSERT ON {HOLIDAY} FOR EACH ROW BEGIN
        {_sqlite_holiday("NEW")}
    END;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_holiday_delete AFTER DELETE ON {HOLIDAY} FOR EACH ROW BEGIN
        {_sqlite_holiday("OLD")}
    END;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_holiday_update AFTER UPDATE OF date, calendar_id ON {HOLIDAY}
    FOR EACH ROW WHEN OLD.date IS NOT NEW.date OR OLD.calendar_id IS NOT NEW.calendar_id BEGIN
        {_sqlite_holiday("NEW")}
        {_sqlite_holiday("OLD")}
    END;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_hours AFTER UPDATE OF {", ".join(CALENDAR_COLUMNS)} ON {CALENDAR}
    FOR EACH ROW WHEN {" OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in CALENDAR_COLUMNS)} BEGIN
        {_sqlite_mark(calendar="NEW.id", default="NEW.is_default")}
    END;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_default_update AFTER UPDATE OF is_default ON {CALENDAR}
    FOR EACH ROW WHEN OLD.is_default IS NOT NEW.is_default BEGIN
        {_sqlite_mark(default="1")}
    END;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_default_insert AFTER INSERT ON {CALENDAR}
    FOR EACH ROW WHEN NEW.is_default BEGIN
        {_sqlite_mark(default="1")}
    END;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_default_delete AFTER DELETE ON {CALENDAR}
    FOR EACH ROW WHEN OLD.is_default BEGIN
        {_sqlite_mark(default="1")}
    END;
    """,
    f"""
    CREATE TRIGGER {PREFIX}_policy AFTER UPDATE OF {", ".join(POLICY_COLUMNS)} ON {POLICY}
    FOR EACH ROW WHEN {" OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in POLICY_COLUMNS)} BEGIN
        {_sqlite_mark(policy="NEW.id")}
    END;
    """,
]
_SQLITE_REVERSE = [
    f"DROP TRIGGER IF EXISTS {PREFIX}_{name};"
    for name in (
        "holiday_insert",
        "holiday_delete",
        "holiday_update",
        "hours",
        "default_update",
        "default_insert",
        "default_delete",
        "policy",
    )
]


def _run(schema_editor, statements: dict[str, list[str]]) -> None:
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql)


def _forward(apps, schema_editor) -> None:
    _run(schema_editor, {"postgresql": _POSTGRESQL, "sqlite": _SQLITE})


def _backward(apps, schema_editor) -> None:
    _run(schema_editor, {"postgresql": _POSTGRESQL_REVERSE, "sqlite": _SQLITE_REVERSE})


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0018_contact_marks"),
        ("conversations", "0011_work_statistics"),
    ]

    operations = [migrations.RunPython(_forward, _backward)]
