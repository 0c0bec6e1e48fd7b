"""What a batch's earlier posts did is seen by its later posts' rules, as it is when the posts
come one poll at a time; a conversation only listened to runs no SLA clock, however it came
to be monitored; and the workspace does not call targets late while their clocks stand
still."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from channels_ingest.models import KeywordList
from channels_ingest.pipeline import ingest
from conversations import services
from conversations.models import (
    Conversation,
    Department,
    DepartmentDelivery,
    Escalation,
    Priority,
    SlaPolicy,
    Status,
)
from conversations.sla import sla_check
from tests.factories import (
    ChannelFactory,
    RoutingRuleFactory,
    TagFactory,
    TeamFactory,
    UserFactory,
    post,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _rule(name, *, events=("message_received",), conditions=(), actions=(), **fields):
    """A rule after those made before it; unlike the factory's, no condition unless given."""
    return RoutingRuleFactory(
        name=name,
        events=list(events),
        conditions=list(conditions),
        actions=list(actions),
        **fields,
    )


def _conversation_of(external_id):
    return Conversation.objects.get(messages__external_id=external_id)


def _ingest(channel, posts, *, batched):
    if batched:
        ingest(channel=channel, posts=posts)
    else:
        for one in posts:
            ingest(channel=channel, posts=[one])


# --- One batch, several posts -----------------------------------------------------------


@pytest.mark.parametrize("batched", [False, True], ids=["one poll each", "one batch"])
def test_a_keyword_tag_of_an_earlier_post_counts_for_a_later_post_s_rules(batched):
    refund = TagFactory(name="refund")
    KeywordList.objects.create(name="refunds", terms=["refund"], tag=refund)
    _rule(
        "Chasing a refund",
        match="all",
        conditions=[
            {"field": "tags", "op": "has_any", "value": [refund.pk]},
            {"field": "text", "op": "contains_any", "value": ["again"]},
        ],
        actions=[{"type": "set_priority", "value": Priority.URGENT}],
    )

    _ingest(
        ChannelFactory(),
        [
            post("p1", body="I want a refund for my order", at=T0),
            post("p2", body="Asking again, hello?", reply_to="p1", at=T0 + timedelta(minutes=1)),
        ],
        batched=batched,
    )

    conversation = _conversation_of("p1")
    assert list(conversation.tags.values_list("name", flat=True)) == ["refund"]
    assert conversation.priority == Priority.URGENT


@pytest.mark.parametrize("batched", [False, True], ids=["one poll each", "one batch"])
def test_an_escalation_a_rule_opened_on_an_earlier_post_is_open_for_a_later_post(batched):
    legal = Department.objects.create(
        name="Legal", delivery=DepartmentDelivery.IN_APP, team=TeamFactory()
    )
    watch = TagFactory(name="watch")
    _rule(
        "Lawyers",
        conditions=[{"field": "text", "op": "contains_any", "value": ["lawyer"]}],
        actions=[{"type": "escalate", "value": {"department": legal.pk}}],
    )
    _rule(
        "Watch escalated customers",
        conditions=[{"field": "open_escalation", "op": "is", "value": True}],
        actions=[{"type": "add_tags", "value": [watch.pk]}],
    )

    _ingest(
        ChannelFactory(),
        [
            post("p1", body="Calling my lawyer", at=T0),
            post("p2", body="Hello?", reply_to="p1", at=T0 + timedelta(minutes=1)),
        ],
        batched=batched,
    )

    conversation = _conversation_of("p1")
    assert Escalation.objects.filter(conversation=conversation).count() == 1
    assert list(conversation.tags.values_list("name", flat=True)) == ["watch"]


# --- Monitoring and the SLA ---------------------------------------------------------------


def _fast_policy(**targets):
    return SlaPolicy.objects.create(
        name="Fast", **({"first_response_minutes": 10, "at_risk_minutes": 5} | targets)
    )


