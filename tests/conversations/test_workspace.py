"""The conversation workspace: assignment, priority, tags, snooze, canned responses, presence,
replying over a colleague's assignment, retrying a failed reply, and the timeline."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.utils import timezone

from channels_ingest.platforms import Platform
from conversations.escalations import escalation_panel_context
from conversations.models import (
    CannedResponse,
    Conversation,
    DeliveryStatus,
    Direction,
    EventKind,
    Message,
    MessageKind,
    Priority,
    Status,
)
from conversations.selectors import (
    assignable_agents,
    canned_responses_for,
    conversation_workspace,
)
from conversations.services import snoozes_wake
from conversations.tasks import wake_snoozed_conversations
from governance.models import ChannelAccess, Role, TeamMembership
from tests.factories import (
    ConversationFactory,
    DepartmentFactory,
    EscalationLevelFactory,
    EscalationPathFactory,
    IdentityFactory,
    MessageFactory,
    SlaPolicyFactory,
    TagFactory,
    TeamFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()


def url(world, action: str = "") -> str:
    base = f"/inbox/{world.conversation_a.pk}/"
    return f"{base}{action}/" if action else base


def fresh(world) -> Conversation:
    return Conversation.objects.get(pk=world.conversation_a.pk)


def test_an_agent_assigns_a_colleague_of_the_channel_and_can_unassign(login, world):
    client = login(world.agent_a)
    client.post(url(world, "assign"), {"assignee": world.manager.pk})
    assert fresh(world).assignee == world.manager
    client.post(url(world, "assign"), {"assignee": ""})
    assert fresh(world).assignee is None
    assert fresh(world).events.filter(kind=EventKind.ASSIGNED).count() == 2


def test_a_colleague_without_access_to_the_channel_cannot_be_assigned(login, world):
    response = login(world.agent_a).post(
        url(world, "assign"), {"assignee": world.agent_b.pk}, follow=True
    )
    assert fresh(world).assignee is None
    assert "cannot take conversations on this channel" in response.content.decode()


def test_priority_changes_are_recorded(login, world):
    login(world.agent_a).post(url(world, "priority"), {"priority": Priority.URGENT})
    conversation = fresh(world)
    assert conversation.priority == Priority.URGENT
    event = conversation.events.get(kind=EventKind.PRIORITY_CHANGED)
    assert (event.data["previous"], event.data["priority"]) == (Priority.NORMAL, Priority.URGENT)


def test_tags_are_added_once_and_removed(login, world):
    client = login(world.agent_a)
    client.post(url(world, "tag"), {"name": "Refund "})
    client.post(url(world, "tag"), {"name": "refund"})
    assert list(fresh(world).tags.values_list("name", flat=True)) == ["refund"]
    client.post(url(world, "tag"), {"name": "refund", "remove": "1"})
    assert not fresh(world).tags.exists()
    kinds = list(fresh(world).events.values_list("kind", flat=True))
    assert kinds.count(EventKind.TAGGED) == 1 and kinds.count(EventKind.UNTAGGED) == 1


def test_a_snoozed_conversation_waits_and_comes_back_when_its_time_comes(login, world):
    login(world.agent_a).post(url(world, "snooze"), {"preset": "1h"})
    conversation = fresh(world)
    assert conversation.status == Status.PENDING
    assert conversation.snoozed_until > timezone.now() + timedelta(minutes=59)
    assert snoozes_wake() == 0
    assert snoozes_wake(now=timezone.now() + timedelta(hours=2)) == 1
    conversation = fresh(world)
    assert (conversation.status, conversation.snoozed_until) == (Status.OPEN, None)
    assert snoozes_wake(now=timezone.now() + timedelta(hours=3)) == 0
    assert conversation.events.filter(kind=EventKind.WOKE).count() == 1


def test_the_customer_writing_ends_a_snooze(login, world):
    from channels_ingest.pipeline import ingest
    from tests.factories import post

    identity = world.conversation_a.contact.identities.get()
    login(world.agent_a).post(url(world, "snooze"), {"preset": "tomorrow"})
    ingest(
        channel=world.channel_a,
        posts=[post("later", author=identity.platform_user_id, at=timezone.now())],
    )
    conversation = fresh(world)
    assert (conversation.status, conversation.snoozed_until) == (Status.OPEN, None)
    assert wake_snoozed_conversations() == 0


def test_snoozing_into_the_past_is_refused(login, world):
    past = (timezone.localtime() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    response = login(world.agent_a).post(url(world, "snooze"), {"until": past}, follow=True)
    assert "in the future" in response.content.decode()
    assert fresh(world).snoozed_until is None


def test_a_canned_response_is_filled_in_for_the_customer_and_agent(login, world):
    contact = world.conversation_a.contact
    contact.name = "Dana Rossi"
    contact.save()
    canned = CannedResponse.objects.create(
        title="Sorry",
        body="Hi {first_name}, {agent_first_name} here from {channel}.",
        team=world.team_a,
    )
    response = login(world.agent_a).get(url(world, f"canned/{canned.pk}"))
    assert response.content.decode() == (
        f"Hi Dana, {world.agent_a.first_name} here from Channel A."
    )


def test_canned_responses_are_personal_team_or_shared(login, world):
    mine = CannedResponse.objects.create(title="Mine", body="m", owner=world.agent_a)
    theirs = CannedResponse.objects.create(title="Theirs", body="t", owner=world.agent_b)
    team_b = CannedResponse.objects.create(title="Team B", body="b", team=world.team_b)
    shared = CannedResponse.objects.create(title="Everyone", body="e")
    client = login(world.agent_a)
    offered = client.get(url(world)).context["canned_responses"]
    assert [(c["pk"], c["mine"]) for c in offered] == [(shared.pk, False), (mine.pk, True)]
    assert [c.pk for c in canned_responses_for(user=world.agent_a)] == [shared.pk, mine.pk]
    assert client.get(url(world, f"canned/{theirs.pk}")).status_code == 404
    assert client.get(url(world, f"canned/{team_b.pk}")).status_code == 404


def test_colleagues_see_who_else_is_viewing_and_typing(login, world):
    from django.test import Client

    manager = Client()
    manager.force_login(world.manager)
    agent = login(world.agent_a)
    assert agent.post(url(world, "presence")).content.decode().strip() == ""
    manager.post(url(world, "presence"), {"typing": "1"})
    seen = agent.post(url(world, "presence")).content.decode()
    assert world.manager.first_name in seen and "is typing" in seen
    assert world.agent_a.first_name not in seen
    assert "is viewing" in manager.post(url(world, "presence")).content.decode()


def test_replying_over_a_colleagues_assignment_needs_confirmation(
    login, world, django_capture_on_commit_callbacks
):
    Conversation.objects.filter(pk=world.conversation_a.pk).update(assignee=world.manager)
    client = login(world.agent_a)
    refused = client.post(url(world, "reply"), {"body": "Hello!"}, follow=True)
    assert "confirm to reply anyway" in refused.content.decode()
    assert not Message.objects.filter(direction=Direction.OUT).exists()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url(world, "reply"), {"body": "Hello!", "confirm_not_assignee": "on"})
    assert Message.objects.get(direction=Direction.OUT).delivery_status == DeliveryStatus.SENT


def test_a_failed_reply_can_be_sent_again(login, world, django_capture_on_commit_callbacks):
    failed = MessageFactory(
        conversation=world.conversation_a,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        external_id=None,
        delivery_status=DeliveryStatus.FAILED,
        error="503",
        author_user=world.agent_a,
    )
    client = login(world.agent_a)
    assert "Send again" in client.get(url(world)).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url(world, f"messages/{failed.pk}/retry"))
    failed.refresh_from_db()
    assert failed.delivery_status == DeliveryStatus.SENT
    response = client.post(url(world, f"messages/{failed.pk}/retry"), follow=True)
    assert "Only a failed reply" in response.content.decode()


def test_a_message_of_another_conversation_cannot_be_retried_from_this_one(login, world):
    other = MessageFactory(
        conversation=world.conversation_b,
        direction=Direction.OUT,
        external_id=None,
        delivery_status=DeliveryStatus.FAILED,
    )
    assert login(world.agent_a).post(url(world, f"messages/{other.pk}/retry")).status_code == 404


def test_the_timeline_shows_who_did_what(login, world):
    client = login(world.agent_a)
    client.post(url(world, "claim"))
    client.post(url(world, "priority"), {"priority": Priority.HIGH})
    page = client.get(url(world)).content.decode()
    assert "Priority changed" in page and "Assigned" in page
    assert world.agent_a.first_name in page


def test_the_timeline_shows_what_each_event_says(login, world):
    conversation = world.conversation_a
    at = timezone.now()
    for kind, data in (
        (EventKind.TAGGED, {"tag": "refund"}),
        (EventKind.STATUS_CHANGED, {"status": Status.PENDING}),
        (EventKind.RULE_APPLIED, {"name": "VIPs go first"}),
        (EventKind.SLA_BREACHED, {"target": "first_response"}),
        (EventKind.ESCALATED, {"target": "Billing <back office>"}),
        (EventKind.ASSIGNED, {"auto": True}),
        (EventKind.CREATED, ["not", "a", "mapping"]),
    ):
        conversation.events.create(kind=kind, data=data, created_at=at, actor=world.manager)
    page = login(world.agent_a).get(url(world)).content.decode()
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))
    assert "Tag added · " in text and "(refund)" in text
    assert "→ Pending customer" in text
    assert "“VIPs go first”" in text
    assert "SLA breached" in text and "(first)" in text
    assert "→ Billing <back office>" in text and "&lt;back office&gt;" in page
    assert "Assigned" in text and "(auto)" in text
    assert world.manager.get_full_name() in text


def test_sending_again_follows_the_same_rules_as_a_reply(login, world):
    failed = MessageFactory(
        conversation=world.conversation_a,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        external_id=None,
        delivery_status=DeliveryStatus.FAILED,
        author_user=world.manager,
    )
    world.channel_a.access.update(can_reply=False)
    response = login(world.agent_a).post(url(world, f"messages/{failed.pk}/retry"), follow=True)
    assert "may not reply" in response.content.decode()
    assert Message.objects.get(pk=failed.pk).delivery_status == DeliveryStatus.FAILED


def test_a_resolved_or_escalated_conversation_cannot_be_snoozed(login, world):
    for status in (Status.RESOLVED, Status.ESCALATED):
        Conversation.objects.filter(pk=world.conversation_a.pk).update(status=status)
        client = login(world.agent_a)
        assert "Snooze</button>" not in client.get(url(world)).content.decode()
        response = client.post(url(world, "snooze"), {"preset": "1h"}, follow=True)
        assert "cannot be snoozed" in response.content.decode()
        assert fresh(world).status == status


def test_snooze_and_wake_record_the_status_changes(login, world):
    Conversation.objects.filter(pk=world.conversation_a.pk).update(status=Status.OPEN)
    login(world.agent_a).post(url(world, "snooze"), {"preset": "1h"})
    snoozes_wake(now=timezone.now() + timedelta(hours=2))
    changes = [
        (e.data["previous"], e.data["status"])
        for e in fresh(world).events.filter(kind=EventKind.STATUS_CHANGED).order_by("created_at")
    ]
    assert changes == [(Status.OPEN, Status.PENDING), (Status.PENDING, Status.OPEN)]


def _event_names(html_text: str) -> list[str]:
    return re.findall(r"“(event \d+)”", html_text)


def _older(html_text: str) -> str | None:
    found = re.search(r'hx-get="\?events_before=(\d+)"', html_text)
    return found and found.group(1)


def test_a_long_timeline_shows_its_latest_events_and_pages_on_through_the_rest(
    login, world, settings
):
    settings.SCRM_TIMELINE_PAGE_SIZE = 4
    conversation = world.conversation_a
    conversation.events.all().delete()
    start = timezone.now() - timedelta(hours=1)
    # Events 5 and 6 share a time, across the first page's edge: the id breaks the tie.
    for i in range(10):
        conversation.events.create(
            kind=EventKind.RULE_APPLIED,
            data={"name": f"event {i}"},
            created_at=start + timedelta(minutes=i + (i == 5)),
        )
    newest_first = [f"event {i}" for i in range(9, -1, -1)]
    client = login(world.agent_a)
    page = client.get(url(world)).content.decode()
    assert _event_names(page) == newest_first[:4]
    shown, older = _event_names(page), _older(page)
    while older:
        fragment = client.get(
            url(world), {"events_before": older}, HTTP_HX_REQUEST="true"
        ).content.decode()
        assert "<html" not in fragment
        shown, older = shown + _event_names(fragment), _older(fragment)
    assert shown == newest_first

    # Without htmx, the link opens the page at the older events, with a way back.
    anchor = conversation.events.get(data__name="event 6").pk
    page = client.get(url(world), {"events_before": anchor}).content.decode()
    assert _event_names(page) == newest_first[4:8]
    assert "Show the latest events" in page


def test_the_workspace_reads_what_it_shows_around_the_conversation(
    world, django_assert_num_queries
):

    bare = ConversationFactory(channel=world.channel_a)
    found = conversation_workspace(user=world.agent_a, pk=bare.pk)
    assert (found.team_name, found.assignee_name, found.sla_policy_name) == ("", "", "")
    assert found.tags == [] and not found.has_escalation and not found.has_merge_suggestions

    conversation = ConversationFactory(
        channel=world.channel_a,
        team=world.team_a,
        assignee=world.agent_a,
        sla_policy=SlaPolicyFactory(name="Gold"),
    )
    conversation.tags.add(TagFactory(name="refund", color="#f00"), TagFactory(name="billing"))
    contact = conversation.contact
    contact.identities.all().delete()
    IdentityFactory(contact=contact, platform=Platform.X, handle="dana", followers_count=12)
    IdentityFactory(contact=contact, platform=Platform.FACEBOOK, handle="", verified=True)
    agent = type(world.agent_a).objects.get(pk=world.agent_a.pk)
    with django_assert_num_queries(3):  # the user's access, the conversation, the rest
        found = conversation_workspace(user=agent, pk=conversation.pk)
    assert found.conversation == conversation
    assert found.team_name == "Team A" and found.sla_policy_name == "Gold"
    assert found.assignee_name == world.agent_a.get_full_name()
    assert [t["name"] for t in found.tags] == ["billing", "refund"]
    assert found.tags[1]["color"] == "#f00"
    assert [(i["platform"], i["handle"], i["verified"]) for i in found.identities] == [
        (Platform.FACEBOOK, "", True),
        (Platform.X, "dana", False),
    ]
    assert found.identities[1]["followers_count"] == 12
    assert conversation_workspace(user=world.agent_b, pk=conversation.pk) is None


def test_the_workspace_offers_the_agents_and_responses_the_querysets_name(world):
    """The plain query gives what ``assignable_agents`` and ``canned_responses_for`` give."""
    User = type(world.agent_a)
    admin_by_group = User.objects.create_user("zed", first_name="Al", last_name="Zed")
    admin_by_group.groups.add(Group.objects.get_or_create(name=Role.ADMIN)[0])
    User.objects.create_user("gone", first_name="Al", is_active=False, is_superuser=True)
    boss = User.objects.create_user("boss", first_name="Al", is_superuser=True)
    listening = TeamFactory(name="Listeners")
    ChannelAccess.objects.create(team=listening, channel=world.channel_a, can_reply=False)
    listener = User.objects.create_user("ear", first_name="Al")
    TeamMembership.objects.create(team=listening, user=listener)
    CannedResponse.objects.create(title="B shared", body="b")
    CannedResponse.objects.create(title="A team", body="a", team=world.team_a)
    CannedResponse.objects.create(title="C other team", body="c", team=world.team_b)
    CannedResponse.objects.create(title="A mine", body="m", owner=world.agent_a)
    CannedResponse.objects.create(title="A theirs", body="t", owner=world.agent_b)
    for user in (world.agent_a, world.agent_b, world.manager, admin_by_group, listener):
        conversation = world.conversation_a if user != world.agent_b else world.conversation_b
        found = conversation_workspace(user=user, pk=conversation.pk)
        assert [a["pk"] for a in found.agents] == [
            u.pk for u in assignable_agents(conversation=conversation)
        ]
        assert [a["name"] for a in found.agents] == [
            u.get_full_name() or u.username for u in assignable_agents(conversation=conversation)
        ]
        assert sorted(c["pk"] for c in found.canned_responses) == sorted(
            c.pk for c in canned_responses_for(user=user)
        )
    agents = conversation_workspace(user=world.agent_a, pk=world.conversation_a.pk).agents
    # Admins by flag or by group; not the inactive one, nor a team that may only listen.
    assert {"Al Zed", "Al"} <= {a["name"] for a in agents}
    assert listener.pk not in {a["pk"] for a in agents}
    order = [a["pk"] for a in agents]
    # By first name, then user name: Al (boss) before Al (zed).
    assert order.index(boss.pk) < order.index(admin_by_group.pk)


def test_the_workspace_reads_the_escalation_targets_the_panel_would(world):
    billing = DepartmentFactory(name="Billing")
    DepartmentFactory(name="Logistics")
    with_levels = EscalationPathFactory(name="Billing path")
    EscalationLevelFactory(path=with_levels, department=billing)
    EscalationLevelFactory(path=with_levels, user=world.manager)
    EscalationPathFactory(name="Empty path")  # no levels: nothing to escalate along
    EscalationLevelFactory(path=EscalationPathFactory(name="A path"), department=billing)
    conversation = world.conversation_a
    targets = conversation_workspace(user=world.agent_a, pk=conversation.pk).escalation_targets
    read = escalation_panel_context(conversation=conversation, user=world.agent_a, escalated=False)
    given = escalation_panel_context(
        conversation=conversation, user=world.agent_a, escalated=False, targets=targets
    )
    assert [p["name"] for p in read["escalation_paths"]] == ["A path", "Billing path"]
    assert [d["name"] for d in read["departments"]] == ["Billing", "Logistics"]
    for key in ("escalation_paths", "departments"):
        assert given[key] == read[key]
