"""The reopen rate counts each conversation on the day of its first resolution.

The day counts counted reopened conversations among those resolved, by the day of the last
resolution. A conversation reopened and still open was resolved nowhere, so it left the range
it had been resolved in, and that range's reopen rate went down when its conversations
reopened. Now each conversation's facts hold the day of its first resolution
(`ConversationFact.first_resolved_day`), and the day counts count there the conversations
first resolved (`first_resolved`) and those among them reopened since (`reopened`), open again
or resolved again.

The triggers are those of `0009_day_counts_sentiment` over the definitions of
`0021_resolution_sla_day` changed as below (its code, loaded afresh); `counts_rebuild()` in
`kpis.facts` reads them from here. Existing facts never reopened get their resolution's day;
the reopened ones are marked stale, so the refresh finds their first resolution.
"""

import importlib
from types import ModuleType

from django.db import migrations, models

_SOURCE = "kpis.migrations.0021_resolution_sla_day"
FACT = "kpis_conversationfact"
STALE = "kpis_staleconversation"


def _with_definitions() -> ModuleType:
    """0021's counts on a module object of their own, their definitions changed here only."""
    module = importlib.import_module(_SOURCE)._with_definitions()
    flag = module._flag
    counts = {table: [list(part) for part in parts] for table, parts in module.COUNTS.items()}
    for part in counts[FACT]:
        if part[0] == "resolved_day":
            part[2] = {name: sql for name, sql in part[2].items() if name != "reopened"}
    counts[FACT].append(
        [
            "first_resolved_day",
            "r.first_resolved_day IS NOT NULL",
            {"first_resolved": "1", "reopened": flag("r.reopens > 0")},
        ]
    )
    module.COUNTS = {table: [tuple(part) for part in parts] for table, parts in counts.items()}
    module.COUNTERS = tuple(
        dict.fromkeys(name for parts in module.COUNTS.values() for *_, c in parts for name in c)
    )
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


def _drop_before(apps, schema_editor) -> None:
    # The old counts' triggers go before their table changes: the counts are computed anew.
    _drop(schema_editor, _BEFORE)


def _forward(apps, schema_editor) -> None:
    # A conversation never reopened was first resolved when it was resolved; a reopened one is
    # computed again to find its first resolution.
    schema_editor.execute(
        f"UPDATE {FACT} SET first_resolved_day = resolved_day WHERE reopens = 0"
        " AND resolved_day IS NOT NULL"
    )
    version = f"{STALE}.version" if schema_editor.connection.vendor == "postgresql" else "version"
    schema_editor.execute(
        f"""
        INSERT INTO {STALE} (conversation_id, version)
        SELECT conversation_id, 1 FROM {FACT} WHERE reopens > 0
        ORDER BY 1
        ON CONFLICT (conversation_id) DO UPDATE SET version = {version} + 1
        """
    )
    _create(schema_editor, _COUNTS)


def _drop_these(apps, schema_editor) -> None:
    _drop(schema_editor, _COUNTS)


def _create_before(apps, schema_editor) -> None:
    # Once the counter is gone: the counts before fill every column there is.
    _create(schema_editor, _BEFORE)


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0021_resolution_sla_day"),
    ]

    operations = [
        # The triggers of the counts before go, and come back, while their table is as it was.
        migrations.RunPython(_drop_before, _create_before),
        migrations.AddField(
            model_name="conversationfact",
            name="first_resolved_day",
            field=models.DateField(
                blank=True,
                help_text="The day of the first resolution, the reopen rate's: whether it held "
                "counts there",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="daycounts",
            name="first_resolved",
            field=models.IntegerField(default=0),
        ),
        migrations.RunPython(_forward, _drop_these),
    ]
