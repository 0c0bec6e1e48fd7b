"""An agent's day in a real browser: log in, filter the inbox, open, reply, note, resolve."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from channels_ingest.demo_seed import DEMO_PASSWORD, seed_demo
from conversations.models import (
    Conversation,
    DeliveryStatus,
    Direction,
    EventKind,
    Message,
    Status,
)

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


def test_an_agent_reads_back_through_a_long_thread_and_down_the_inbox(
    page, live_server, screenshot, settings
):
    settings.SCRM_THREAD_PAGE_SIZE = 20
    settings.SCRM_TIMELINE_PAGE_SIZE = 5
    settings.SCRM_INBOX_PAGE_SIZE = 10
    seed_demo(days=14)
    conversation = (
        Conversation.objects.filter(status=Status.OPEN, channel__name__contains="X")
        .order_by("-last_message_at")
        .first()
    )
    for i in range(12):
        conversation.events.create(
            kind=EventKind.RULE_APPLIED,
            data={"name": f"Rule {i}"},
            created_at=conversation.created_at + timedelta(seconds=i),
        )
    events = conversation.events.count()
    first = conversation.messages.order_by("created_at", "id").first()
    start = first.created_at - timedelta(days=3)
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            channel_id=conversation.channel_id,
            direction=Direction.IN if i % 2 else Direction.OUT,
            kind="mention" if i % 2 else "reply",
            external_id=f"long-thread-{i}" if i % 2 else None,
            body=f"Earlier message {i}",
            created_at=start + timedelta(minutes=i),
            received_at=start + timedelta(minutes=i),
            delivery_status=DeliveryStatus.RECEIVED if i % 2 else DeliveryStatus.SENT,
        )
        for i in range(45)
    )
    total = conversation.messages.count()
    _log_in(page, live_server, "agent")

    # The inbox: "Load more" appends the next page below the rows already there.
    rows = page.locator("a.row")
    expect(rows).to_have_count(10)
    first_ids = rows.evaluate_all("rows => rows.map(r => r.dataset.conversation)")
    page.get_by_role("link", name="Load more").click()
    expect(rows).to_have_count(20)
    all_ids = rows.evaluate_all("rows => rows.map(r => r.dataset.conversation)")
    assert all_ids[:10] == first_ids and len(set(all_ids)) == 20

    page.goto(f"{live_server.url}/inbox/{conversation.pk}/")
    messages = page.locator("li.msg")
    expect(messages).to_have_count(20)
    expect(messages.last).not_to_contain_text("Earlier message")
    page.get_by_role("link", name="Show earlier messages").scroll_into_view_if_needed()
    screenshot("conversation-long-thread")
    while page.get_by_role("link", name="Show earlier messages").count():
        shown = messages.count()
        page.get_by_role("link", name="Show earlier messages").click()
        expect(messages).not_to_have_count(shown)
    expect(messages).to_have_count(total)
    expect(messages.first).to_contain_text("Earlier message 0")
    expect(messages.nth(44)).to_contain_text("Earlier message 44")
    ids = messages.evaluate_all("items => items.map(m => m.id)")
    assert len(set(ids)) == total
    screenshot("conversation-earlier-messages")

    # The timeline beside it pages on the same way, older events below.
    entries = page.locator("ol.timeline > li:not(.older)")
    expect(entries).to_have_count(5)
    while page.get_by_role("link", name="Show older events").count():
        shown = entries.count()
        page.get_by_role("link", name="Show older events").click()
        expect(entries).not_to_have_count(shown)
    expect(entries).to_have_count(events)
    expect(page.locator("ol.timeline")).to_contain_text("“Rule 0”")
    entries.last.scroll_into_view_if_needed()
    screenshot("conversation-older-events")


def test_the_inbox_poll_announces_new_work_and_updates_the_view_counts(
    page, live_server, screenshot, settings
):
    settings.SCRM_INBOX_COUNTS_SECONDS = 1
    seed_demo(days=14)
    _log_in(page, live_server, "agent")
    # Nothing was counted for this user yet: the page comes without counts and its poll,
    # run as soon as it has loaded, fills them in.
    unassigned = page.locator("#view-count-unassigned")
    expect(unassigned).to_have_text(re.compile(r"^\d+$"))
    before = int(unassigned.inner_text())
    seen = Conversation.objects.filter(channel__name__contains="X").first()
    Conversation.objects.create(
        contact=seen.contact,
        channel=seen.channel,
        team=seen.team,
        subject="Where is my order?",
        last_message_at=timezone.now(),
    )
    page.wait_for_timeout(1100)  # the counts are due again
    # The poll runs every 15 s; run it now, as htmx does.
    page.evaluate(
        "htmx.ajax('GET', document.querySelector('#updates').getAttribute('hx-get'),"
        " {target: '#updates', swap: 'innerHTML'})"
    )
    expect(unassigned).to_have_text(str(before + 1))
    expect(page.locator("#updates")).to_contain_text("1 new or updated conversation")
    screenshot("inbox-announced")
