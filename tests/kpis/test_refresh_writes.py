"""A refresh writes only the fact rows that differ from what is stored: a conversation whose
facts came out the same is left alone, a new message adds or replaces its day's row only."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from channels_ingest.pipeline import ingest
from conversations.models import Conversation
from kpis.facts import facts_rebuild, facts_refresh
from kpis.metrics import _VERSION_KEY
from kpis.models import ConversationFact, MessageDay, ResponseFact, StaleConversation
from tests.factories import post
from tests.kpis.conftest import utc

pytestmark = pytest.mark.django_db

FACT_TABLES = ("kpis_conversationfact", "kpis_responsefact", "kpis_messageday")


def _row_ids() -> dict[str, set[int]]:
    return {
        "responses": set(ResponseFact.objects.values_list("pk", flat=True)),
        "days": set(MessageDay.objects.values_list("pk", flat=True)),
    }


def _writes(queries: CaptureQueriesContext) -> list[str]:
    """Statements that wrote facts (PostgreSQL's COPY is not seen here: row ids tell)."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if any(verb in q["sql"] for verb in ("INSERT", "DELETE", "UPDATE", "COPY"))
        and any(table in q["sql"] for table in FACT_TABLES)
    ]


def test_conversations_whose_facts_did_not_change_are_not_written(history):
    StaleConversation.objects.bulk_create(
        [
            StaleConversation(conversation_id=pk)
            for pk in Conversation.objects.values_list("pk", flat=True)
        ]
    )
    before = _row_ids()
    version = cache.get(_VERSION_KEY)
    with CaptureQueriesContext(connection) as queries:
        assert facts_refresh() == 4
    assert _writes(queries) == []
    assert not StaleConversation.objects.exists()
    assert _row_ids() == before
    assert cache.get(_VERSION_KEY) == version  # cached figures still hold


def test_a_new_message_writes_its_day_and_the_conversations_row(history):
    c = Conversation.objects.get(messages__external_id="c1")
    before = _row_ids()
    days = MessageDay.objects.filter(conversation=c).count()
    ingest(
        channel=history["x"],
        posts=[post("c2", author="cat", reply_to="c1", at=utc(14, 10) + timedelta(days=1))],
    )
    assert set(StaleConversation.objects.values_list("conversation_id", flat=True)) == {c.pk}
    assert facts_refresh() == 1
    after = _row_ids()
    assert after["responses"] == before["responses"]
    assert before["days"] < after["days"] and len(after["days"] - before["days"]) == 1
    assert MessageDay.objects.filter(conversation=c).count() == days + 1
    assert ConversationFact.objects.get(conversation=c).inbound == 2


def test_rows_changed_by_hand_are_put_right_and_the_rest_kept(history):
    a = history["a"]
    ConversationFact.objects.filter(conversation=a).update(inbound=99)
    ResponseFact.objects.filter(conversation=a, is_first=False).update(seconds=1.0)
    MessageDay.objects.filter(conversation=a).order_by("day").first().delete()
    kept = set(MessageDay.objects.filter(conversation=a).values_list("pk", flat=True))
    StaleConversation.objects.create(conversation_id=a.pk)
    facts_refresh()
    assert kept < set(MessageDay.objects.filter(conversation=a).values_list("pk", flat=True))

    def rows() -> list[tuple[object, ...]]:
        return [
            *ConversationFact.objects.order_by("pk").values_list(),
            *ResponseFact.objects.order_by("conversation", "at").values_list(
                "conversation", "at", "is_first", "seconds", "business_seconds", "sla_met"
            ),
            *MessageDay.objects.order_by("conversation", "day").values_list(
                "conversation", "day", "inbound", "outbound", "positive", "negative"
            ),
        ]

    refreshed = rows()
    facts_rebuild()
    assert rows() == refreshed
