"""A conversation is marked stale when, and only when, something its facts read changed: the
triggers of ``kpis/migrations/0004_stale_marks_what_facts_read.py``, on either database."""

import importlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Model

from channels_ingest.pipeline import ingest
from contacts.models import Contact, ContactSource
from contacts.services import ContactData, contact_update
from conversations.models import (
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    Escalation,
    EscalationOutcome,
    EscalationTrigger,
    EventKind,
    Message,
    MessageKind,
    Priority,
    Status,
)
from kpis import facts
from kpis.models import ConversationFact, StaleConversation
from tests.factories import (
    ChannelFactory,
    ContactFactory,
    ConversationFactory,
    DepartmentFactory,
    MessageFactory,
    SlaPolicyFactory,
    TeamFactory,
    UserFactory,
    post,
)

pytestmark = pytest.mark.django_db

migration = importlib.import_module("kpis.migrations.0004_stale_marks_what_facts_read")
AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def marked() -> set[int]:
    return set(StaleConversation.objects.values_list("conversation_id", flat=True))


@pytest.fixture
def conversation() -> Conversation:
    c = ConversationFactory.create(created_at=AT, last_message_at=AT)
    StaleConversation.objects.all().delete()
    return c


def _read_columns(sql: str, model: type[Model]) -> set[str]:
    """The model's columns named in one of the facts' statements."""
    columns = {str(f.column) for f in model._meta.concrete_fields}
    return (set(re.findall(r"\w+", sql)) & columns) - {"id"}


# --- The lists frozen in the migration are what the facts read ----------------------------


def test_the_marked_event_kinds_are_those_the_facts_read():
    assert set(migration.EVENT_KINDS) == {str(kind) for kind in facts._EVENTS}


def test_every_column_the_facts_read_is_watched():
    marks = {m.table: set(m.columns) for m in migration.ROW_MARKS}
    conversation = _read_columns(facts._CONVERSATIONS_SQL, Conversation)
    assert conversation <= set(migration.CONVERSATION_COLUMNS)
    assert _read_columns(facts._MESSAGES_SQL, Message) <= marks["conversations_message"]
    events = _read_columns(facts._EVENTS_SQL, ConversationEvent)
    assert events <= marks["conversations_conversationevent"]
    assert _read_columns(facts._ESCALATIONS_SQL, Escalation) <= marks["conversations_escalation"]


# --- Events ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EventKind))
def test_an_event_marks_only_if_the_facts_read_its_kind(conversation, kind):
    ConversationEvent.objects.create(conversation=conversation, kind=kind, data={"x": 1})
    assert marked() == ({conversation.pk} if kind in facts._EVENTS else set())


def test_sqlite_event_triggers_compare_the_kind_without_an_in_list():
    """SQLite builds a temporary index of an IN list for every row a trigger's WHEN sees,
    which cost more than the rest of an event's insert (0011)."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL compares with the array as it is")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
            ["conversations_conversationevent"],
        )
        triggers = [sql for (sql,) in cursor.fetchall()]
    assert len(triggers) == 2
    for sql in triggers:
        assert not re.search(r"\bIN\s*\(", sql, re.IGNORECASE)
        assert all(f"'{kind}'" in sql for kind in migration.EVENT_KINDS)


def test_a_changed_event_marks_if_the_facts_read_its_kind(conversation):
    read = ConversationEvent.objects.create(conversation=conversation, kind=EventKind.REPLY_SENT)
    other = ConversationEvent.objects.create(conversation=conversation, kind=EventKind.TAGGED)
    StaleConversation.objects.all().delete()
    ConversationEvent.objects.filter(pk=other.pk).update(data={"tag": "vip"})
    assert marked() == set()
    ConversationEvent.objects.filter(pk=read.pk).update(data=read.data)  # nothing changed
    assert marked() == set()
    ConversationEvent.objects.filter(pk=read.pk).update(data={"response_seconds": 60})
    assert marked() == {conversation.pk}


def test_an_event_moved_to_another_conversation_marks_both(conversation):
    event = ConversationEvent.objects.create(conversation=conversation, kind=EventKind.REOPENED)
    other = ConversationFactory()
    StaleConversation.objects.all().delete()
    ConversationEvent.objects.filter(pk=event.pk).update(conversation=other)
    assert marked() == {conversation.pk, other.pk}


# --- The conversation's row -------------------------------------------------------------------


def _new_values() -> dict[str, Any]:
    """A value different from the fixture's for each column the facts read."""
    return {
        "contact_id": ContactFactory.create().pk,
        "channel_id": ChannelFactory.create().pk,
        "team_id": TeamFactory.create().pk,
        "assignee_id": UserFactory.create().pk,
        "priority": Priority.URGENT,
        "status": Status.RESOLVED,
        "is_monitoring": True,
        "created_at": AT - timedelta(hours=1),
        "resolved_at": AT + timedelta(hours=1),
        "sla_policy_id": SlaPolicyFactory.create().pk,
        "message_count": 5,
        "inbound_count": 3,
    }


