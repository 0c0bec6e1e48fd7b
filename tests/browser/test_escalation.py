"""An agent escalates a conversation under an SLA to the Billing department in a real browser;
a billing agent without access to the channel answers it from their queue, and the first agent
gets it back with the answer as a note."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from channels_ingest.pipeline import ingest
from conversations.models import Conversation, EscalationStatus, SlaPolicy, Status
from governance.models import Role
from governance.services import roles_ensure
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    DepartmentFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
    post,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ANSWER = "We refunded the second charge today; it shows on the card within 5 days."


@pytest.fixture
def setup():
    roles_ensure()
    care = TeamFactory(name="Customer Care", slug="care")
    billing = TeamFactory(name="Billing", slug="billing")
    agent = UserFactory(username="jamie", first_name="Jamie", last_name="Chen", role=Role.AGENT)
    TeamMembershipFactory(team=care, user=agent)
    # Billing's agent has no access to the channel: only the escalation shows them the case.
    billing_agent = UserFactory(
        username="riley", first_name="Riley", last_name="Patel", role=Role.AGENT
    )
    TeamMembershipFactory(team=billing, user=billing_agent)
    channel = ChannelFactory(name="Acme on Demo", default_team=care)
    ChannelAccessFactory(channel=channel, team=care)
    SlaPolicy.objects.create(
        name="Standard", first_response_minutes=4 * 60, resolution_minutes=24 * 60
    )
    DepartmentFactory(name="Billing", team=billing)
    ingest(
        channel=channel,
        posts=[
            post(
                "p-charged-twice",
                author="u-dana",
                handle="dana_k",
                body="You charged me twice for order 1182, I want my money back!",
                at=timezone.now() - timedelta(minutes=10),
            )
        ],
    )
    conversation = Conversation.objects.get()
    assert conversation.sla_policy is not None
    return {"agent": agent, "billing_agent": billing_agent, "conversation": conversation}


def _log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/inbox/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


def _log_out(page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def test_a_department_answers_an_escalation_and_the_agent_gets_it_back(
    page, live_server, setup, screenshot
):
    conversation = setup["conversation"]
    panel = page.locator("#escalation")
    service_level = page.get_by_role("region", name="Service level")

    _log_in(page, live_server, "jamie")
    row = page.locator(f"a.row[data-conversation='{conversation.pk}']")
    expect(row.locator(".badge.sla")).to_have_text(re.compile(r"^SLA due in "))
    screenshot("escalation_inbox")

    row.click()
    expect(service_level).to_contain_text("Standard")
    expect(service_level).to_contain_text("First response")
    expect(service_level).to_contain_text("Resolution")
    expect(panel).to_contain_text("Not escalated.")
    page.get_by_role("button", name="Assign to me").click()
    expect(page.get_by_label("Assignee")).to_have_value(str(setup["agent"].pk))

    panel.get_by_label("Escalate to").select_option(label="Billing")
    panel.get_by_label("Why").fill("Double charge on order 1182: please refund one.")
    panel.get_by_role("button", name="Escalate").click()
    expect(page.get_by_role("status")).to_contain_text("Escalated to Billing.")
    expect(page.locator(".conv-head .badge").first).to_have_text("Escalated")
    expect(panel).to_contain_text("Waiting for the department")
    expect(panel).to_contain_text("Double charge on order 1182")
    expect(panel).to_contain_text("Jamie Chen")
    # Jamie is not in Billing: the answer form is for the department.
    expect(panel.get_by_label("Answer for support")).to_have_count(0)
    service_level.scroll_into_view_if_needed()
    screenshot("escalation_workspace")
    _log_out(page)

    _log_in(page, live_server, "riley")
    page.locator("nav.views").get_by_role("link", name=re.compile(r"^Escalated")).click()
    expect(page).to_have_url(re.compile(r"view=escalated"))
    expect(row).to_be_visible()
    expect(row.locator(".badge[class*='status-']")).to_have_text("Escalated")
    row.click()
    expect(panel.get_by_label("Answer for support")).to_be_visible()
    panel.get_by_label("Answer for support").fill(ANSWER)
    panel.get_by_label("Outcome").select_option(label="Answer — support replies")
    panel.get_by_role("button", name="Send answer").click()
    # Back with support, the channel is out of Riley's sight again.
    expect(page.get_by_role("status")).to_contain_text("Answer sent back to support.")
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    expect(row).to_have_count(0)
    _log_out(page)

    _log_in(page, live_server, "jamie")
    page.goto(f"{live_server.url}/inbox/{conversation.pk}/")
    expect(page.locator(".conv-head .badge").first).to_have_text("Open")
    expect(page.get_by_label("Assignee")).to_have_value(str(setup["agent"].pk))
    expect(page.locator("li.msg.note").last).to_contain_text(
        f"Answer from Billing (Riley Patel): {ANSWER}"
    )
    expect(panel).to_contain_text("Answered, back with support")
    expect(panel).to_contain_text(ANSWER)
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("Escalated · Jamie Chen → Billing")
    expect(timeline).to_contain_text("Returned from escalation · Riley Patel")
    panel.scroll_into_view_if_needed()
    screenshot("escalation_answered")

    conversation.refresh_from_db()
    assert conversation.status == Status.OPEN
    assert conversation.assignee == setup["agent"]
    escalation = conversation.escalations.get()
    assert escalation.status == EscalationStatus.RETURNED
    assert escalation.answered_by == setup["billing_agent"]


def test_a_settled_escalation_and_paused_clocks_read_as_such_in_the_workspace(
    page, live_server, setup, screenshot
):
    from conversations.escalations import escalation_answer, escalation_open
    from conversations.models import Department, EscalationOutcome, EscalationTrigger
    from conversations.services import conversation_status_set

    conversation = setup["conversation"]
    escalation = escalation_open(
        conversation=conversation,
        trigger=EscalationTrigger.AGENT,
        actor=setup["agent"],
        reason="Double charge on order 1182",
        department=Department.objects.get(name="Billing"),
    )
    escalation_answer(
        escalation=escalation,
        answer="Refunded the second charge.",
        outcome=EscalationOutcome.RESOLVED_BY_DEPARTMENT,
        answered_by=setup["billing_agent"],
    )
    conversation.refresh_from_db()
    conversation_status_set(conversation=conversation, status=Status.PENDING, actor=setup["agent"])

    _log_in(page, live_server, "jamie")
    page.goto(f"{live_server.url}/inbox/{conversation.pk}/")
    panel = page.locator("#escalation")
    expect(panel).to_contain_text("Closed")
    expect(panel).to_contain_text("Resolved by the department")
    expect(panel).to_contain_text("Refunded the second charge.")
    expect(panel.get_by_label("Escalate to")).to_be_visible()
    service_level = page.get_by_role("region", name="Service level")
    expect(service_level).to_contain_text(re.compile(r"First response\s*paused with 3h \d\dm left"))
    expect(service_level).not_to_contain_text("overdue")
    service_level.scroll_into_view_if_needed()
    screenshot("escalation_settled_paused")
