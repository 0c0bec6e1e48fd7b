"""Conversations and messages through the API: scoping, inbox filters, actions with
optimistic concurrency, replies through governance."""

import pytest

from conversations.models import Conversation, DeliveryStatus, Message, Status
from governance.models import ApprovalStatus, OutboundApproval, PolicyAction, PublishingPolicy
from tests.factories import ConversationFactory, DepartmentFactory, TagFactory

pytestmark = pytest.mark.django_db

SEES_A = {"admin": 200, "manager": 200, "agent_a": 200, "agent_b": 404}


@pytest.mark.parametrize("persona", SEES_A)
def test_conversations_are_scoped_like_the_inbox(world, api, persona):
    client = api(persona)
    ids = {row["id"] for row in client.get("/api/v1/conversations/").json()["results"]}
    assert (world.conversation_a.pk in ids) == (SEES_A[persona] == 200)
    assert (world.conversation_b.pk in ids) == (persona in ("admin", "agent_b"))
    pk = world.conversation_a.pk
    assert client.get(f"/api/v1/conversations/{pk}/").status_code == SEES_A[persona]
    assert client.get(f"/api/v1/conversations/{pk}/messages/").status_code == SEES_A[persona]
    for path, body in (
        ("assign", {"assignee": None}),
        ("status", {"status": "open"}),
        ("resolve", {}),
        ("priority", {"priority": 3}),
        ("tags", {"add": ["vip"]}),
        ("messages", {"kind": "note", "body": "hi"}),
    ):
        response = client.post(f"/api/v1/conversations/{pk}/{path}/", body, format="json")
        assert response.status_code in ((200, 201) if SEES_A[persona] == 200 else (404,)), path
    messages = {row["id"] for row in client.get("/api/v1/messages/").json()["results"]}
    a_message = world.conversation_a.messages.first().pk
    assert (a_message in messages) == (SEES_A[persona] == 200)


def test_the_inbox_filters_apply(world, api):
    other = ConversationFactory(channel=world.channel_a, team=world.team_a, status=Status.PENDING)
    client = api("agent_a")

    def ids(query):
        response = client.get(f"/api/v1/conversations/?{query}")
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    assert ids("status=pending") == {other.pk}
    closed = ConversationFactory(channel=world.channel_a, team=world.team_a, status=Status.CLOSED)
    assert closed.pk not in ids("view=all")
    assert ids("status=closed") == {closed.pk}
    assert {world.conversation_a.pk, other.pk} <= ids("view=all")
    assert ids("view=unassigned&status=new") == {world.conversation_a.pk}
    assert ids("q=never arrived") >= {world.conversation_a.pk}
    assert ids(f"channel={world.channel_b.pk}") == set()
    bad = client.get("/api/v1/conversations/?status=nonsense")
    assert bad.status_code == 400 and "status" in bad.json()["fields"]


def test_the_list_costs_a_fixed_number_of_queries(world, api, django_assert_max_num_queries):
    for _ in range(10):
        conversation = ConversationFactory(channel=world.channel_a, team=world.team_a)
        conversation.tags.add(TagFactory())
    client = api("agent_a")
    with django_assert_max_num_queries(12):
        response = client.get("/api/v1/conversations/")
    assert len(response.json()["results"]) == 11


def test_a_write_with_a_stale_etag_is_refused_with_412(world, api):
    client = api("agent_a")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/"
    read = client.get(url)
    etag = read["ETag"]
    assert read.json()["version"] == etag
    first = client.post(url + "priority/", {"priority": 4}, format="json", HTTP_IF_MATCH=etag)
    assert first.status_code == 200 and first["ETag"] != etag
    stale = client.post(url + "status/", {"status": "pending"}, format="json", HTTP_IF_MATCH=etag)
    assert stale.status_code == 412
    assert stale.json()["code"] == "precondition_failed"
    world.conversation_a.refresh_from_db()
    assert world.conversation_a.status != Status.PENDING
    fresh = client.post(
        url + "status/", {"status": "pending"}, format="json", HTTP_IF_MATCH=first["ETag"]
    )
    assert fresh.status_code == 200 and fresh.json()["status"] == "pending"


def test_a_write_with_a_stale_updated_at_is_refused_with_409(world, api):
    client = api("agent_a")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/"
    read_at = client.get(url).json()["updated_at"]
    assert client.post(url + "priority/", {"priority": 4}, format="json").status_code == 200
    stale = client.post(url + "resolve/", {"updated_at": read_at}, format="json")
    assert stale.status_code == 409