def test_a_new_conversation_is_marked():
    c = ConversationFactory()
    assert marked() == {c.pk}


@pytest.mark.parametrize("column", migration.CONVERSATION_COLUMNS)
def test_a_change_of_a_column_the_facts_read_marks(conversation, column):
    value = _new_values()[column]
    Conversation.objects.filter(pk=conversation.pk).update(
        **{column: getattr(conversation, column)}
    )
    assert marked() == set()
    Conversation.objects.filter(pk=conversation.pk).update(**{column: value})
    assert marked() == {conversation.pk}


def test_the_inbox_columns_do_not_mark(conversation):
    Conversation.objects.filter(pk=conversation.pk).update(
        subject="Another subject",
        last_message_preview="Thanks!",
        last_message_at=AT + timedelta(minutes=5),
        last_message_direction=Direction.OUT,
        waiting_since=AT,
        sentiment=0.5,
        sla_due_at=AT + timedelta(hours=1),
        snoozed_until=AT + timedelta(days=1),
        thread_key="thread:other",
    )
    conversation.refresh_from_db()
    conversation.save()  # every column written, none changed
    assert marked() == set()


def test_ingest_marks_new_conversations_and_those_that_got_a_message():
    channel = ChannelFactory()
    first = ingest(channel=channel, posts=[post("p1", author="a"), post("p2", author="b")])
    assert marked() == set(first.conversation_ids)
    StaleConversation.objects.all().delete()
    later = AT + timedelta(hours=1)
    ingest(channel=channel, posts=[post("p3", author="a", reply_to="p1", at=later)])
    assert marked() == {Conversation.objects.get(messages__external_id="p1").pk}


# --- Contacts -------------------------------------------------------------------------------


def test_the_contact_columns_the_facts_read_are_watched():
    contact_marks = importlib.import_module("kpis.migrations.0018_contact_marks")
    read = _read_columns(facts._CONTACTS_SQL, Contact)
    # The attributes are read for an erasure, which removes the VIP mark: watched through it.
    assert read - {"attributes"} <= set(contact_marks.COLUMNS)


def test_a_contacts_vip_mark_or_source_marks_all_its_conversations():
    contact = ContactFactory(is_vip=False)
    mine = {ConversationFactory(contact=contact).pk for _ in range(2)}
    ConversationFactory()  # someone else's
    StaleConversation.objects.all().delete()
    contact_update(
        contact=contact,
        data=ContactData(name=contact.name, email=contact.email, is_vip=True),
        actor=UserFactory(),
    )
    assert marked() == mine
    StaleConversation.objects.all().delete()
    Contact.objects.filter(pk=contact.pk).update(source=ContactSource.IMPORT)
    assert marked() == mine


def test_contact_changes_the_facts_do_not_read_do_not_mark():
    contact = ContactFactory(is_vip=True)
    ConversationFactory(contact=contact)
    StaleConversation.objects.all().delete()
    contact.name, contact.company = "Someone else", "Elsewhere"
    contact.save()  # every column written, the two the facts read unchanged
    Contact.objects.filter(pk=contact.pk).update(last_seen_at=AT + timedelta(days=1))
    assert marked() == set()


