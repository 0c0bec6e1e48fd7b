"""Rows written by COPY read back exactly as rows written by INSERT, awkward values included."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from conversations.models import ConversationEvent
from kpis.models import ResponseFact
from scrm.bulk import rows_copy, rows_insert
from tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

TEXTS = ["plain", "tab\there", "lines\nand\r\nreturns", "back\\slash \\N \\t", "", "ünïcödé ✓"]
DATA = [
    {"text": "tab\t, newline\n, backslash\\"},
    [1, "two", None],
    None,
    {"nested": {"quote": '"', "nul-free": True}},
    "a string",
    3.5,
]
MOMENTS = [
    datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
    datetime(2026, 10, 25, 2, 30, 0, 123456, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]
# Durations are differences of times, so at most the 3.2e11 s between years 1 and 9999: the
# KPI triggers sum them in whole microseconds, as a 64-bit integer.
SECONDS = [0.0, -0.0, 1 / 3, 1e-7, 123456789.125, 3.15e11 + 0.5]


def test_copied_events_read_back_as_inserted():
    conversation = ConversationFactory()
    fields = ["conversation", "kind", "data", "created_at"]

    def rows(prefix: str) -> list[list[object]]:
        return [
            [conversation.pk, prefix + text, data, MOMENTS[i % len(MOMENTS)]]
            for i, (text, data) in enumerate(zip(TEXTS, DATA, strict=True))
        ]

    rows_insert(ConversationEvent, fields, rows("i"))
    rows_copy(ConversationEvent, fields, rows("c"))

    def stored(prefix: str) -> list[tuple[object, ...]]:
        return [
            (kind[1:], data, at)
            for kind, data, at in ConversationEvent.objects.filter(
                conversation=conversation, kind__startswith=prefix
            )
            .order_by("pk")
            .values_list("kind", "data", "created_at")
        ]

    assert stored("c") == stored("i")
    assert [kind for kind, _, _ in stored("c")] == TEXTS


def test_copied_numbers_dates_and_nulls_read_back_as_inserted():
    conversation = ConversationFactory()
    fields = ["conversation", "at", "day", "is_first", "seconds", "business_seconds"]
    fields += ["sla_met", "agent", "channel", "platform", "team", "priority"]

    def rows(first: bool) -> list[list[object]]:
        return [
            [
                conversation.pk,
                MOMENTS[i % len(MOMENTS)],
                date(2026, 1, 1 + i),
                first,
                seconds,
                None if i % 2 else seconds,
                [True, False, None][i % 3],
                None,
                conversation.channel_id,
                "x\tx",
                None,
                i,
            ]
            for i, seconds in enumerate(SECONDS)
        ]

    rows_insert(ResponseFact, fields, rows(True))
    rows_copy(ResponseFact, fields, rows(False))

    def stored(first: bool) -> list[tuple[object, ...]]:
        values = ResponseFact.objects.filter(is_first=first).order_by("priority")
        columns = [f for f in fields if f not in ("is_first", "agent", "team", "channel")]
        return [
            tuple(repr(v) for v in row)  # repr: -0.0 and 0.0 differ
            for row in values.values_list(*columns)
        ]

    assert stored(False) == stored(True)
    assert len(stored(False)) == len(SECONDS)


def test_copy_is_a_statement_like_any_other():
    """Counted and timed by whoever watches the connection, and its errors are Django's."""
    conversation = ConversationFactory()
    fields = ["id", "conversation", "kind", "data", "created_at"]
    row = [10**9, conversation.pk, "note", {}, MOMENTS[0]]
    seen: list[str] = []

    def watch(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch), CaptureQueriesContext(connection) as captured:
        rows_copy(ConversationEvent, fields, [row])
    assert len(seen) == len(captured.captured_queries) == 1
    verb = "COPY" if connection.vendor == "postgresql" else "INSERT"
    assert seen[0].startswith(verb) and verb in captured.captured_queries[0]["sql"]

    with pytest.raises(IntegrityError), transaction.atomic():
        rows_copy(ConversationEvent, fields, [row])  # the same primary key again
    assert ConversationEvent.objects.filter(pk=10**9).count() == 1