def test_tags_change_the_version_too(world, api):
    client = api("agent_a")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/"
    etag = client.get(url)["ETag"]
    tagged = client.post(url + "tags/", {"add": ["Refund"]}, format="json", HTTP_IF_MATCH=etag)
    assert tagged.json()["tags"] == ["refund"] and tagged["ETag"] != etag
    removed = client.post(url + "tags/", {"remove": ["refund"]}, format="json")
    assert removed.json()["tags"] == []


def test_assign_only_to_colleagues_who_may_reply(world, api):
    client = api("manager")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/assign/"
    refused = client.post(url, {"assignee": world.agent_b.pk}, format="json")
    assert refused.status_code == 400 and "assignee" in refused.json()["fields"]
    assigned = client.post(url, {"assignee": world.agent_a.pk}, format="json")
    assert assigned.status_code == 200 and assigned.json()["assignee"] == world.agent_a.pk
    assert client.post(url, {"assignee": None}, format="json").json()["assignee"] is None


def test_resolve_and_escalate(world, api):
    client = api("agent_a")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/"
    department = DepartmentFactory(team=world.team_b)
    escalated = client.post(
        url + "escalate/", {"reason": "Billing", "department": department.pk}, format="json"
    )
    assert escalated.status_code == 200, escalated.json()
    assert escalated.json()["status"] == Status.ESCALATED
    again = client.post(
        url + "escalate/", {"reason": "x", "department": DepartmentFactory().pk}, format="json"
    )
    assert again.status_code == 409
    none = client.post(url + "escalate/", {"reason": "x"}, format="json")
    assert none.status_code == 400
    assert client.post(url + "resolve/", {}, format="json").json()["status"] == Status.RESOLVED


def test_a_reply_goes_through_the_publishing_policy(world, api):
    client = api("agent_a")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/messages/"
    sent = client.post(url, {"body": "Sorry about that, we are on it"}, format="json")
    assert sent.status_code == 201, sent.json()
    assert sent.json()["held_for_approval"] is False
    message = Message.objects.get(pk=sent.json()["message"]["id"])
    assert message.direction == "out" and message.author_user == world.agent_a
    assert message.delivery_status in (DeliveryStatus.QUEUED, DeliveryStatus.SENT)

    PublishingPolicy.objects.create(
        banned_terms=["refund"], banned_action=PolicyAction.APPROVE, pii_action=PolicyAction.BLOCK
    )
    held = client.post(url, {"body": "A refund is on its way"}, format="json")
    assert held.status_code == 202
    assert held.json()["held_for_approval"] is True and held.json()["reasons"]
    approval = OutboundApproval.objects.get(pk=held.json()["approval"])
    assert approval.status == ApprovalStatus.PENDING
    assert approval.message.delivery_status == DeliveryStatus.PENDING_APPROVAL

    refused = client.post(url, {"body": "Card 4111 1111 1111 1111"}, format="json")
    assert refused.status_code == 422
    assert refused.json()["code"] == "refused" and refused.json()["fields"]["body"]
    assert not Message.objects.filter(body__contains="4111").exists()


def test_a_reply_over_a_colleagues_assignment_needs_confirming(world, api):
    world.conversation_a.assignee = world.manager
    world.conversation_a.save()
    client = api("agent_a")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/messages/"
    assert client.post(url, {"body": "Hi"}, format="json").status_code == 409
    confirmed = client.post(url, {"body": "Hi", "confirm_not_assignee": True}, format="json")
    assert confirmed.status_code == 201


def test_a_listen_only_channel_refuses_replies_but_takes_notes(world, api):
    world.channel_a.mode = "listen"
    world.channel_a.save()
    client = api("agent_a")
    url = f"/api/v1/conversations/{world.conversation_a.pk}/messages/"
    assert client.post(url, {"body": "Hello"}, format="json").status_code == 422
    note = client.post(url, {"kind": "note", "body": "@mona look"}, format="json")
    assert note.status_code == 201 and note.json()["message"]["kind"] == "note"
    thread = client.get(url).json()["results"]
    assert [m["kind"] for m in thread] == ["mention", "note"]


def test_an_agent_without_reply_rights_cannot_reply(world, api):
    from governance.models import ChannelAccess

    ChannelAccess.objects.filter(channel=world.channel_a).update(can_reply=False)
    response = api("agent_a").post(
        f"/api/v1/conversations/{world.conversation_a.pk}/messages/", {"body": "Hi"}, format="json"
    )
    assert response.status_code == 422
    assert Conversation.objects.get(pk=world.conversation_a.pk).message_count == 0
