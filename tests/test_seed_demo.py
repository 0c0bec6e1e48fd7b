import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from channels_ingest.demo_seed import DEMO_USERS, seed_demo
from channels_ingest.models import ChannelAccount
from contacts.models import Contact
from conversations.models import (
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    EscalationPath,
    Message,
    RoutingRule,
    Status,
)
from conversations.rules import rule_validate
from conversations.settings_forms import Catalog
from governance.roles import role_of

pytestmark = pytest.mark.django_db


def _counts() -> dict[str, int]:
    return {
        "users": User.objects.count(),
        "channels": ChannelAccount.objects.count(),
        "contacts": Contact.objects.count(),
        "conversations": Conversation.objects.count(),
        "messages": Message.objects.count(),
        "events": ConversationEvent.objects.count(),
    }


def test_seed_demo_creates_every_role_and_a_realistic_history():
    report = seed_demo(days=12)
    assert report.users_created == len(DEMO_USERS)
    for person in DEMO_USERS:
        user = User.objects.get(username=person.username)
        assert role_of(user) == person.role
        assert user.check_password("social-crm-demo")
    assert Contact.objects.count() > 30
    assert Conversation.objects.filter(status=Status.RESOLVED).exists()
    assert Conversation.objects.filter(status__in=[Status.NEW, Status.OPEN]).exists()
    assert Conversation.objects.filter(is_monitoring=True).exists()
    assert Message.objects.filter(delivery_status=DeliveryStatus.SENT).exists()
    assert all(c.cursor.get("seq") for c in ChannelAccount.objects.all())


def test_seed_demo_run_twice_changes_nothing():
    call_command("seed_demo", days=5)
    before = _counts()
    call_command("seed_demo", days=5)
    assert _counts() == before


def test_demo_replies_are_dated_when_they_were_written():
    from conversations.models import EventKind

    seed_demo(days=6)
    reply = Message.objects.filter(delivery_status=DeliveryStatus.SENT).order_by("created_at")[0]
    assert reply.sent_at == reply.created_at
    event = ConversationEvent.objects.get(kind=EventKind.MESSAGE_SENT, data__message_id=reply.pk)
    assert event.created_at == reply.created_at


def test_the_demo_routing_setup_is_valid_and_times_the_history():
    seed_demo(days=3)
    known = Catalog.load().known()
    rules = list(RoutingRule.objects.all())
    assert len(rules) >= 5
    for rule in rules:
        rule_validate(
            events=rule.events,
            match=rule.match,
            conditions=rule.conditions,
            actions=rule.actions,
            known=known,
        )
    assert Conversation.objects.filter(sla_policy__isnull=False).exists()
    assert EscalationPath.objects.get(name="Billing disputes").levels.count() == 2
