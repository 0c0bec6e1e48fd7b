"""Values written by ``rows_insert`` read back as the ORM writes them."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from django.db import connection

from conversations.models import ConversationEvent
from scrm.bulk import _adapter, rows_insert
from tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

MOMENTS = [
    datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
    datetime(2026, 3, 29, 3, 30, 0, 250, tzinfo=timezone(timedelta(hours=2))),
    datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(2026, 1, 1, tzinfo=UTC),
]


def test_the_datetime_adapter_writes_what_the_backend_reads_as_the_same_moment():
    adapt = _adapter(ConversationEvent._meta.get_field("created_at"))
    # Each moment also in another zone: equal datetimes, which the adapter may remember as one.
    for moment in [*MOMENTS, *(m.astimezone(timezone(timedelta(hours=9))) for m in MOMENTS)]:
        written = moment if adapt is None else adapt(moment)
        if connection.vendor == "postgresql":
            # ISO text rather than psycopg2's own adaptation: the same instant once cast.
            with connection.cursor() as cursor:
                cursor.execute("SELECT %s::timestamptz", [written])
                assert cursor.fetchone()[0] == moment
        else:
            assert written == connection.ops.adapt_datetimefield_value(moment)
    assert adapt is None or adapt(None) is None


def test_the_date_adapter_writes_what_the_field_writes():
    from kpis.models import MessageDay

    field = MessageDay._meta.get_field("day")
    adapt = _adapter(field)
    for value in (date(2026, 3, 29), date(1999, 12, 31), None):
        expected = field.get_db_prep_value(value, connection)
        assert (value if adapt is None else adapt(value)) == expected


def test_inserted_rows_read_back_equal_to_what_was_given():
    conversation = ConversationFactory()
    data = [{"rule": 1, "name": "Ünïcode “quotes”", "tags": [1, 2]}, {}, {"a": None}, {"n": 1.5}]
    rows_insert(
        ConversationEvent,
        ("conversation", "kind", "data", "created_at"),
        [(conversation.pk, "note", d, m) for d, m in zip(data, MOMENTS, strict=True)],
    )
    stored = list(
        ConversationEvent.objects.filter(conversation=conversation)
        .order_by("pk")
        .values_list("data", "created_at")
    )
    assert stored == list(zip(data, MOMENTS, strict=True))


def test_instances_insert_gives_keys_and_stamps_times_as_bulk_create_does():
    from django.utils import timezone

    from conversations.models import Conversation
    from scrm.bulk import instances_insert

    template = ConversationFactory()
    before = timezone.now()
    made = [
        Conversation(contact=template.contact, channel=template.channel, thread_key=f"t{n}")
        for n in range(3)
    ]
    instances_insert(Conversation, made)
    assert all(c.pk and not c._state.adding for c in made)
    stored = {c.pk: c for c in Conversation.objects.filter(pk__in=[c.pk for c in made])}
    for conversation in made:
        again = stored[conversation.pk]
        assert again.thread_key == conversation.thread_key
        assert again.updated_at == conversation.updated_at >= before
        assert again.created_at == conversation.created_at
