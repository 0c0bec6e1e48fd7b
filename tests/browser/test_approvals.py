"""An agent's reply with a banned term waits for approval in a real browser; a manager
approves it from the approvals queue and the reply goes out once."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from channels_ingest.pipeline import ingest
from conversations.models import Conversation, DeliveryStatus, Direction, Message
from governance.models import ApprovalStatus, PolicyAction, PublishingPolicy, Role
from governance.services import roles_ensure
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
    post,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REPLY = "Sorry about that! We will refund the second charge today."


@pytest.fixture
def setup():
    roles_ensure()
    care = TeamFactory(name="Customer Care", slug="care")
    agent = UserFactory(username="jamie", first_name="Jamie", last_name="Chen", role=Role.AGENT)
    manager = UserFactory(username="sam", first_name="Sam", last_name="Rivera", role=Role.MANAGER)
    TeamMembershipFactory(team=care, user=agent)
    TeamMembershipFactory(team=care, user=manager)
    channel = ChannelFactory(name="Acme on Demo", default_team=care)
    ChannelAccessFactory(channel=channel, team=care)
    PublishingPolicy.objects.create(
        channel=channel, banned_terms=["refund"], banned_action=PolicyAction.APPROVE
    )
    ingest(
        channel=channel,
        posts=[
            post(
                "p-charged-twice",
                author="u-dana",
                handle="dana_k",
                body="You charged me twice for order 1182!",
                at=timezone.now() - timedelta(minutes=10),
            )
        ],
    )
    return {"conversation": Conversation.objects.get()}


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


def test_a_manager_approves_a_held_reply_and_it_is_sent(page, live_server, setup, screenshot):
    conversation = setup["conversation"]
    nav = page.get_by_role("navigation", name="Main")

    _log_in(page, live_server, "jamie")
    expect(nav.get_by_role("link", name=re.compile("^Approvals"))).to_have_count(0)
    page.goto(f"{live_server.url}/inbox/{conversation.pk}/")
    page.get_by_label(re.compile(r"^Reply on")).fill(REPLY)
    # The check runs while typing: the agent knows before sending.
    verdict = page.locator("#reply-verdict")
    expect(verdict).to_contain_text("It will wait for approval")
    expect(verdict).to_contain_text("It contains the banned term “refund”.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Waiting for approval: It contains the banned term “refund”."
    )
    reply = page.locator("li.msg.out").last
    expect(reply).to_contain_text(REPLY)
    expect(reply.locator(".badge.status-pending")).to_have_text("Waiting for approval")
    screenshot("approvals_waiting_reply")
    _log_out(page)

    _log_in(page, live_server, "sam")
    approvals_link = nav.get_by_role("link", name=re.compile("^Approvals"))
    expect(approvals_link).to_contain_text("1")
    approvals_link.click()
    expect(page.get_by_role("heading", name="Approvals", exact=True)).to_be_visible()
    item = page.locator("article.approval")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("Acme on Demo")
    expect(item).to_contain_text(REPLY)
    expect(item).to_contain_text("Written by Jamie Chen")
    expect(item).to_contain_text("It contains the banned term “refund”.")
    reject = item.locator("summary", has_text="Reject")
    reject.click()  # the note field opens: the screenshot shows every action
    expect(item.get_by_label("Note for Jamie Chen")).to_be_visible()
    screenshot("approvals")
    reject.click()
    item.get_by_role("button", name="Approve and send").click()
    expect(page.get_by_role("status")).to_contain_text("Approved: the message is on its way.")
    expect(page.get_by_text("Nothing waits for your approval.")).to_be_visible()
    expect(approvals_link).to_have_text("Approvals")

    page.goto(f"{live_server.url}/inbox/{conversation.pk}/")
    reply = page.locator("li.msg.out").last
    expect(reply).to_contain_text(REPLY)
    expect(reply.locator(".delivery-sent")).to_have_text("Sent")
    screenshot("approvals_sent")

    message = Message.objects.get(conversation=conversation, direction=Direction.OUT)
    assert message.delivery_status == DeliveryStatus.SENT
    assert message.approval.status == ApprovalStatus.APPROVED
    assert message.approval.decided_by.username == "sam"


def test_an_admin_tests_a_message_against_the_policy(page, live_server, setup, screenshot):
    UserFactory(username="morgan", first_name="Morgan", last_name="Lee", role=Role.ADMIN)
    _log_in(page, live_server, "morgan")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Governance").click()
    page.get_by_role("link", name="Publishing policies").click()
    expect(page.get_by_role("heading", name="Publishing policies")).to_be_visible()
    expect(page.get_by_role("table")).to_contain_text("Acme on Demo")
    page.get_by_label("Sent by").select_option(label="Jamie Chen")
    page.get_by_label("Message", exact=True).fill("Refund to card 4111 1111 1111 1111")
    page.get_by_role("button", name="Check").click()
    result = page.locator("#policy-test-result")
    expect(result).to_contain_text("Refused: it would not be sent.")
    expect(result).to_contain_text("It contains a payment card number (…1111).")
    expect(result).not_to_contain_text("4111 1111")
    screenshot("policies")

    page.get_by_role("link", name="Edit Acme on Demo").click()
    expect(page.get_by_role("heading", name="Publishing policy of Acme on Demo")).to_be_visible()
    expect(page.get_by_label("Banned terms", exact=True)).to_have_value("refund")
    page.get_by_label("When a link is found").select_option(label="Refuse")
    page.get_by_label("Quiet hours from").fill("22:00")
    page.get_by_label("Quiet hours until").fill("7:00")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot("policy_form")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("status")).to_contain_text("Publishing policy of Acme on Demo saved.")
    expect(page.get_by_role("table")).to_contain_text(re.compile(r"22:00.07:00"))
    policy = PublishingPolicy.objects.get(channel__name="Acme on Demo")
    assert policy.links_action == PolicyAction.BLOCK