def test_a_breach_rule_that_marks_monitoring_stops_the_clocks(client):
    _fast_policy(resolution_minutes=None)
    _rule("Park it", events=["sla_breached"], actions=[{"type": "mark_monitoring"}])
    ingest(channel=ChannelFactory(), posts=[post("p1", at=timezone.now() - timedelta(hours=1))])

    sla_check(now=timezone.now())

    conversation = _conversation_of("p1")
    assert conversation.is_monitoring
    assert (conversation.sla_due_at, conversation.sla_state()) == (None, "")
    client.force_login(UserFactory(role="admin"))
    rows = client.get("/inbox/?view=monitoring").context["page"].rows
    assert [(r["pk"], r["sla_state"]) for r in rows] == [(conversation.pk, "")]
    assert not client.get("/inbox/?view=monitoring&sla=breached").context["page"].rows


def test_a_reopen_rule_that_marks_monitoring_stops_the_clocks():
    _fast_policy(resolution_minutes=600)
    _rule("Park reopened", events=["conversation_reopened"], actions=[{"type": "mark_monitoring"}])
    ingest(channel=ChannelFactory(), posts=[post("p1", at=timezone.now() - timedelta(minutes=5))])
    conversation = _conversation_of("p1")
    agent = UserFactory(role="admin")
    services.conversation_status_set(conversation=conversation, status=Status.RESOLVED, actor=agent)

    services.conversation_status_set(conversation=conversation, status=Status.OPEN, actor=agent)

    conversation.refresh_from_db()
    assert conversation.is_monitoring
    assert (conversation.sla_due_at, conversation.resolution_due_at) == (None, None)


def test_a_question_after_our_reply_on_a_monitored_conversation_starts_the_next_response():
    _fast_policy(first_response_minutes=60, next_response_minutes=30, resolution_minutes=None)
    channel = ChannelFactory(settings={"monitor_unactionable": True})
    t0 = timezone.now().replace(microsecond=0) - timedelta(minutes=30)
    ingest(channel=channel, posts=[post("p1", body="Just got my new phone", at=t0)])
    conversation = _conversation_of("p1")
    assert conversation.is_monitoring
    services.conversation_reply_create(
        conversation=conversation,
        author=UserFactory(role="admin"),
        body="Enjoy it!",
        at=t0 + timedelta(minutes=5),
    )
    asked = t0 + timedelta(minutes=10)

    ingest(
        channel=channel,
        posts=[post("p2", body="How do I turn on dark mode?", reply_to="p1", at=asked)],
    )

    conversation.refresh_from_db()
    assert not conversation.is_monitoring
    assert conversation.first_response_due_at is None  # we answered already
    assert conversation.next_response_due_at == asked + timedelta(minutes=30)
    assert conversation.sla_due_at == asked + timedelta(minutes=30)


# --- The workspace while the clocks stand still -------------------------------------------


def _service_level(client, conversation):
    html = client.get(f"/inbox/{conversation.pk}/").content.decode()
    section = html[html.index('aria-label="Service level"') :]
    return section[: section.index("</section>")]


def test_the_workspace_shows_a_paused_target_with_the_time_it_had_left(client):
    _fast_policy(first_response_minutes=None, resolution_minutes=60)
    now = timezone.now().replace(microsecond=0)
    ingest(channel=ChannelFactory(), posts=[post("p1", at=now - timedelta(hours=3))])
    conversation = _conversation_of("p1")
    admin = UserFactory(role="admin")
    # Waiting on the customer ten minutes in: 50 minutes of the hour stand still.
    services.conversation_status_set(
        conversation=conversation,
        status=Status.PENDING,
        actor=admin,
        at=now - timedelta(hours=2, minutes=50),
    )
    client.force_login(admin)

    section = _service_level(client, conversation)

    assert "overdue" not in section
    assert "paused with 50m left" in section


def test_a_target_missed_before_the_pause_stays_overdue_in_the_workspace(client):
    _fast_policy(first_response_minutes=None, resolution_minutes=60)
    now = timezone.now().replace(microsecond=0)
    ingest(channel=ChannelFactory(), posts=[post("p1", at=now - timedelta(hours=3))])
    conversation = _conversation_of("p1")
    admin = UserFactory(role="admin")
    services.conversation_status_set(
        conversation=conversation, status=Status.PENDING, actor=admin, at=now - timedelta(hours=1)
    )
    client.force_login(admin)

    section = _service_level(client, conversation)

    assert "overdue since" in section and "paused with" not in section
