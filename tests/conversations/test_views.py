import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from channels_ingest.models import ChannelMode
from conversations.models import (
    Conversation,
    DeliveryStatus,
    Direction,
    EventKind,
    Message,
    MessageKind,
    Status,
)
from tests.factories import (
    ConversationFactory,
    IdentityFactory,
    MessageFactory,
    TagFactory,
)

pytestmark = pytest.mark.django_db


def _fill(channel, team, n, tags=()):
    now = timezone.now()
    for i in range(n):
        identity = IdentityFactory()
        conversation = ConversationFactory(
            channel=channel,
            team=team,
            contact=identity.contact,
            last_message_at=now - timedelta(minutes=i),
            waiting_since=now - timedelta(hours=1),
        )
        conversation.tags.add(*tags)
        MessageFactory(conversation=conversation, author_identity=identity)


@pytest.mark.parametrize("count", [3, 60])
def test_the_inbox_page_costs_a_fixed_number_of_queries(
    login, world, django_assert_max_num_queries, count
):
    _fill(world.channel_a, world.team_a, count, tags=[TagFactory(), TagFactory()])
    client = login(world.agent_a)
    with django_assert_max_num_queries(12):
        response = client.get("/inbox/?view=all")
    assert response.status_code == 200
    with django_assert_max_num_queries(12):
        client.get(f"/inbox/?view=team&status=new&channel={world.channel_a.pk}&q=order")


def test_inbox_pages_follow_each_other_without_overlap(login, world, settings):
    settings.SCRM_INBOX_PAGE_SIZE = 7
    _fill(world.channel_a, world.team_a, 20)
    client = login(world.agent_a)
    seen: list[int] = []
    after = ""
    while True:
        response = client.get("/inbox/", {"after": after} if after else {})
        page = response.context["page"]
        seen += [c["pk"] for c in page.rows]
        if not page.next_cursor:
            break
        after = page.next_cursor
    visible = Conversation.objects.filter(channel=world.channel_a)
    assert sorted(seen) == sorted(visible.values_list("pk", flat=True))
    assert len(seen) == len(set(seen))


def test_a_garbled_cursor_shows_the_first_page(login, world):
    response = login(world.agent_a).get("/inbox/?after=not-a-cursor")
    assert response.status_code == 200
    assert response.context["page"].rows


def test_load_more_returns_only_rows_to_htmx(login, world, settings):
    settings.SCRM_INBOX_PAGE_SIZE = 2
    _fill(world.channel_a, world.team_a, 5)
    client = login(world.agent_a)
    cursor = client.get("/inbox/").context["page"].next_cursor
    response = client.get(f"/inbox/?after={cursor}", HTTP_HX_REQUEST="true")
    assert b"<html" not in response.content
    assert b'class="row"' in response.content


def test_inbox_views_count_what_they_list(login, world):
    _fill(world.channel_a, world.team_a, 4)
    Conversation.objects.filter(channel=world.channel_a).update(assignee=world.agent_a)
    mine = ConversationFactory(channel=world.channel_a, status=Status.ESCALATED)
    client = login(world.agent_a)
    counts = client.get("/inbox/updates/").context["counts"]
    assert counts["mine"] == 5  # 4 filled + the world's conversation A
    assert counts["unassigned"] == 1
    assert counts["escalated"] == 1
    assert counts["all"] == 6
    assert mine.pk in [c["pk"] for c in client.get("/inbox/?view=escalated").context["page"].rows]


def test_the_page_shows_the_counts_last_counted_and_its_poll_counts_them_when_due(
    login, world, settings, monkeypatch
):
    from conversations import selectors

    settings.SCRM_INBOX_COUNTS_SECONDS = 60
    client = login(world.agent_a)

    def page():
        return client.get("/inbox/").context["counts"]

    def poll():
        return client.get("/inbox/updates/").context["counts"]

    assert page() is None  # nothing counted yet: the poll on load counts
    before = poll()
    assert page() == before
    # Someone else's new conversation shows once the counts are due...
    ConversationFactory(channel=world.channel_a)
    assert poll() == before and page() == before
    later = selectors.time.time() + 61
    with monkeypatch.context() as patch:
        patch.setattr(selectors.time, "time", lambda: later)
        recounted = poll()
    assert recounted["all"] == before["all"] + 1
    # ...or at once after a change of the user's own: shown as they were until counted.
    client.post(f"/inbox/{world.conversation_a.pk}/claim/")
    assert page() == recounted
    after = poll()
    assert after["mine"] == 1 and after["all"] == recounted["all"]
    assert page() == after

    settings.SCRM_INBOX_COUNTS_SECONDS = 0
    ConversationFactory(channel=world.channel_a)
    assert page()["all"] == after["all"] + 1


def test_inbox_search_finds_a_contact_by_handle(login, world):
    identity = IdentityFactory(handle="dana_rossi")
    target = ConversationFactory(channel=world.channel_a, contact=identity.contact)
    response = login(world.agent_a).get("/inbox/?q=@dana_ros")
    assert [c["pk"] for c in response.context["page"].rows] == [target.pk]


