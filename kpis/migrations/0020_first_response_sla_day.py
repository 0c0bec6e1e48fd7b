"""The first-response SLA counts every conversation whose target was settled, answered or not.

The day counts counted first responses within and outside the target, by the day of the reply.
A conversation whose target passed with no reply yet was a breach but no miss, so a team that
left its late conversations unanswered showed a better share than one that answered them late.
Now each conversation's facts say whether its first-response target was met and the day that
was settled (`ConversationFact.first_response_sla_day`): the reply's day when met, the day it
fell due when missed, whether the reply came late or not yet. The day counts' two counters
come from that instead of from the responses.

The triggers are those of `0009_day_counts_sentiment` over the definitions below (its code,
loaded afresh with these definitions); `counts_rebuild()` in `kpis.facts` reads them from here.
Existing facts get the reply's day; those that missed or were breached are marked stale, so
the refresh settles them on the day they fell due.
"""

import importlib.util
from types import ModuleType

from django.db import migrations, models

_SOURCE = "kpis.migrations.0009_day_counts_sentiment"
FACT = "kpis_conversationfact"
RESPONSE = "kpis_responsefact"
STALE = "kpis_staleconversation"


def _with_definitions() -> ModuleType:
    """0009's code on its own module object, its definitions changed here only."""
    spec = importlib.util.find_spec(_SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flag = module._flag
    counts = {table: [list(part) for part in parts] for table, parts in module.COUNTS.items()}
    for part in counts["kpis_responsefact"]:
        part[2] = {
            name: sql
            for name, sql in part[2].items()
            if name not in ("first_response_met", "first_response_missed")
        }
    counts[FACT].append(
        [
            "first_response_sla_day",
            "r.first_response_sla_day IS NOT NULL",
            {
                "first_response_met": flag("r.first_response_met"),
                "first_response_missed": flag("NOT r.first_response_met"),
            },
        ]
    )
    module.COUNTS = {table: [tuple(part) for part in parts] for table, parts in counts.items()}
    assert set(module.COUNTERS) == {
        name for parts in module.COUNTS.values() for *_, c in parts for name in c
    }
    return module


_COUNTS = _with_definitions()
COUNTS = _COUNTS.COUNTS
COUNTERS = _COUNTS.COUNTERS
statements = _COUNTS.statements
fill_sql = _COUNTS.fill_sql
triggers = _COUNTS.triggers
_BEFORE = importlib.import_module(_SOURCE)


def _drop(schema_editor, counts: ModuleType) -> None:
    for sql in counts.statements(schema_editor.connection.vendor)[1]:
        schema_editor.execute(sql)


def _create(schema_editor, counts: ModuleType) -> None:
    for sql in counts.statements(schema_editor.connection.vendor)[0]:
        schema_editor.execute(sql)
    schema_editor.execute("DELETE FROM kpis_daycounts")
    schema_editor.execute(counts.fill_sql())


def _forward(apps, schema_editor) -> None:
    # The old counts' triggers go first: the counts are computed anew at the end.
    _drop(schema_editor, _BEFORE)
    # The reply's day for every fact with a first-response result; the misses and breaches
    # are computed again, to settle them on the day they fell due.
    schema_editor.execute(
        f"""
        UPDATE {FACT} SET first_response_sla_day = (
            SELECT r.day FROM {RESPONSE} r
            WHERE r.conversation_id = {FACT}.conversation_id AND r.is_first
        )
        WHERE first_response_met IS NOT NULL
        """
    )
    version = f"{STALE}.version" if schema_editor.connection.vendor == "postgresql" else "version"
    schema_editor.execute(
        f"""
        INSERT INTO {STALE} (conversation_id, version)
        SELECT conversation_id, 1 FROM {FACT}
        WHERE NOT first_response_met OR (first_response_at IS NULL AND breaches > 0)
        ORDER BY 1
        ON CONFLICT (conversation_id) DO UPDATE SET version = {version} + 1
        """
    )
    _create(schema_editor, _COUNTS)


def _backward(apps, schema_editor) -> None:
    _drop(schema_editor, _COUNTS)
    _create(schema_editor, _BEFORE)


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0019_calendar_marks"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversationfact",
            name="first_response_sla_day",
            field=models.DateField(
                blank=True,
                help_text="The day the first-response target was settled: the reply's if met, "
                "else the day it fell due",
                null=True,
            ),
        ),
        migrations.RunPython(_forward, _backward),
    ]
