"""An admin builds a routing rule in a real browser, the demo channel's next poll brings a post
through the real pipeline, and the inbox and the conversation show what the rule did; then the
dry run explains it."""

import re

import pytest
from playwright.sync_api import expect

from channels_ingest.connectors import connector_for
from channels_ingest.services import channel_poll
from conversations.models import RoutingRule, Tag
from governance.models import Role
from governance.services import roles_ensure
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = {
    "rule_editor": "/tmp/rule_editor.png",
    "dry_run": "/tmp/dry_run.png",
    "rule_timeline": "/tmp/rule_timeline.png",
}


@pytest.fixture
def setup():
    roles_ensure()
    team = TeamFactory(name="Customer Care")
    admin = UserFactory(username="alice", first_name="Alice", role=Role.ADMIN)
    TeamMembershipFactory(team=team, user=admin)
    channel = ChannelFactory(name="Acme on Demo", default_team=team)
    ChannelAccessFactory(channel=channel, team=team)
    billing = Tag.objects.create(name="billing", color="#0f766e")
    return {"admin": admin, "channel": channel, "billing": billing}


def _log_in(page, live_server) -> None:
    page.goto(f"{live_server.url}/routing/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Routing rules")).to_be_visible()


def _last_row(page, group: str):
    return page.locator(f"[data-rows='{group}'] [data-row-list] > li").last


def _demo_cursor_bringing(channel, word: str) -> tuple[dict, str]:
    """A cursor from which the demo channel's next poll brings a single post, with ``word``
    in it, and that post's text: what the demo produces follows from the channel and the
    cursor alone."""
    connector = connector_for(channel.platform)
    for polls in range(10_000):
        cursor = {"seq": 0, "polls": polls}
        fetched = connector.fetch(channel, cursor)
        if len(fetched.posts) == 1 and word in fetched.posts[0].body:
            return cursor, fetched.posts[0].body
    raise AssertionError(f"No demo poll brings a post with {word!r}")


def test_an_admin_builds_a_rule_that_routes_the_next_post(page, live_server, setup):
    _log_in(page, live_server)
    page.get_by_role("link", name="New rule").click()
    expect(page.get_by_role("heading", name="New rule")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("Refunds are urgent")
    page.get_by_label("Message received").check()

    page.get_by_role("button", name="+ Add condition").click()
    condition = _last_row(page, "conditions")
    condition.get_by_label("Field", exact=True).select_option(label="Text")
    condition.get_by_label("Operator", exact=True).select_option(label="contains any of")
    condition.get_by_label("Words or pattern").fill("refund")

    page.get_by_role("button", name="+ Add action").click()
    priority = _last_row(page, "actions")
    priority.get_by_label("Action", exact=True).select_option(label="Set priority")
    priority.get_by_label("Priority", exact=True).select_option(label="Urgent")

    page.get_by_role("button", name="+ Add action").click()
    tags = _last_row(page, "actions")
    tags.get_by_label("Action", exact=True).select_option(label="Add tags")
    # The value widget follows the action type chosen.
    expect(tags.get_by_label("Priority", exact=True)).to_have_count(0)
    tags.get_by_label("Tags", exact=True).select_option(label="billing")

    # A condition row on another field gets that field's operators.
    page.get_by_role("button", name="+ Add condition").click()
    extra = _last_row(page, "conditions")
    extra.get_by_label("Field", exact=True).select_option(label="Followers")
    expect(extra.get_by_label("Operator", exact=True).locator("option")).to_have_text(
        ["is above", "is below"]
    )
    extra.get_by_role("button", name="Remove this condition").click()
    expect(page.locator("[data-rows='conditions'] [data-row-list] > li")).to_have_count(1)

    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=SCREENSHOTS["rule_editor"], full_page=True)
    page.get_by_role("button", name="Save rule").click()

    expect(page.get_by_role("status")).to_contain_text("Rule “Refunds are urgent” saved.")
    table = page.locator("table.rules-table")
    expect(table).to_contain_text('Text contains "refund"')
    expect(table).to_contain_text("Set priority to Urgent")
    expect(table).to_contain_text("Add tags billing")
    rule = RoutingRule.objects.get()
    assert rule.events == ["message_received"]
    assert rule.conditions == [{"field": "text", "op": "contains_any", "value": ["refund"]}]
    assert rule.actions == [
        {"type": "set_priority", "value": 4},
        {"type": "add_tags", "value": [setup["billing"].pk]},
    ]

    # The demo channel is polled as the worker polls it, from a cursor whose poll brings one
    # post about a refund.
    channel = setup["channel"]
    channel.cursor, body = _demo_cursor_bringing(channel, "refund")
    channel.save(update_fields=["cursor"])
    result = channel_poll(channel_id=channel.pk)
    assert result is not None and result.stored == 1

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Inbox").click()
    row = page.locator("a.row", has_text=body)
    expect(row).to_be_visible()
    expect(row.locator(".badge.prio-4")).to_have_text("Urgent")
    expect(row.locator(".tag")).to_have_text("billing")

    row.click()
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("Routing rule applied")
    expect(timeline).to_contain_text("Refunds are urgent")
    # Applied as the conversation was created: listed above its creation, newest first.
    entries = timeline.locator(":scope > li")
    expect(entries).to_have_count(2)
    expect(entries.nth(0)).to_contain_text("Routing rule applied")
    expect(entries.nth(1)).to_contain_text("Conversation created")
    timeline.scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOTS["rule_timeline"], full_page=True)

    page.goto(f"{live_server.url}/routing/dry-run/")
    page.get_by_label("Message text").fill("Can I get a refund for my order?")
    page.get_by_role("button", name="Try the rules").click()
    expect(page.get_by_role("status")).to_contain_text("1 rule would apply.")
    expect(page.locator(".dry-run-rule.matched")).to_contain_text("Set priority to Urgent")
    page.screenshot(path=SCREENSHOTS["dry_run"], full_page=True)


def test_department_fields_follow_the_delivery_and_levels_reorder(page, live_server, setup):
    _log_in(page, live_server)
    page.get_by_role("navigation", name="Routing settings").get_by_role(
        "link", name="Departments"
    ).click()
    page.get_by_role("link", name="New department").click()
    page.get_by_label("Name", exact=True).fill("Logistics")
    expect(page.get_by_label("Team", exact=True)).to_be_visible()
    expect(page.get_by_label("Email address")).to_be_hidden()
    page.get_by_label("Email", exact=True).check()
    expect(page.get_by_label("Team", exact=True)).to_be_hidden()
    page.get_by_label("Email address").fill("logistics@example.com")
    page.get_by_role("button", name="Save department").click()
    expect(page.get_by_role("status")).to_contain_text("Department “Logistics” saved.")

    page.goto(f"{live_server.url}/routing/paths/new/")
    page.get_by_label("Name", exact=True).fill("Deliveries")
    for target in ("Logistics", "Alice"):
        page.get_by_role("button", name="+ Add level").click()
        _last_row(page, "levels").get_by_label("Department or person").select_option(label=target)
    _last_row(page, "levels").get_by_role("button", name="Move this level up").click()
    page.get_by_role("button", name="Save path").click()
    expect(page.get_by_role("status")).to_contain_text("Escalation path “Deliveries” saved.")
    expect(page.locator("ol.levels li")).to_have_text(["Alice", "Logistics"])
