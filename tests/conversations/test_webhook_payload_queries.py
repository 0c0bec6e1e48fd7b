"""Webhook payloads name each conversation's contact: a batch reads the contacts it lacks in
one query, however many conversations it publishes."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from channels_ingest.pipeline import ingest
from conversations import presence
from conversations.models import RoutingRule, WebhookCall, WebhookEndpoint
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    ContactFactory,
    IdentityFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
    post,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
EVENTS = ["conversation.created", "message.received", "conversation.assigned"]


def _contact_reads(queries):
    return [q["sql"] for q in queries if 'FROM "contacts_contact"' in q["sql"]]


def _ingest_known_authors(channel, count, start):
    """A batch of ``count`` posts, each from a contact known before it."""
    posts = []
    for n in range(start, start + count):
        identity = IdentityFactory(
            contact=ContactFactory(name=f"Known {n}"),
            platform=channel.platform,
            platform_user_id=f"known{n}",
        )
        posts.append(post(f"p{n}", author=identity.platform_user_id, at=T0))
    with CaptureQueriesContext(connection) as captured:
        ingest(channel=channel, posts=posts)
    return captured.captured_queries


def test_contacts_are_read_once_per_batch_for_the_payloads():
    agent = UserFactory(role="agent")
    team = TeamFactory()
    TeamMembershipFactory(team=team, user=agent)
    channel = ChannelFactory(default_team=team)
    ChannelAccessFactory(channel=channel, team=team, can_reply=True)
    presence.agent_seen(user_id=agent.pk)
    RoutingRule.objects.create(
        name="Everyone to the team",
        events=["conversation_created"],
        conditions=[],
        actions=[{"type": "set_team", "value": team.pk}, {"type": "assign", "value": "auto"}],
        position=0,
    )
    WebhookEndpoint.objects.create(name="CRM", url="https://crm.example.com/hook", events=EVENTS)

    small = _contact_reads(_ingest_known_authors(channel, 2, start=0))
    large = _contact_reads(_ingest_known_authors(channel, 6, start=10))

    assert len(large) == len(small) <= 1
    calls = WebhookCall.objects.filter(event__in=EVENTS)
    assert {c.event for c in calls} == set(EVENTS)
    assert calls.filter(event="conversation.created").count() == 8
    names = {c.payload["data"]["conversation"]["contact"]["name"] for c in calls}
    assert names == {f"Known {n}" for n in (0, 1, 10, 11, 12, 13, 14, 15)}
