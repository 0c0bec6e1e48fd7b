"""The inbox's filters, sorts, search, live updates and bulk actions."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.models import Conversation, EventKind, Priority, Status
from tests.factories import (
    ChannelFactory,
    ConversationFactory,
    IdentityFactory,
    MessageFactory,
    TagFactory,
)

pytestmark = pytest.mark.django_db


def listed(client, query: str = "") -> list[int]:
    return [c["pk"] for c in client.get(f"/inbox/?{query}").context["page"].rows]


@pytest.fixture
def many(world):
    """Conversations on channel A with varied attributes."""
    now = timezone.now()
    rows = []
    for i in range(12):
        rows.append(
            ConversationFactory(
                channel=world.channel_a,
                team=world.team_a,
                priority=[Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT][i % 4],
                sentiment=[-0.6, 0.0, 0.7][i % 3],
                status=[Status.NEW, Status.OPEN, Status.PENDING][i % 3],
                assignee=world.agent_a if i % 2 else None,
                last_message_at=now - timedelta(hours=i),
                waiting_since=now - timedelta(hours=(i * 7) % 12) if i % 4 else None,
            )
        )
    return rows


@pytest.mark.parametrize(
    ("query", "predicate"),
    [
        ("priority=4", lambda c: c.priority == Priority.URGENT),
        ("sentiment=negative", lambda c: c.sentiment is not None and c.sentiment <= -0.05),
        ("sentiment=positive", lambda c: c.sentiment is not None and c.sentiment >= 0.05),
        ("status=pending", lambda c: c.status == Status.PENDING),
        ("assignee=none", lambda c: c.assignee_id is None),
        ("platform=demo", lambda c: True),
        ("platform=x", lambda c: False),
    ],
)
def test_each_filter_narrows_the_list(login, world, many, query, predicate):
    client = login(world.agent_a)
    expected = {c.pk for c in [*many, world.conversation_a] if predicate(c)}
    assert set(listed(client, query)) == expected


def test_assignee_me_and_team_filters(login, world, many):
    client = login(world.agent_a)
    assert set(listed(client, f"assignee={world.agent_a.pk}")) == {
        c.pk for c in many if c.assignee_id == world.agent_a.pk
    }
    assert set(listed(client, f"team={world.team_b.pk}")) == set()


def test_a_date_range_keeps_conversations_active_in_it(login, world, many):
    today = timezone.localdate()
    client = login(world.agent_a)
    old = ConversationFactory(
        channel=world.channel_a, last_message_at=timezone.now() - timedelta(days=40)
    )
    in_range = listed(client, f"since={(today - timedelta(days=1)).isoformat()}")
    assert old.pk not in in_range and many[0].pk in in_range
    older = listed(client, f"until={(today - timedelta(days=30)).isoformat()}")
    assert older == [old.pk]


def test_a_tag_filter(login, world, many):
    tag = TagFactory(name="refund")
    many[3].tags.add(tag)
    assert listed(login(world.agent_a), "tag=refund") == [many[3].pk]


@pytest.mark.parametrize("sort", ["newest", "waiting", "priority"])
def test_every_sort_pages_through_every_conversation_once(login, world, many, settings, sort):
    settings.SCRM_INBOX_PAGE_SIZE = 5
    client = login(world.agent_a)
    seen, after = [], ""
    while True:
        page = client.get("/inbox/", {"sort": sort, **({"after": after} if after else {})})
        rows = page.context["page"].rows
        seen += rows
        if not page.context["page"].next_cursor:
            break
        after = page.context["page"].next_cursor
    assert len(seen) == len({c["pk"] for c in seen}) == 13
    if sort == "priority":
        assert [c["priority"] for c in seen] == sorted((c["priority"] for c in seen), reverse=True)
    if sort == "waiting":
        waiting = [c["waiting_since"] for c in seen if c["waiting_since"]]
        assert waiting == sorted(waiting)
        assert all(c["waiting_since"] is None for c in seen[len(waiting) :])


def test_a_cursor_of_another_sort_starts_from_the_top(login, world, many, settings):
    settings.SCRM_INBOX_PAGE_SIZE = 5
    client = login(world.agent_a)
    cursor = client.get("/inbox/?sort=priority").context["page"].next_cursor
    first_newest = listed(client, "")
    assert listed(client, f"after={cursor}")[:5] == first_newest[:5]


def test_search_finds_words_in_message_bodies_and_names(login, world, many):
    MessageFactory(conversation=many[5], body="My parcel to Dublin was damaged in transit")
    identity = IdentityFactory(handle="grete_m")
    by_handle = ConversationFactory(channel=world.channel_a, contact=identity.contact)
    client = login(world.agent_a)
    assert listed(client, "q=damaged") == [many[5].pk]
    assert listed(client, "q=parcel+dublin") == [many[5].pk]
    assert listed(client, "q=@grete_m") == [by_handle.pk]


def test_search_never_reaches_other_teams_conversations(login, world):
    MessageFactory(conversation=world.conversation_b, body="secret refund details")
    assert listed(login(world.agent_a), "q=refund") == []


def test_new_activity_is_announced_not_inserted(login, world, many):
    client = login(world.agent_a)
    drawn = timezone.now()
    assert (
        "new or updated"
        not in client.get("/inbox/updates/", {"since": drawn.isoformat()}).content.decode()
    )
    Conversation.objects.filter(pk=many[4].pk).update(last_message_at=drawn + timedelta(seconds=5))
    ConversationFactory(channel=world.channel_b, last_message_at=drawn + timedelta(seconds=5))
    response = client.get("/inbox/updates/", {"since": drawn.isoformat(), "status": "new"})
    text = response.content.decode()
    expected = 1 if many[4].status == Status.NEW else 0
    assert (f"{expected} new or updated" in text) if expected else ("new or updated" not in text)
    assert (
        "1 new or updated"
        in client.get("/inbox/updates/", {"since": drawn.isoformat()}).content.decode()
    )


def test_the_filtered_inbox_costs_a_fixed_number_of_queries(
    login, world, many, django_assert_max_num_queries
):
    client = login(world.agent_a)
    query = (
        f"q=order&status=open&channel={world.channel_a.pk}&priority=2&sentiment=neutral"
        "&tag=x&sort=waiting"
    )
    with django_assert_max_num_queries(12):
        assert client.get(f"/inbox/?{query}").status_code == 200


def test_bulk_actions_apply_to_selected_visible_conversations_only(login, world, many):
    client = login(world.agent_a)
    targets = [many[0].pk, many[2].pk, world.conversation_b.pk]
    client.post("/inbox/bulk/", {"ids": targets, "action": "status:resolved"})
    assert Conversation.objects.get(pk=many[0].pk).status == Status.RESOLVED
    assert Conversation.objects.get(pk=many[2].pk).status == Status.RESOLVED
    assert Conversation.objects.get(pk=world.conversation_b.pk).status == Status.NEW
    client.post("/inbox/bulk/", {"ids": targets, "action": "assign_me"})
    assert Conversation.objects.get(pk=many[0].pk).assignee == world.agent_a
    assert Conversation.objects.get(pk=world.conversation_b.pk).assignee is None
    client.post("/inbox/bulk/", {"ids": targets, "action": "tag", "tag": "Outage"})
    assert set(Conversation.objects.filter(tags__name="outage").values_list("pk", flat=True)) == {
        many[0].pk,
        many[2].pk,
    }
    assert Conversation.objects.get(pk=many[0].pk).events.filter(kind=EventKind.TAGGED).exists()


def test_a_bulk_post_without_an_action_changes_nothing(login, world, many):
    response = login(world.agent_a).post("/inbox/bulk/", {"ids": [many[0].pk]}, follow=True)
    assert "Choose an action" in response.content.decode()
    assert Conversation.objects.get(pk=many[0].pk).status == many[0].status


def test_unknown_filter_values_are_ignored(login, world, many):
    client = login(world.agent_a)
    assert (
        client.get(
            "/inbox/?priority=9&sentiment=angry&platform=myspace&sort=random&since=yesterday"
        ).status_code
        == 200
    )


def test_a_channel_of_another_platform_filters_out(login, world):
    channel = ChannelFactory(platform="x")
    world.channel_a.access.model.objects.create(channel=channel, team=world.team_a)
    x_conversation = ConversationFactory(channel=channel)
    assert listed(login(world.agent_a), "platform=x") == [x_conversation.pk]


@pytest.mark.parametrize("status", [Status.RESOLVED, Status.CLOSED])
def test_a_finished_status_lists_the_history_the_views_leave_out(login, world, many, status):
    done = [
        ConversationFactory(channel=world.channel_a, team=world.team_a, status=status),
        ConversationFactory(
            channel=world.channel_a, team=world.team_a, status=status, assignee=world.agent_a
        ),
    ]
    ConversationFactory(channel=world.channel_b, status=status)
    client = login(world.agent_a)
    assert set(listed(client)) == {c.pk for c in [*many, world.conversation_a]}
    assert set(listed(client, f"status={status}")) == {c.pk for c in done}
    assert listed(client, f"view=mine&status={status}") == [done[1].pk]
    assert listed(client, f"view=escalated&status={status}") == []


def test_the_poll_keeps_the_view_counts_live(login, world, many, settings):
    settings.SCRM_INBOX_COUNTS_SECONDS = 0
    client = login(world.agent_a)
    page = client.get("/inbox/")
    drawn = timezone.now()
    all_before = page.context["counts"]["all"]
    assert f'id="view-count-all">{all_before}</span>' in page.content.decode()
    ConversationFactory(channel=world.channel_a, team=world.team_a)
    ConversationFactory(channel=world.channel_b)  # not the agent's to see
    text = client.get("/inbox/updates/", {"since": drawn.isoformat()}).content.decode()
    # Swapped in out of band over the spans of the views, by their ids.
    assert (
        f'<span class="count" id="view-count-all" hx-swap-oob="true">{all_before + 1}</span>'
        in text
    )
    assert text.count('hx-swap-oob="true"') == len(page.context["views"])