def test_a_refresh_after_a_vip_mark_gives_what_a_rebuild_gives():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("v1", author="vip"), post("v2", author="other", at=AT)])
    facts.facts_refresh()
    contact = Message.objects.get(external_id="v1").conversation.contact
    Contact.objects.filter(pk=contact.pk).update(is_vip=True)
    facts.facts_refresh()
    refreshed = list(ConversationFact.objects.order_by("pk").values())
    assert [f["is_vip"] for f in refreshed] == [True, False]
    facts.facts_rebuild()
    assert list(ConversationFact.objects.order_by("pk").values()) == refreshed


@pytest.mark.django_db(transaction=True)
def test_the_contact_marks_migration_applies_and_reverses():
    name = "kpis_contact_marks_update"

    def present() -> bool:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT 1 FROM pg_trigger WHERE tgname = %s", [name])
            else:
                cursor.execute("SELECT 1 FROM sqlite_master WHERE name = %s", [name])
            return cursor.fetchone() is not None

    assert present()
    try:
        call_command("migrate", "kpis", "0017", verbosity=0)
        assert not present()
    finally:
        call_command("migrate", "kpis", verbosity=0)
    assert present()


# --- Messages and escalations ---------------------------------------------------------------


def test_a_message_marks_when_a_column_the_facts_read_changes(conversation):
    reply = MessageFactory(
        conversation=conversation,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        delivery_status=DeliveryStatus.QUEUED,
        external_id=None,
    )
    StaleConversation.objects.all().delete()
    Message.objects.filter(pk=reply.pk).update(body="Edited", language="en", keywords=["x"])
    assert marked() == set()
    Message.objects.filter(pk=reply.pk).update(delivery_status=DeliveryStatus.SENT)
    assert marked() == {conversation.pk}
    StaleConversation.objects.all().delete()
    Message.objects.filter(pk=reply.pk).update(sentiment=-0.4)
    assert marked() == {conversation.pk}


def test_an_escalation_marks_when_created_or_its_outcome_changes(conversation):
    escalation = Escalation.objects.create(
        conversation=conversation,
        department=DepartmentFactory(),
        trigger=EscalationTrigger.AGENT,
        reason="Refund",
    )
    assert marked() == {conversation.pk}
    StaleConversation.objects.all().delete()
    Escalation.objects.filter(pk=escalation.pk).update(reason="", answer="Refunded")
    assert marked() == set()
    Escalation.objects.filter(pk=escalation.pk).update(
        outcome=EscalationOutcome.RESOLVED_BY_DEPARTMENT
    )
    assert marked() == {conversation.pk}


def test_each_change_moves_the_version_on(conversation):
    ConversationEvent.objects.create(conversation=conversation, kind=EventKind.SLA_BREACHED)
    Conversation.objects.filter(pk=conversation.pk).update(priority=Priority.HIGH)
    assert StaleConversation.objects.get().version == 2


# --- The migration ----------------------------------------------------------------------------


def _triggers() -> set[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'kpis_stale_%%'")
        else:
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'kpis_stale_%'"
            )
        return {name for (name,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_the_migration_applies_and_reverses():
    new = {name for name, _ in migration.triggers()}
    assert _triggers() == new
    try:
        call_command("migrate", "kpis", "0003", verbosity=0)
        assert _triggers() == {
            "kpis_stale_conversation_insert",
            "kpis_stale_conversation_update",
            "kpis_stale_conversationevent_insert",
        }
        c = ConversationFactory()
        ConversationEvent.objects.create(conversation=c, kind=EventKind.TAGGED)
        assert StaleConversation.objects.get(conversation_id=c.pk).version == 2
    finally:
        call_command("migrate", "kpis", verbosity=0)
    assert _triggers() == new
    StaleConversation.objects.all().delete()
    ConversationEvent.objects.create(conversation=c, kind=EventKind.TAGGED)
    assert marked() == set()
