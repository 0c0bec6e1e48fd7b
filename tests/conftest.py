"""Shared fixtures: a persona set (admin, manager, agent on team A, agent on team B, anonymous)
and a channel per team with a conversation on channel A."""

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from channels_ingest.models import ChannelAccount
from conversations.models import Conversation
from governance.models import Role, Team
from scrm.celery import app as celery_app
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    ConversationFactory,
    IdentityFactory,
    MessageFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
)


@pytest.fixture(autouse=True)
def _isolated_services(settings):
    """Tests run tasks in-process and keep the cache in memory."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    cache.clear()  # ids are reused from test to test; what the cache knew of them is not
    # A deliberately slow hash protects real passwords; tests need none of that cost.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True


@dataclass
class World:
    team_a: Team
    team_b: Team
    admin: User
    manager: User
    agent_a: User
    agent_b: User
    channel_a: ChannelAccount
    channel_b: ChannelAccount
    conversation_a: Conversation
    conversation_b: Conversation

    def persona(self, name: str) -> User | None:
        return None if name == "anonymous" else getattr(self, name)


@pytest.fixture
def world(db):
    team_a, team_b = TeamFactory(name="Team A"), TeamFactory(name="Team B")
    admin = UserFactory(username="alice", role=Role.ADMIN)
    manager = UserFactory(username="mona", role=Role.MANAGER)
    agent_a = UserFactory(username="bob", role=Role.AGENT)
    agent_b = UserFactory(username="charlie", role=Role.AGENT)
    TeamMembershipFactory(team=team_a, user=manager)
    TeamMembershipFactory(team=team_a, user=agent_a)
    TeamMembershipFactory(team=team_b, user=agent_b)
    channel_a = ChannelFactory(name="Channel A", default_team=team_a)
    channel_b = ChannelFactory(name="Channel B", default_team=team_b)
    ChannelAccessFactory(channel=channel_a, team=team_a)
    ChannelAccessFactory(channel=channel_b, team=team_b)
    conversations = []
    for channel, team in ((channel_a, team_a), (channel_b, team_b)):
        identity = IdentityFactory()
        conversation = ConversationFactory(
            channel=channel, team=team, contact=identity.contact, subject=f"About {channel.name}"
        )
        MessageFactory(conversation=conversation, author_identity=identity)
        conversations.append(conversation)
    return World(
        team_a, team_b, admin, manager, agent_a, agent_b, channel_a, channel_b, *conversations
    )


@pytest.fixture
def login(client: Client):
    def as_user(user: User | None) -> Client:
        client.logout()
        if user is not None:
            client.force_login(user)
        return client

    return as_user


@pytest.fixture(autouse=True)
def _no_dns(monkeypatch):
    """Webhook addresses are resolved before each call (to refuse private ones); tests
    resolve names to a public documentation address instead of asking DNS."""
    import ipaddress

    from conversations import webhook_guard

    def resolve(host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            return ["127.0.0.1"] if host == "localhost" else ["93.184.216.34"]

    monkeypatch.setattr(webhook_guard, "_addresses", resolve)
