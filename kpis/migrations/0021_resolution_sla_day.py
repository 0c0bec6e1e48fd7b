"""The resolution SLA counts every conversation whose target was settled, resolved or not.

The day counts counted resolutions within and outside the target, by the day of the
resolution. A conversation whose target passed while it was still open was a breach but no
miss, so a team that left its late conversations open showed a better share than one that
resolved them late. Now each conversation's facts say whether its resolution target was met
and the day that was settled (`ConversationFact.resolution_sla_day`): the resolution's day
when met, the day it fell due when missed, whether the resolution came late or not yet. A
reopened conversation counts by the round running now (from its last reopening), as its
resolution time counts by its last resolution. The day counts' two counters come from that
day instead of the resolution's.

The triggers are those of `0009_day_counts_sentiment` over the definitions of
`0020_first_response_sla_day` changed as below (its code, loaded afresh); `counts_rebuild()`
in `kpis.facts` reads them from here. Existing facts get the resolution's day; those that
missed, and open ones that were breached, are marked stale, so the refresh settles them on
the day they fell due.
"""

import importlib
from types import ModuleType

from django.db import migrations, models

_SOURCE = "kpis.migrations.0020_first_response_sla_day"
FACT = "kpis_conversationfact"
STALE = "kpis_staleconversation"
_MOVED = ("resolution_met", "resolution_missed")


def _with_definitions() -> ModuleType:
    """0020's counts on a module object of their own, their definitions changed here only."""
    module = importlib.import_module(_SOURCE)._with_definitions()
    flag = module._flag
    counts = {table: [list(part) for part in parts] for table, parts in module.COUNTS.items()}
    for part in counts[FACT]:
        if part[0] == "resolved_day":
            part[2] = {name: sql for name, sql in part[2].items() if name not in _MOVED}
    counts[FACT].append(
        [
            "resolution_sla_day",
            "r.resolution_sla_day IS NOT NULL",
            {
                "resolution_met": flag("r.resolution_met"),
                "resolution_missed": flag("NOT r.resolution_met"),
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
# Dropping a version's triggers, and creating them with the counts filled anew, as 0020 does.
_drop = _BEFORE._drop
_create = _BEFORE._create


def _forward(apps, schema_editor) -> None:
    # The old counts' triggers go first: the counts are computed anew at the end.
    _drop(schema_editor, _BEFORE)
    # The resolution's day for every fact with a resolution result; the misses and the open
    # conversations that were breached are computed again, to settle them on their due day.
    schema_editor.execute(
        f"UPDATE {FACT} SET resolution_sla_day = resolved_day WHERE resolution_met IS NOT NULL"
    )
    version = f"{STALE}.version" if schema_editor.connection.vendor == "postgresql" else "version"
    schema_editor.execute(
        f"""
        INSERT INTO {STALE} (conversation_id, version)
        SELECT conversation_id, 1 FROM {FACT}
        WHERE NOT resolution_met OR (resolved_at IS NULL AND breaches > 0)
        ORDER BY 1
        ON CONFLICT (conversation_id) DO UPDATE SET version = {version} + 1
        """
    )
    _create(schema_editor, _COUNTS)


def _backward(apps, schema_editor) -> None:
    _drop(schema_editor, _COUNTS)
    # What the counts before read: a result only for resolved conversations.
    schema_editor.execute(
        f"UPDATE {FACT} SET resolution_met = NULL WHERE resolved_at IS NULL AND resolution_met"
        " IS NOT NULL"
    )
    _create(schema_editor, _BEFORE)


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0020_first_response_sla_day"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversationfact",
            name="resolution_sla_day",
            field=models.DateField(
                blank=True,
                help_text="The day the resolution target was settled: the resolution's if met, "
                "else the day it fell due",
                null=True,
            ),
        ),
        migrations.RunPython(_forward, _backward),
    ]
