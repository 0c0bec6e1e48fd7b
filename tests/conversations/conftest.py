"""Fixtures the escalation tests share."""

import pytest

from conversations.models import Status
from governance.models import Role
from tests.factories import DepartmentFactory, TeamFactory, TeamMembershipFactory, UserFactory


@pytest.fixture
def tier2(world):
    """A second-level team outside the channel's teams, with one member, as a department."""
    team = TeamFactory(name="Tier 2")
    dana = UserFactory(username="dana", role=Role.AGENT)
    TeamMembershipFactory(team=team, user=dana)
    department = DepartmentFactory(name="Tier 2", team=team)
    return department


@pytest.fixture
def conversation(world):
    """Conversation A, assigned to Bob on team A."""
    conversation = world.conversation_a
    conversation.assignee = world.agent_a
    conversation.status = Status.OPEN
    conversation.save()
    return conversation
