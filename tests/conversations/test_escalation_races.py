"""Escalations under concurrent and repeated requests: a raise goes one level above the one
seen, an answer answers the level it was checked for, and who support handed a conversation to
while an outside department worked on it keeps it."""

import re
from urllib.parse import urlsplit

import pytest

from conversations import escalation_views
from conversations.escalations import (
    escalation_answer_url,
    escalation_raise,
)
from conversations.models import (
    DepartmentDelivery,
    Escalation,
    EscalationStatus,
    Message,
    MessageKind,
    Status,
)
from conversations.services import conversation_assign
from governance.models import Role
from tests.conversations.test_escalations import (  # noqa: F401 (mounts /escalations/)
    _escalate,
    urlpatterns,
)
from tests.factories import (
    DepartmentFactory,
    EscalationLevelFactory,
    EscalationPathFactory,
    TeamMembershipFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def _email_department(name, address):
    return DepartmentFactory(name=name, delivery=DepartmentDelivery.EMAIL, team=None, email=address)


def _path(name, *targets):
    path = EscalationPathFactory(name=name)
    for position, target in enumerate(targets):
        if hasattr(target, "delivery"):
            EscalationLevelFactory(path=path, position=position, department=target)
        else:
            EscalationLevelFactory(path=path, position=position, user=target)
    return path


# --- A raise asks for the next level of the one seen -----------------------------------------


def test_submitting_the_raise_form_twice_does_not_climb_two_levels(
    login, world, conversation, tier2
):
    billing = DepartmentFactory(name="Billing")
    path = _path("Three steps", tier2, billing, world.manager)
    escalation = _escalate(conversation, world.agent_a, path=path)

    page = login(world.agent_a).get(f"/inbox/{conversation.pk}/").content.decode()
    form = re.search(
        rf'<form method="post" action="/escalations/{escalation.pk}/raise/">(.*?)</form>',
        page,
        re.S,
    )
    assert form is not None and "Raise to level 2" in form[1]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form[1]))

    client = login(world.agent_a)
    client.post(f"/escalations/{escalation.pk}/raise/", fields)  # the click
    client.post(f"/escalations/{escalation.pk}/raise/", fields)  # the double click / colleague

    escalation.refresh_from_db()
    # The page asked for level 2 (Billing); the manager was never asked for.
    assert (escalation.level, escalation.department) == (1, billing)


# --- An answer is for the level it was checked against --------------------------------------


def test_a_link_back_answer_racing_a_raise_does_not_answer_the_next_level(
    client, world, conversation, monkeypatch
):
    logistics = _email_department("Logistics", "logistics@example.com")
    path = _path("Outside then manager", logistics, world.manager)
    escalation = _escalate(conversation, world.agent_a, path=path)
    link = urlsplit(escalation_answer_url(escalation=escalation)).path

    original = escalation_views.escalation_from_token

    def token_read_then_raised_meanwhile(token):
        found = original(token)  # level 0's link is still valid here
        # Meanwhile, in another request, an SLA breach (or the agent) raises to the manager.
        escalation_raise(escalation=Escalation.objects.get(pk=found.pk), actor=None)
        return found

    monkeypatch.setattr(escalation_views, "escalation_from_token", token_read_then_raised_meanwhile)
    page = client.post(link, {"name": "Lena", "answer": "Parcel is at the depot.", "outcome": ""})
    # As if opened now: the link no longer answers anything.
    assert page.status_code == 404 and "This link is not valid" in page.content.decode()

    escalation.refresh_from_db()
    # Level 0's link no longer answers: the manager still has to answer level 2.
    assert escalation.level == 1
    assert escalation.status == EscalationStatus.OPEN
    assert not Message.objects.filter(conversation=conversation, kind=MessageKind.NOTE).exists()


def test_an_in_app_answer_racing_a_raise_is_refused_to_the_level_left_behind(
    login, world, conversation, tier2, monkeypatch
):
    path = _path("Tier 2 then manager", tier2, world.manager)
    escalation = _escalate(conversation, world.agent_a, path=path)
    dana = tier2.team.members.get()

    original = escalation_views.escalation_answerable_by

    def checked_then_raised_meanwhile(*, escalation, user):
        allowed = original(escalation=escalation, user=user)
        escalation_raise(escalation=Escalation.objects.get(pk=escalation.pk), actor=None)
        return allowed

    monkeypatch.setattr(escalation_views, "escalation_answerable_by", checked_then_raised_meanwhile)
    login(dana).post(
        f"/escalations/{escalation.pk}/answer/",
        {"answer": "Refund approved", "outcome": "resolved_by_department"},
    )

    escalation.refresh_from_db()
    # Dana (Tier 2) no longer answers an escalation that waits on the manager.
    assert escalation.level == 1
    assert escalation.status == EscalationStatus.OPEN


# --- Support's hand-over while an outside department works is kept ---------------------------


def test_raising_between_outside_departments_keeps_a_reassignment_made_while_it_waited(
    world, conversation
):
    carol = UserFactory(username="carol", role=Role.AGENT)
    TeamMembershipFactory(team=world.team_a, user=carol)
    logistics = _email_department("Logistics", "logistics@example.com")
    warehouse = _email_department("Warehouse", "warehouse@example.com")
    path = _path("Outside", logistics, warehouse)
    escalation = _escalate(conversation, world.agent_a, path=path)
    # Support keeps the conversation while an outside department works on it: Bob is off
    # sick and the manager hands it to Carol.
    conversation_assign(conversation=conversation, assignee=carol, actor=world.manager)

    escalation_raise(escalation=escalation, actor=carol, reason="Logistics does not answer")

    conversation.refresh_from_db()
    assert conversation.status == Status.ESCALATED
    assert conversation.assignee == carol
