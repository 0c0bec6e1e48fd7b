"""What an agent does on conversations in the browser, through the API: the inbox's sorts,
escalations (raise, take back, answer), canned responses, mentions, claiming, sending a failed
reply again, bulk actions and presence. Same services, access and audit as the pages."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from conversations.models import Priority, Status
from tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

FAR = datetime(9999, 12, 31, tzinfo=UTC)


def _results(response):
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


# --- The inbox's sorts ----------------------------------------------------------------------


@pytest.fixture
def many(world):
    """Conversations on channel A sharing priorities, activity times and due times, so every
    sort has ties to break."""
    now = timezone.now().replace(microsecond=0)
    return [
        ConversationFactory(
            channel=world.channel_a,
            team=world.team_a,
            priority=[Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT][i % 4],
            status=[Status.NEW, Status.OPEN, Status.PENDING][i % 3],
            last_message_at=now - timedelta(hours=i // 3),
            waiting_since=now - timedelta(hours=i % 5) if i % 4 else None,
            sla_due_at=now + timedelta(minutes=30 * (i % 3)) if i % 2 else None,
        )
        for i in range(14)
    ]


SORT_KEYS = {
    "newest": lambda c: (-c.last_message_at.timestamp(), -c.pk),
    "waiting": lambda c: ((c.waiting_since or FAR).timestamp(), c.pk),
    "priority": lambda c: (-c.priority, -c.last_message_at.timestamp(), -c.pk),
    "sla": lambda c: ((c.sla_due_at or FAR).timestamp(), c.pk),
}


def _last_page(client, sort):
    url = f"/api/v1/conversations/?sort={sort}&page_size=4"
    while (following := client.get(url).json()["next"]) is not None:
        url = following
    return url


@pytest.mark.parametrize("sort", SORT_KEYS)
def test_every_inbox_sort_pages_forward_and_back_over_every_conversation_once(
    world, api, many, sort
):
    client = api("agent_a")
    expected = [c.pk for c in sorted([*many, world.conversation_a], key=SORT_KEYS[sort])]
    pages, url = [], f"/api/v1/conversations/?sort={sort}&page_size=4"
    while url:
        body = client.get(url).json()
        pages.append([row["id"] for row in body["results"]])
        url = body["next"]
    assert [pk for page in pages for pk in page] == expected
    assert len(pages) == 4

    back, url = [], client.get(_last_page(client, sort)).json()["previous"]
    while url:
        body = client.get(url).json()
        back.append([row["id"] for row in body["results"]])
        url = body["previous"]
    assert back == pages[-2::-1]


def test_the_default_order_is_newest_activity_first(world, api, many):
    client = api("agent_a")
    assert _results(client.get("/api/v1/conversations/")) == _results(
        client.get("/api/v1/conversations/?sort=newest")
    )


def test_a_sort_combines_with_the_filters(world, api, many):
    urgent = {c.pk for c in many if c.priority == Priority.URGENT and c.status == Status.PENDING}
    ids = _results(api("agent_a").get("/api/v1/conversations/?sort=sla&priority=4&status=pending"))
    assert set(ids) == urgent and ids


def test_an_unknown_sort_or_a_foreign_cursor_is_refused(world, api, many):
    client = api("agent_a")
    bad = client.get("/api/v1/conversations/?sort=random")
    assert bad.status_code == 400 and "sort" in bad.json()["fields"]
    following = client.get("/api/v1/conversations/?sort=priority&page_size=2").json()["next"]
    cursor = following.split("cursor=")[1].split("&")[0]
    other = client.get(f"/api/v1/conversations/?sort=waiting&cursor={cursor}")
    assert other.status_code == 400 and "cursor" in other.json()["fields"]
    garbled = client.get("/api/v1/conversations/?cursor=bm9wZQ")
    assert garbled.status_code == 400 and "cursor" in garbled.json()["fields"]


def test_sorted_lists_cost_a_fixed_number_of_queries(
    world, api, many, django_assert_max_num_queries
):
    client = api("agent_a")
    for sort in SORT_KEYS:
        first = client.get(f"/api/v1/conversations/?sort={sort}&page_size=3").json()
        with django_assert_max_num_queries(12):
            assert client.get(first["next"]).status_code == 200
