"""Rows written by COPY read back exactly as rows written by INSERT, awkward values included,
however the text is cut into chunks on its way to the server."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from contacts.models import Contact
from conversations.models import ConversationEvent
from kpis.models import ResponseFact, StaleConversation
from scrm import bulk
from scrm.bulk import _CopyText, rows_copy, rows_insert, rows_insert_returning
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


def test_copy_text_is_read_in_chunks_of_whole_lines():
    lines = [f"row {n}\t{'x' * (n % 7)}\n" for n in range(50)]
    reader = _CopyText(iter(lines))
    chunks = list(iter(lambda: reader.read(40), ""))
    assert "".join(chunks) == "".join(lines)
    assert len(chunks) > 5
    assert all(len(chunk) >= 40 for chunk in chunks[:-1])
    assert all(chunk.endswith("\n") for chunk in chunks)
    assert _CopyText(iter(lines)).read() == "".join(lines)  # no size: everything at once


def test_rows_copied_over_many_chunks_are_each_stored_once(monkeypatch):
    """Rows are written out while they are sent; with chunks far smaller than a row, every
    row and every awkward character still arrives once, in order."""
    monkeypatch.setattr(bulk, "COPY_CHUNK", 16)
    conversation = ConversationFactory()
    fields = ["conversation", "kind", "data", "created_at"]
    rows = [
        [conversation.pk, f"{n}:{TEXTS[n % len(TEXTS)]}", DATA[n % len(DATA)], MOMENTS[n % 3]]
        for n in range(120)
    ]
    rows_copy(ConversationEvent, fields, rows)
    stored = list(
        ConversationEvent.objects.filter(conversation=conversation)
        .order_by("pk")
        .values_list("kind", "data", "created_at")
    )
    # The instants, in UTC: an ambiguous local time never equals a time of another zone.
    assert stored == [(kind, data, at.astimezone(UTC)) for _, kind, data, at in rows]


def test_rows_inserted_for_their_keys_go_by_copy_on_postgresql():
    """Keys are taken from the table's sequence first, in the rows' order, and the rows follow
    by COPY; elsewhere, and when conflicts are to be skipped, by INSERT … RETURNING."""
    fields = ["name", "email", "phone", "company", "is_vip", "attributes", "first_seen_at"]
    fields += ["last_seen_at", "external_crm_id", "external_crm_url", "source", "created_at"]
    fields += ["updated_at"]
    at = MOMENTS[2]
    rows = [
        (f"name {n}", f"c{n}@example.com", "", "tab\tco", n % 2 == 0, {"n": n, "t": "\t"})
        for n in range(30)
    ]
    rows = [(*row, MOMENTS[n % 3], at, "", "", "social", at, at) for n, row in enumerate(rows)]
    with CaptureQueriesContext(connection) as captured:
        keys = rows_insert_returning(Contact, fields, rows)
    statements = [q["sql"].split()[0] for q in captured.captured_queries]
    if connection.vendor == "postgresql":
        assert statements == ["SELECT", "COPY"]
        assert "nextval" in captured.captured_queries[0]["sql"]
    else:
        assert statements == ["INSERT"]
    assert len({pk for (pk,) in keys}) == len(rows)
    stored = Contact.objects.in_bulk([pk for (pk,) in keys])
    for (pk,), row in zip(keys, rows, strict=True):
        contact = stored[pk]
        assert tuple(getattr(contact, name) for name in fields[:6]) == row[:6]
        assert contact.first_seen_at == row[6].astimezone(UTC)
    # A key taken here is never taken again by an INSERT of the ORM.
    assert Contact.objects.create(name="later").pk > max(pk for (pk,) in keys)

    # A caller whose rows are a handful asks for the one INSERT.
    with CaptureQueriesContext(connection) as captured:
        [(pk,)] = rows_insert_returning(Contact, fields, rows[:1], by_copy=False)
    assert [q["sql"].split()[0] for q in captured.captured_queries] == ["INSERT"]
    assert Contact.objects.get(pk=pk).email == "c0@example.com"


def test_a_value_copy_cannot_write_fails_with_its_own_error_and_stores_nothing(monkeypatch):
    """Far into the text, after chunks have gone: the caller sees the value's error, not the
    database's (the ingest tells a bad post from an unavailable database by it)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite takes the rows by INSERT, and stores bytes as they are")
    monkeypatch.setattr(bulk, "COPY_CHUNK", 64)
    conversation = ConversationFactory()
    fields = ["conversation", "kind", "data", "created_at"]
    rows = [[conversation.pk, f"k{n}", {}, MOMENTS[0]] for n in range(200)]
    rows.append([conversation.pk, b"bytes", {}, MOMENTS[0]])
    with pytest.raises(TypeError, match="COPY cannot write bytes"), transaction.atomic():
        rows_copy(ConversationEvent, fields, rows)
    assert not ConversationEvent.objects.filter(conversation=conversation).exists()


def test_rows_whose_keys_no_sequence_gives_go_by_insert():
    with CaptureQueriesContext(connection) as captured:
        keys = rows_insert_returning(StaleConversation, ["conversation_id", "version"], [(7, 2)])
    assert [q["sql"].split()[0] for q in captured.captured_queries] == ["INSERT"]
    assert keys == [(7,)]
    assert StaleConversation.objects.get(pk=7).version == 2
