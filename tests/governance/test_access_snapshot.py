"""A user's access (role, teams, channels, approver) is read in one query and kept for the
request."""

import pytest
from django.contrib.auth.models import AnonymousUser, User

from conversations.models import Escalation, EscalationStatus
from governance.access import access_forget, access_of
from governance.models import PublishingPolicy, Role
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    DepartmentFactory,
    TeamFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def _fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)


def test_one_query_answers_every_question_and_the_answer_is_kept(world, django_assert_num_queries):
    listen_only = ChannelFactory(name="Listen only")
    ChannelAccessFactory(channel=listen_only, team=world.team_a, can_reply=False)
    PublishingPolicy.objects.create().approvers.add(world.agent_a)
    agent = _fresh(world.agent_a)
    with django_assert_num_queries(1):
        access = access_of(agent)
    assert access.role == Role.AGENT
    assert access.teams == ((world.team_a.pk, "Team A"),)
    assert access.visible_channel_ids == {world.channel_a.pk, listen_only.pk}
    assert access.replyable_channel_ids == {world.channel_a.pk}
    assert access.named_approver
    with django_assert_num_queries(0):
        assert access_of(agent) is access


def test_admins_see_every_channel_and_others_only_their_teams(world):
    admin = access_of(_fresh(world.admin))
    assert admin.role == Role.ADMIN
    assert admin.visible_channel_ids is None and admin.replyable_channel_ids is None
    manager = access_of(_fresh(world.manager))
    assert manager.role == Role.MANAGER and not manager.named_approver
    assert manager.visible_channel_ids == {world.channel_a.pk}
    superuser = access_of(UserFactory(is_superuser=True))
    assert superuser.role == Role.ADMIN and superuser.visible_channel_ids is None


def test_a_user_on_two_teams_sees_both_teams_channels_once(world):
    other = TeamFactory(name="Another team")
    ChannelAccessFactory(channel=world.channel_b, team=other, can_reply=False)
    ChannelAccessFactory(channel=world.channel_a, team=other, can_reply=False)
    other.memberships.create(user=world.agent_a)
    access = access_of(_fresh(world.agent_a))
    assert [name for _, name in access.teams] == ["Another team", "Team A"]
    assert access.visible_channel_ids == {world.channel_a.pk, world.channel_b.pk}
    # Replying on channel A comes from team A's access, whatever the other team's says.
    assert access.replyable_channel_ids == {world.channel_a.pk}


def test_without_a_team_or_role_a_user_sees_nothing(db):
    access = access_of(UserFactory())
    assert access.role is None and access.teams == ()
    assert access.visible_channel_ids == frozenset()
    anonymous = access_of(AnonymousUser())
    assert anonymous.role is None and anonymous.visible_channel_ids == frozenset()


def test_forgetting_reads_the_access_again(world):
    agent = _fresh(world.agent_a)
    assert access_of(agent).visible_channel_ids == {world.channel_a.pk}
    ChannelAccessFactory(channel=world.channel_b, team=world.team_a)
    assert access_of(agent).visible_channel_ids == {world.channel_a.pk}
    access_forget(agent)
    assert access_of(agent).visible_channel_ids == {world.channel_a.pk, world.channel_b.pk}


def test_a_user_without_a_team_finds_my_team_empty(login, world):
    admin = login(world.admin)
    response = admin.get("/inbox/?view=team")
    assert response.status_code == 200
    assert response.context["page"].rows == []
    assert login(world.agent_a).get("/inbox/?view=team").context["page"].rows


def test_escalations_can_wait_on_department_teams_and_on_people_they_name(world):
    assert not access_of(_fresh(world.agent_b)).receives_escalations
    department = DepartmentFactory(team=world.team_b)
    assert access_of(_fresh(world.agent_b)).receives_escalations
    department.delivery = "email"
    department.save()
    assert not access_of(_fresh(world.agent_b)).receives_escalations
    escalation = Escalation.objects.create(
        conversation=world.conversation_a, user=world.agent_b, status=EscalationStatus.OPEN
    )
    assert access_of(_fresh(world.agent_b)).receives_escalations
    escalation.status = EscalationStatus.RETURNED
    escalation.save()
    assert not access_of(_fresh(world.agent_b)).receives_escalations
