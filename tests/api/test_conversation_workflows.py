"""What an agent does on conversations in the browser, through the API: the inbox's sorts,
escalations (raise, take back, answer), canned responses, mentions, claiming, sending a failed
reply again, bulk actions and presence. Same services, access and audit as the pages."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from conversations.escalations import escalation_open
from conversations.models import (
    CannedResponse,
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    DepartmentDelivery,
    Direction,
    Escalation,
    EscalationStatus,
    EscalationTrigger,
    EventKind,
    Message,
    MessageKind,
    Notification,
    Priority,
    Status,
    WebhookCall,
)
from conversations.presence import agents_online
from governance.api_tokens import api_token_create
from governance.models import AuditEntry, Role
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    ConversationFactory,
    DepartmentFactory,
    EscalationLevelFactory,
    EscalationPathFactory,
    MessageFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
    WebhookEndpointFactory,
)

pytestmark = pytest.mark.django_db

FAR = datetime(9999, 12, 31, tzinfo=UTC)


def _results(response):
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def _client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, name='x')[1]}")
    return client


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


# --- Escalations: raise, take back, answer ----------------------------------------------------


@pytest.fixture
def path(world):
    """Tier 2 in the app (a team outside channel A's, with Dana), then logistics by webhook."""
    tier2_team = TeamFactory(name="Tier 2")
    dana = UserFactory(username="dana", role=Role.AGENT)
    TeamMembershipFactory(team=tier2_team, user=dana)
    tier2 = DepartmentFactory(name="Tier 2", team=tier2_team)
    logistics = DepartmentFactory(
        name="Logistics",
        delivery=DepartmentDelivery.WEBHOOK,
        team=None,
        endpoint=WebhookEndpointFactory(url="https://logistics.example.com/hook"),
    )
    path = EscalationPathFactory(name="Refunds")
    EscalationLevelFactory(path=path, position=0, department=tier2)
    EscalationLevelFactory(path=path, position=1, department=logistics)
    return path


@pytest.fixture
def escalated(world, path):
    """Conversation A, Bob's, escalated by him to the first level of the path."""
    conversation = world.conversation_a
    conversation.assignee = world.agent_a
    conversation.status = Status.OPEN
    conversation.save()
    return escalation_open(
        conversation=conversation,
        trigger=EscalationTrigger.AGENT,
        actor=world.agent_a,
        reason="Refund above the agent limit",
        path=path,
    )


def _dana():
    return User.objects.get(username="dana")


def _url(world, action=""):
    url = f"/api/v1/conversations/{world.conversation_a.pk}/"
    return f"{url}{action}/" if action else url


def test_raising_moves_the_escalation_to_the_next_level_as_the_page_does(
    world, api, escalated, path
):
    subscribed = WebhookEndpointFactory(events=["conversation.escalated"])
    response = api("agent_a").post(
        _url(world, "escalation/raise"), {"reason": "Needs a courier"}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["id"], body["level"], body["target"]) == (escalated.pk, 1, "Logistics")
    assert body["status"] == EscalationStatus.OPEN
    assert body["reason"].endswith("Level 2: Needs a courier")
    assert response["ETag"] == api("agent_a").get(_url(world))["ETag"]
    # A department outside the app is called with the link back; subscribers hear of it.
    opened = WebhookCall.objects.get(event="escalation.opened", key=f"escalation:{escalated.pk}:1")
    assert opened.payload["escalation"]["level"] == 1 and opened.payload["answer_url"]
    assert WebhookCall.objects.filter(endpoint=subscribed, event="conversation.escalated").exists()
    raised = AuditEntry.objects.get(action="escalation.raised")
    assert raised.actor == world.agent_a and raised.object_id == str(escalated.pk)
    assert ConversationEvent.objects.filter(
        conversation=world.conversation_a, kind=EventKind.ESCALATED, data__level=1
    ).exists()

    last = api("agent_a").post(_url(world, "escalation/raise"), {}, format="json")
    assert last.status_code == 409 and "last level" in last.json()["detail"]


def test_a_raise_from_a_level_left_behind_is_refused(world, api, escalated):
    """A client that says which level it saw raises from that one only: a repeated request,
    or one racing a colleague's raise, does not climb a second level."""
    client = api("agent_a")
    url = _url(world, "escalation/raise")
    first = client.post(url, {"level": 0}, format="json")
    assert first.status_code == 200 and first.json()["level"] == 1
    again = client.post(url, {"level": 0}, format="json")
    assert again.status_code == 409 and "raised meanwhile" in again.json()["detail"]
    escalated.refresh_from_db()
    assert escalated.level == 1


def test_taking_back_returns_the_conversation_to_support(world, api, escalated):
    client = api("agent_a")
    response = client.post(_url(world, "escalation/withdraw"), {}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == EscalationStatus.CLOSED
    assert response.json()["outcome"] == "abandoned"
    conversation = client.get(_url(world)).json()
    assert (conversation["status"], conversation["assignee"]) == (Status.OPEN, world.agent_a.pk)
    assert conversation["team"] == world.team_a.pk
    assert AuditEntry.objects.get(action="escalation.withdrawn").actor == world.agent_a
    again = client.post(_url(world, "escalation/withdraw"), {}, format="json")
    assert again.status_code == 409


def test_the_department_answers_even_without_seeing_the_channel(world, api, escalated):
    dana = _client_for(_dana())
    assert dana.get(_url(world)).status_code == 200  # while it waits on her team

    response = dana.post(
        _url(world, "escalation/answer"), {"answer": "Refund approved, 40 EUR"}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["answered_by"]) == (EscalationStatus.RETURNED, _dana().pk)
    assert body["answer"] == "Refund approved, 40 EUR"
    note = Message.objects.get(conversation=world.conversation_a, kind=MessageKind.NOTE)
    assert note.body.startswith("Answer from Tier 2") and note.body.endswith(
        ": Refund approved, 40 EUR"
    )
    assert Notification.objects.filter(recipient=world.agent_a, text__contains="40 EUR").exists()
    assert AuditEntry.objects.get(action="escalation.answered").actor == _dana()
    conversation = api("agent_a").get(_url(world)).json()
    assert (conversation["status"], conversation["assignee"]) == (Status.OPEN, world.agent_a.pk)
    # Back with support: Dana no longer sees it, but is told it was answered, as on the page.
    assert dana.get(_url(world)).status_code == 404
    again = dana.post(_url(world, "escalation/answer"), {"answer": "Again"}, format="json")
    assert again.status_code == 409


def test_support_takes_back_and_raises_but_does_not_answer(world, api, escalated):
    refused = api("agent_a").post(_url(world, "escalation/answer"), {"answer": "x"}, format="json")
    assert refused.status_code == 403 and "Tier 2" in refused.json()["detail"]
    dana = _client_for(_dana())
    for action in ("escalation/raise", "escalation/withdraw"):
        assert dana.post(_url(world, action), {}, format="json").status_code == 403, action
    assert Escalation.objects.get().level == 0
    answered = api("manager").post(
        _url(world, "escalation/answer"),
        {"answer": "They called: sorted", "outcome": "moved_offline"},
        format="json",
    )
    assert answered.status_code == 200, answered.json()
    assert (answered.json()["status"], answered.json()["outcome"]) == ("closed", "moved_offline")


def test_an_answer_is_checked(world, api, escalated):
    client = api("manager")
    missing = client.post(_url(world, "escalation/answer"), {"answer": "  "}, format="json")
    assert missing.status_code == 400 and "answer" in missing.json()["fields"]
    outcome = client.post(
        _url(world, "escalation/answer"), {"answer": "x", "outcome": "abandoned"}, format="json"
    )
    assert outcome.status_code == 400 and "outcome" in outcome.json()["fields"]
    long = client.post(_url(world, "escalation/raise"), {"reason": "x" * 2001}, format="json")
    assert long.status_code == 400 and "reason" in long.json()["fields"]
    assert Escalation.objects.get().status == EscalationStatus.OPEN


def test_escalation_actions_need_an_escalation(world, api):
    client = api("agent_a")
    for action in ("escalation/raise", "escalation/withdraw", "escalation/answer"):
        response = client.post(_url(world, action), {"answer": "x"}, format="json")
        assert response.status_code == 409, action
    assert client.get(_url(world, "escalations")).json()["results"] == []


@pytest.mark.parametrize("persona", ["agent_b"])
def test_escalations_of_another_teams_channel_are_not_found(world, api, escalated, persona):
    client = api(persona)
    assert client.get(_url(world, "escalations")).status_code == 404
    for action in ("escalation/raise", "escalation/withdraw", "escalation/answer"):
        response = client.post(_url(world, action), {"answer": "x"}, format="json")
        assert response.status_code == 404, action
    assert Escalation.objects.get().status == EscalationStatus.OPEN


def test_escalation_actions_honour_the_version_read(world, api, escalated):
    client = api("agent_a")
    etag = client.get(_url(world))["ETag"]
    read_at = client.get(_url(world)).json()["updated_at"]
    client.post(_url(world, "priority"), {"priority": 4}, format="json")
    stale = client.post(_url(world, "escalation/raise"), {}, format="json", HTTP_IF_MATCH=etag)
    assert stale.status_code == 412
    older = client.post(_url(world, "escalation/withdraw"), {"updated_at": read_at}, format="json")
    assert older.status_code == 409
    assert Escalation.objects.get().level == 0
    assert Escalation.objects.get().status == EscalationStatus.OPEN
    fresh = client.get(_url(world))["ETag"]
    raised = client.post(_url(world, "escalation/raise"), {}, format="json", HTTP_IF_MATCH=fresh)
    assert raised.status_code == 200 and raised.json()["level"] == 1


def test_the_department_cannot_escalate_or_raise_by_escalating_again(world, escalated, path):
    dana = _client_for(_dana())
    assert dana.get(_url(world)).status_code == 200  # while it waits on her team
    for target in ({"path": path.pk}, {"department": DepartmentFactory().pk}):
        response = dana.post(_url(world, "escalate"), {"reason": "Up", **target}, format="json")
        assert response.status_code == 403, target
    assert (Escalation.objects.get().level, Escalation.objects.count()) == (0, 1)


def test_the_escalations_are_listed_current_first(world, api, escalated, path):
    client = api("agent_a")
    client.post(_url(world, "escalation/withdraw"), {}, format="json")
    client.post(_url(world, "escalate"), {"reason": "Again", "path": path.pk}, format="json")
    rows = client.get(_url(world, "escalations")).json()["results"]
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("open", "Again"),
        ("closed", "Refund above the agent limit"),
    ]


# --- Canned responses -----------------------------------------------------------------------


@pytest.fixture
def canned(world):
    make = CannedResponse.objects.create
    return {
        "mine": make(
            title="Mine", body="Hi {first_name}, {agent_first_name} here", owner=world.agent_a
        ),
        "theirs": make(title="Theirs", body="t", owner=world.agent_b, team=world.team_a),
        "team_a": make(title="Team A", body="{name}, this is {channel}", team=world.team_a),
        "team_b": make(title="Team B", body="b", team=world.team_b),
        "shared": make(title="Everyone", body="Thanks, {agent_name}"),
    }


USABLE = {
    "admin": ["shared"],
    "manager": ["shared", "team_a"],
    "agent_a": ["shared", "mine", "team_a"],
    "agent_b": ["shared", "team_b", "theirs"],
}


@pytest.mark.parametrize("persona", USABLE)
def test_canned_responses_are_ones_own_ones_teams_and_everyones(world, api, canned, persona):
    client = api(persona)
    rows = client.get("/api/v1/canned-responses/").json()["results"]
    assert [row["id"] for row in rows] == [canned[name].pk for name in USABLE[persona]]
    for name, response in canned.items():
        detail = client.get(f"/api/v1/canned-responses/{response.pk}/")
        assert detail.status_code == (200 if name in USABLE[persona] else 404), name
    shared_with = {row["title"]: row["shared_with"] for row in rows}
    assert shared_with["Everyone"] == "everyone"
    if persona == "agent_a":
        assert (shared_with["Mine"], shared_with["Team A"]) == ("personal", "team")


def test_a_canned_response_is_filled_in_for_the_conversation(world, api, canned):
    contact = world.conversation_a.contact
    contact.name = "Dana Rossi"
    contact.save()
    client = api("agent_a")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/canned-responses/"

    mine = client.get(f"{url}{canned['mine'].pk}/")
    team = client.get(f"{url}{canned['team_a'].pk}/")

    assert mine.status_code == 200, mine.json()
    assert mine.json() == {
        "id": canned["mine"].pk,
        "title": "Mine",
        "text": f"Hi Dana, {world.agent_a.first_name} here",
    }
    assert team.json()["text"] == "Dana Rossi, this is Channel A"


def test_canned_text_needs_the_conversation_and_the_response(world, api, canned):
    def status(persona, conversation, name):
        pk = canned[name].pk if name in canned else 999999
        url = f"/api/v1/conversations/{conversation.pk}/canned-responses/{pk}/"
        return api(persona).get(url).status_code

    assert status("agent_b", world.conversation_a, "shared") == 404
    assert status("agent_a", world.conversation_b, "shared") == 404
    assert status("agent_a", world.conversation_a, "theirs") == 404
    assert status("agent_a", world.conversation_a, "missing") == 404
    assert status("admin", world.conversation_b, "shared") == 200


def test_canned_responses_are_read_only_here(world, api, canned):
    client = api("admin")
    assert client.post("/api/v1/canned-responses/", {"title": "x", "body": "y"}).status_code == 405
    assert client.delete(f"/api/v1/canned-responses/{canned['shared'].pk}/").status_code == 405


# --- Notifications (mentions) ---------------------------------------------------------------


@pytest.fixture
def mentions(world, api):
    """Bob mentions Mona in two notes on conversation A; Mona also had one on B before she
    lost sight of channel B."""
    url = f"/api/v1/conversations/{world.conversation_a.pk}/messages/"
    for body in (f"@{world.manager.username} first look", f"@{world.manager.username} second"):
        assert (
            api("agent_a").post(url, {"kind": "note", "body": body}, format="json").status_code
            == 201
        )
    hidden = Notification.objects.create(
        recipient=world.manager, conversation=world.conversation_b, text="On channel B"
    )
    first, second = Notification.objects.filter(conversation=world.conversation_a).order_by("pk")
    return first, second, hidden


def test_notifications_are_the_recipients_newest_first(world, api, mentions):
    first, second, hidden = mentions
    assert _results(api("manager").get("/api/v1/notifications/")) == [second.pk, first.pk]
    row = api("manager").get(f"/api/v1/notifications/{first.pk}/").json()
    assert row["actor"] == world.agent_a.pk and "first look" in row["text"]
    assert row["conversation"] == world.conversation_a.pk and row["read_at"] is None
    for persona in ("admin", "agent_a", "agent_b"):
        assert _results(api(persona).get("/api/v1/notifications/")) == [], persona
        assert api(persona).get(f"/api/v1/notifications/{first.pk}/").status_code == 404
    assert api("manager").get(f"/api/v1/notifications/{hidden.pk}/").status_code == 404


def test_marking_one_read_is_opening_it_in_the_browser(world, api, login, mentions):
    first, second, _ = mentions
    client = api("manager")
    assert login(world.manager).get("/inbox/").context["unread_notifications"] == 2

    response = client.post(f"/api/v1/notifications/{first.pk}/read/")

    assert response.status_code == 200 and response.json()["read_at"] is not None
    assert login(world.manager).get("/inbox/").context["unread_notifications"] == 1
    assert _results(client.get("/api/v1/notifications/?unread=true")) == [second.pk]
    assert _results(client.get("/api/v1/notifications/?unread=false")) == [first.pk]
    again = client.post(f"/api/v1/notifications/{first.pk}/read/")
    assert again.json()["read_at"] == response.json()["read_at"]
    assert api("agent_a").post(f"/api/v1/notifications/{second.pk}/read/").status_code == 404
    assert Notification.objects.get(pk=second.pk).read_at is None


def test_marking_all_read_leaves_others_and_hidden_ones_alone(world, api, login, mentions):
    first, _, hidden = mentions
    other = Notification.objects.create(
        recipient=world.agent_a, conversation=world.conversation_a, text="For Bob"
    )
    client = api("manager")
    client.post(f"/api/v1/notifications/{first.pk}/read/")

    response = client.post("/api/v1/notifications/read-all/")

    assert response.status_code == 200 and response.json() == {"marked": 1}
    assert login(world.manager).get("/inbox/").context["unread_notifications"] == 0
    assert client.get("/api/v1/notifications/?unread=true").json()["results"] == []
    assert Notification.objects.get(pk=other.pk).read_at is None
    assert Notification.objects.get(pk=hidden.pk).read_at is None
    assert client.post("/api/v1/notifications/read-all/").json() == {"marked": 0}


# --- Claiming -------------------------------------------------------------------------------


def test_claiming_assigns_the_conversation_to_oneself(world, api):
    subscribed = WebhookEndpointFactory(events=["conversation.assigned"])
    response = api("agent_a").post(_url(world, "claim"), {}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["assignee"], response.json()["status"]) == (world.agent_a.pk, "open")
    assert response["ETag"] == response.json()["version"]
    event = ConversationEvent.objects.get(
        conversation=world.conversation_a, kind=EventKind.ASSIGNED
    )
    assert event.actor == world.agent_a and event.data["assignee"] == world.agent_a.pk
    assert WebhookCall.objects.filter(endpoint=subscribed).count() == 1
    assert api("agent_b").post(_url(world, "claim"), {}, format="json").status_code == 404


def test_a_view_only_team_cannot_claim(world, api):
    world.channel_a.access.update(can_reply=False)
    for persona in ("agent_a", "manager"):
        response = api(persona).post(_url(world, "claim"), {}, format="json")
        assert response.status_code == 403, persona
    assert Conversation.objects.get(pk=world.conversation_a.pk).assignee is None
    assert api("admin").post(_url(world, "claim"), {}, format="json").status_code == 200


def test_claiming_honours_the_version_read(world, api):
    client = api("agent_a")
    read = client.get(_url(world))
    client.post(_url(world, "priority"), {"priority": 4}, format="json")
    stale = client.post(_url(world, "claim"), {}, format="json", HTTP_IF_MATCH=read["ETag"])
    assert stale.status_code == 412
    older = client.post(
        _url(world, "claim"), {"updated_at": read.json()["updated_at"]}, format="json"
    )
    assert older.status_code == 409
    assert Conversation.objects.get(pk=world.conversation_a.pk).assignee is None


# --- Sending a failed reply again -------------------------------------------------------------


def _failed_reply(conversation, **fields):
    return MessageFactory(
        conversation=conversation,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        external_id=None,
        delivery_status=DeliveryStatus.FAILED,
        error="503",
        **fields,
    )


def test_a_failed_reply_is_sent_again(world, api, django_capture_on_commit_callbacks):
    failed = _failed_reply(world.conversation_a, author_user=world.agent_a)
    url = _url(world, f"messages/{failed.pk}/retry")
    with django_capture_on_commit_callbacks(execute=True):
        response = api("agent_a").post(url)
    assert response.status_code == 202, response.json()
    assert response.json()["id"] == failed.pk and response.json()["error"] == ""
    failed.refresh_from_db()
    assert failed.delivery_status == DeliveryStatus.SENT
    again = api("agent_a").post(url)
    assert again.status_code == 409 and "Only a failed reply" in again.json()["detail"]


def test_sending_again_is_checked_as_a_new_reply(world, api):
    failed = _failed_reply(world.conversation_a, author_user=world.manager)
    url = _url(world, f"messages/{failed.pk}/retry")
    world.channel_a.access.update(can_reply=False)
    refused = api("agent_a").post(url)
    assert refused.status_code == 422 and refused.json()["code"] == "refused"
    assert "may not reply" in refused.json()["detail"]
    world.channel_a.access.update(can_reply=True)
    world.channel_a.mode = "listen"
    world.channel_a.save()
    assert api("agent_a").post(url).status_code == 422
    assert Message.objects.get(pk=failed.pk).delivery_status == DeliveryStatus.FAILED


def test_only_a_reply_of_this_conversation_is_sent_again(world, api):
    inbound = world.conversation_a.messages.get()
    note = MessageFactory(
        conversation=world.conversation_a,
        direction=Direction.OUT,
        kind=MessageKind.NOTE,
        delivery_status=DeliveryStatus.FAILED,
    )
    elsewhere = _failed_reply(world.conversation_b)
    client = api("agent_a")
    for message in (inbound, note, elsewhere):
        assert client.post(_url(world, f"messages/{message.pk}/retry")).status_code == 404
    mine = _failed_reply(world.conversation_a)
    assert api("agent_b").post(_url(world, f"messages/{mine.pk}/retry")).status_code == 404
    assert Message.objects.get(pk=mine.pk).delivery_status == DeliveryStatus.FAILED


# --- Bulk actions ---------------------------------------------------------------------------


BULK = "/api/v1/conversations/bulk/"


def test_a_bulk_action_reports_each_conversation(world, api, many):
    targets = [many[0].pk, many[1].pk, world.conversation_b.pk, 999999, many[0].pk]

    response = api("agent_a").post(
        BULK, {"ids": targets, "action": "status", "status": "closed"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json() == {
        "done": 2,
        "failed": 2,
        "results": [
            {"id": many[0].pk, "done": True, "code": "", "detail": ""},
            {"id": many[1].pk, "done": True, "code": "", "detail": ""},
            {
                "id": world.conversation_b.pk,
                "done": False,
                "code": "not_found",
                "detail": "No such conversation.",
            },
            {"id": 999999, "done": False, "code": "not_found", "detail": "No such conversation."},
        ],
    }
    statuses = dict(Conversation.objects.values_list("pk", "status"))
    assert statuses[many[0].pk] == statuses[many[1].pk] == Status.CLOSED
    assert statuses[world.conversation_b.pk] == Status.NEW
    assert (
        ConversationEvent.objects.filter(
            kind=EventKind.STATUS_CHANGED, actor=world.agent_a, data__status="closed"
        ).count()
        == 2
    )


def test_a_bulk_id_beyond_the_databases_range_is_a_bad_request(world, api):
    response = api("agent_a").post(BULK, {"ids": [2**64], "action": "unassign"}, format="json")
    assert response.status_code == 400


def test_bulk_taking_needs_reply_rights_per_conversation(world, api, many):
    view_only = ChannelFactory(name="Channel C")
    ChannelAccessFactory(channel=view_only, team=world.team_a, can_reply=False)
    watched = ConversationFactory(channel=view_only, team=world.team_a)
    client = api("agent_a")

    taken = client.post(
        BULK, {"ids": [many[0].pk, watched.pk], "action": "assign_me"}, format="json"
    )

    assert [(r["id"], r["code"]) for r in taken.json()["results"]] == [
        (many[0].pk, ""),
        (watched.pk, "forbidden"),
    ]
    assert Conversation.objects.get(pk=many[0].pk).assignee == world.agent_a
    assert Conversation.objects.get(pk=watched.pk).assignee is None
    released = client.post(
        BULK, {"ids": [many[0].pk, watched.pk], "action": "unassign"}, format="json"
    )
    assert released.json()["done"] == 2
    assert Conversation.objects.get(pk=many[0].pk).assignee is None


def test_bulk_tagging_adds_one_tag_by_name(world, api, many):
    response = api("agent_a").post(
        BULK, {"ids": [many[0].pk, many[2].pk], "action": "tag", "tag": " Outage "}, format="json"
    )
    assert response.json()["done"] == 2
    tagged = set(Conversation.objects.filter(tags__name="outage").values_list("pk", flat=True))
    assert tagged == {many[0].pk, many[2].pk}
    assert ConversationEvent.objects.filter(kind=EventKind.TAGGED, data__tag="outage").count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "status", "status": "resolved"}, "ids"),
        ({"ids": [], "action": "unassign"}, "ids"),
        ({"ids": list(range(1, 502)), "action": "unassign"}, "ids"),
        ({"ids": ["x"], "action": "unassign"}, "ids"),
        ({"ids": ["A"], "action": "delete"}, "action"),
        ({"ids": ["A"], "action": "status"}, "status"),
        ({"ids": ["A"], "action": "status", "status": "new"}, "status"),
        ({"ids": ["A"], "action": "status", "status": "escalated"}, "status"),
        ({"ids": ["A"], "action": "tag", "tag": "  "}, "tag"),
        ({"ids": ["A"], "action": "tag", "tag": "x" * 51}, "tag"),
    ],
)
def test_a_bulk_action_is_checked_before_anything_changes(world, api, body, field):
    if "ids" in body:
        body = {**body, "ids": [world.conversation_a.pk if i == "A" else i for i in body["ids"]]}
    response = api("agent_a").post(BULK, body, format="json")
    assert response.status_code == 400 and field in response.json()["fields"], response.json()
    assert Conversation.objects.get(pk=world.conversation_a.pk).status == Status.NEW
    assert not ConversationEvent.objects.exists()


# --- Presence -------------------------------------------------------------------------------


def test_presence_tells_who_else_has_the_conversation_open(world, api):
    agent, manager = api("agent_a"), api("manager")
    assert agent.post(_url(world, "presence"), {}, format="json").json() == {"others": []}
    seen = manager.post(_url(world, "presence"), {"typing": True}, format="json").json()
    assert seen == {
        "others": [
            {
                "user": world.agent_a.pk,
                "name": world.agent_a.get_full_name() or world.agent_a.username,
                "typing": False,
            }
        ]
    }
    others = agent.post(_url(world, "presence"), {}, format="json").json()["others"]
    assert [(o["user"], o["typing"]) for o in others] == [(world.manager.pk, True)]
    assert agents_online(user_ids=[world.agent_a.pk, world.manager.pk, world.agent_b.pk]) == {
        world.agent_a.pk,
        world.manager.pk,
    }
    assert api("agent_b").post(_url(world, "presence"), {}, format="json").status_code == 404
    bad = agent.post(_url(world, "presence"), {"typing": "often"}, format="json")
    assert bad.status_code == 400 and "typing" in bad.json()["fields"]
