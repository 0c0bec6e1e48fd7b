"""An agent's day in a real browser: log in, filter the inbox, open, reply, note, resolve."""

import re

import pytest
from playwright.sync_api import expect

from channels_ingest.demo_seed import DEMO_PASSWORD, seed_demo
from conversations.models import Conversation, DeliveryStatus, Direction, Message, Status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/inbox/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


def test_an_agent_works_a_conversation_from_the_inbox(page, live_server, screenshot):
    seed_demo(days=14)
    _log_in(page, live_server, "agent")
    rows = page.locator("a.row")
    expect(rows.first).to_be_visible()
    screenshot("inbox")

    page.get_by_label("Status").select_option("open")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page).to_have_url(re.compile(r"status=open"))
    expect(rows.first).to_be_visible()
    for badge in page.locator("a.row .badge[class*='status-']").all_inner_texts():
        assert badge == "Open"

    rows.first.click()
    expect(page.get_by_role("heading", level=2, name="History across channels")).to_be_visible()
    conversation_id = int(re.search(r"/inbox/(\d+)/", page.url).group(1))

    # Replying over a colleague's assignment asks first; the agent confirms.
    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    assigned_to_colleague = (
        Conversation.objects.filter(pk=conversation_id)
        .exclude(assignee__isnull=True)
        .exclude(assignee__username="agent")
        .exists()
    )
    reply = page.get_by_label(re.compile("^Reply on"))
    reply.fill("Hi! Sorry about that, we're looking into it right now.")
    expect(page.locator("#reply-counter")).to_have_text(re.compile(r"^5\d / 280$"))
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_role("status")).to_contain_text("Reply queued")
    assert bool(dialogs) == assigned_to_colleague
    sent = page.locator("li.msg.out").last
    expect(sent).to_contain_text("we're looking into it")
    expect(sent).to_contain_text("Sent")

    page.get_by_label("Internal note").fill("Customer asked twice already, keep an eye on it.")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator("li.msg.note").last).to_contain_text("keep an eye on it")
    screenshot("conversation")

    page.get_by_label("Assignee").select_option(label="Jamie Chen (me)")
    page.get_by_role("button", name="Assign", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Assigned to")

    # Keyboard: "e" resolves (nothing is focused, so the key is not typed into a field).
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("e")
    expect(page.locator(".conv-head .badge").first).to_have_text("Resolved")

    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.status == Status.RESOLVED
    assert conversation.assignee.username == "agent"
    reply_message = Message.objects.filter(
        conversation=conversation, direction=Direction.OUT, kind__in=["reply", "dm"]
    ).latest("id")
    assert reply_message.delivery_status == DeliveryStatus.SENT
    assert reply_message.external_id.startswith("demo-out-")


def test_a_manager_sees_the_reports(page, live_server, screenshot):
    seed_demo(days=30)
    _log_in(page, live_server, "manager")
    page.get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", name="Reports")).to_be_visible()
    expect(page.locator(".kpi").first).to_be_visible()
    screenshot("reports")
    page.get_by_role("link", name="Last 7 days").click()
    expect(page).to_have_url(re.compile(r"days=7"))