def test_the_conversation_page_costs_a_fixed_number_of_queries(login, world, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.SCRM_INBOX_COUNTS_SECONDS = 0  # the unread count is counted on every page
    conversation = world.conversation_a
    client = login(world.agent_a)
    client.get(f"/inbox/{conversation.pk}/")  # the tag suggestions, kept a minute
    counts = []
    for extra in (5, 60):
        for _ in range(extra):
            MessageFactory(conversation=conversation)
        ConversationFactory.create_batch(3, channel=world.channel_a, contact=conversation.contact)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/inbox/{conversation.pk}/")
        assert response.status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 9
    assert len(response.context["history"]) == 6


def _thread_ids(html):
    return [int(pk) for pk in re.findall(r'<li class="msg [a-z]+" id="m(\d+)"', html)]


def _earlier(html):
    found = re.search(r'hx-get="\?before=(\d+)"', html)
    return found and found.group(1)


def test_a_long_thread_shows_its_newest_messages_and_pages_back_through_the_rest(
    login, world, settings
):
    settings.SCRM_THREAD_PAGE_SIZE = 4
    conversation = ConversationFactory(channel=world.channel_a, team=world.team_a)
    start = timezone.now() - timedelta(hours=1)
    # The 6th and 7th messages share a time, across the first page's edge: the id breaks
    # the tie, so neither is skipped or shown twice.
    times = [start + timedelta(minutes=i - (i == 6)) for i in range(10)]
    ids = [
        MessageFactory(conversation=conversation, created_at=at, body=f"message {i}").pk
        for i, at in enumerate(times)
    ]
    client = login(world.agent_a)
    page = client.get(f"/inbox/{conversation.pk}/").content.decode()
    assert _thread_ids(page) == ids[-4:]
    assert "Show earlier messages" in page
    shown, before = _thread_ids(page), _earlier(page)
    while before:
        fragment = client.get(
            f"/inbox/{conversation.pk}/", {"before": before}, HTTP_HX_REQUEST="true"
        ).content.decode()
        assert "<html" not in fragment
        shown, before = _thread_ids(fragment) + shown, _earlier(fragment)
    assert shown == ids

    # Without htmx, the link opens the page at the older messages, with a way back.
    older = client.get(f"/inbox/{conversation.pk}/", {"before": ids[6]}).content.decode()
    assert _thread_ids(older) == ids[2:6]
    assert "Show the latest messages" in older


def test_a_short_thread_has_nothing_earlier_to_show(login, world):
    conversation = world.conversation_a
    page = login(world.agent_a).get(f"/inbox/{conversation.pk}/").content.decode()
    assert _thread_ids(page) == list(
        conversation.messages.order_by("created_at", "id").values_list("pk", flat=True)
    )
    assert "Show earlier messages" not in page


def test_a_reply_is_sent_through_the_channel_and_shown_as_sent(
    login, world, django_capture_on_commit_callbacks
):
    conversation = world.conversation_a
    client = login(world.agent_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/inbox/{conversation.pk}/reply/", {"body": "We're on it!"})
    assert response.status_code == 302
    reply = Message.objects.get(conversation=conversation, direction=Direction.OUT)
    assert reply.delivery_status == DeliveryStatus.SENT
    assert reply.external_id == f"demo-out-{reply.pk}"
    assert reply.author_user == world.agent_a
    conversation.refresh_from_db()
    assert conversation.first_response_at is not None
    assert conversation.waiting_since is None
    page = client.get(f"/inbox/{conversation.pk}/").content.decode()
    assert "We&#39;re on it!" in page and "Sent" in page


def test_a_listen_only_channel_shows_no_reply_box_and_refuses_replies(
    login, world, django_capture_on_commit_callbacks
):
    world.channel_a.mode = ChannelMode.LISTEN
    world.channel_a.save()
    client = login(world.agent_a)
    url = f"/inbox/{world.conversation_a.pk}/"
    assert 'id="id_reply"' not in client.get(url).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url + "reply/", {"body": "hello"}, follow=True)
    assert "listen-only" in response.content.decode()
    assert not Message.objects.filter(direction=Direction.OUT).exists()


def test_a_reply_over_the_platform_limit_is_refused_with_the_reason(login, world):
    response = login(world.agent_a).post(
        f"/inbox/{world.conversation_a.pk}/reply/", {"body": "x" * 281}, follow=True
    )
    assert "at most 280 characters" in response.content.decode()
    assert not Message.objects.filter(direction=Direction.OUT).exists()


def test_a_view_only_team_cannot_reply(login, world):
    world.channel_a.access.update(can_reply=False)
    response = login(world.agent_a).post(
        f"/inbox/{world.conversation_a.pk}/reply/", {"body": "hello"}, follow=True
    )
    assert "may not reply" in response.content.decode()


def test_a_note_stays_internal_and_is_on_the_timeline(login, world):
    client = login(world.agent_a)
    client.post(f"/inbox/{world.conversation_a.pk}/note/", {"body": "VIP, be nice"})
    note = Message.objects.get(kind=MessageKind.NOTE)
    assert note.external_id is None
    assert world.conversation_a.events.filter(kind=EventKind.NOTE_ADDED).exists()
    assert "msg note" in client.get(f"/inbox/{world.conversation_a.pk}/").content.decode()


def test_claim_and_resolve_are_recorded(login, world):
    client = login(world.agent_a)
    pk = world.conversation_a.pk
    client.post(f"/inbox/{pk}/claim/")
    response = client.post(f"/inbox/{pk}/status/", {"status": "resolved"})
    assert [str(m) for m in get_messages(response.wsgi_request)][-1] == "Status set to resolved."
    conversation = Conversation.objects.get(pk=pk)
    assert conversation.assignee == world.agent_a
    assert conversation.status == Status.RESOLVED
    assert conversation.resolved_at is not None
    kinds = set(conversation.events.values_list("kind", flat=True))
    assert {EventKind.ASSIGNED, EventKind.STATUS_CHANGED} <= kinds


def test_an_unknown_status_is_ignored(login, world):
    login(world.agent_a).post(f"/inbox/{world.conversation_a.pk}/status/", {"status": "gone"})
    assert Conversation.objects.get(pk=world.conversation_a.pk).status == Status.NEW
