"""Retention: old texts and payloads go per channel policy; the facts reports read stay."""

from dataclasses import asdict
from datetime import timedelta

import pytest
from django.utils import timezone

from channels_ingest.models import (
    DeadLetter,
    DeadLetterStatus,
    WebhookDelivery,
    WebhookStatus,
)
from conversations.models import (
    ConversationEvent,
    DeliveryStatus,
    Direction,
    Escalation,
    EscalationStatus,
    EscalationTrigger,
    EventKind,
    Message,
    MessageKind,
    Notification,
    Status,
    WebhookCall,
    WebhookCallStatus,
)
from governance import retention
from governance.models import AuditEntry, RetentionAction, RetentionPolicy, RetentionRun
from governance.retention import REMOVED, policy_cutoff, retention_apply
from governance.tasks import apply_retention
from kpis.facts import facts_refresh
from kpis.metrics import DateRange, summary
from kpis.views import RANGES
from tests.factories import (
    ChannelFactory,
    ConversationFactory,
    IdentityFactory,
    MessageFactory,
    WebhookEndpointFactory,
)

pytestmark = pytest.mark.django_db


def _policy(channel=None, *, days=30, action=RetentionAction.ANONYMISE, active=True):
    return RetentionPolicy.objects.create(
        channel=channel, keep_days=days, action=action, is_active=active
    )


def _conversation(channel, *, age_days, now, status=Status.OPEN, body="Where is my parcel?"):
    """A conversation started ``age_days`` ago: the customer's message, our reply an hour
    later, an internal note, and the facts the reports read."""
    start = now - timedelta(days=age_days)
    identity = IdentityFactory()
    conversation = ConversationFactory(
        channel=channel,
        contact=identity.contact,
        subject=body,
        last_message_preview=body,
        status=status,
        created_at=start,
        last_message_at=start + timedelta(hours=2),
        first_response_at=start + timedelta(hours=1),
        resolved_at=start + timedelta(hours=3) if status == Status.RESOLVED else None,
        message_count=2,
        inbound_count=1,
        sentiment=-0.4,
    )
    MessageFactory(
        conversation=conversation,
        author_identity=identity,
        body=body,
        raw={"id": "p1", "text": body},
        sentiment=-0.4,
        language="en",
        keywords=["parcel"],
        created_at=start,
    )
    MessageFactory(
        conversation=conversation,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        body="Sorry, we are on it",
        external_id=None,
        delivery_status=DeliveryStatus.SENT,
        created_at=start + timedelta(hours=1),
        raw={"id": "r1"},
    )
    MessageFactory(
        conversation=conversation,
        direction=Direction.OUT,
        kind=MessageKind.NOTE,
        body="Customer sounds upset",
        external_id=None,
        delivery_status=DeliveryStatus.SENT,
        created_at=start + timedelta(hours=2),
    )
    ConversationEvent.objects.create(
        conversation=conversation, kind=EventKind.CREATED, created_at=start
    )
    return conversation


def kpi_totals(user):
    """Every figure of the reports, for each of the dashboard's preset ranges, from facts
    computed after whatever retention changed."""
    facts_refresh()
    return {days: asdict(summary(user=user, range_=DateRange.last(days))) for days in RANGES}


# --- What goes and what stays ------------------------------------------------------------


def test_anonymising_replaces_old_texts_and_keeps_the_facts(world):
    now = timezone.now()
    _policy(days=30)
    old = _conversation(world.channel_a, age_days=40, now=now)
    recent = _conversation(world.channel_a, age_days=10, now=now, body="Fresh question")

    [run] = [r for r in retention_apply(now=now) if r.channel_id == world.channel_a.pk]

    for message in Message.objects.filter(conversation=old):
        assert message.body == REMOVED
        assert message.raw == {}
    inbound = Message.objects.get(conversation=old, direction=Direction.IN)
    assert (inbound.sentiment, inbound.language, inbound.keywords) == (-0.4, "en", ["parcel"])
    assert inbound.created_at == old.created_at
    old.refresh_from_db()
    assert (old.subject, old.last_message_preview) == ("", "")
    assert (old.message_count, old.inbound_count, old.sentiment) == (2, 1, -0.4)
    assert old.first_response_at is not None
    assert set(Message.objects.filter(conversation=recent).values_list("body", flat=True)) == {
        "Fresh question",
        "Sorry, we are on it",
        "Customer sounds upset",
    }
    recent.refresh_from_db()
    assert recent.subject == "Fresh question"
    assert (run.messages, run.payloads, run.action) == (3, 1, RetentionAction.ANONYMISE)
    assert run.finished_at is not None


def test_deleting_removes_old_messages_but_not_their_conversations(world, login):
    now = timezone.now()
    _policy(days=120, action=RetentionAction.DELETE)
    old = _conversation(world.channel_a, age_days=200, now=now, status=Status.RESOLVED)
    recent = _conversation(world.channel_a, age_days=100, now=now)

    runs = retention_apply(now=now)

    assert not Message.objects.filter(conversation=old).exists()
    assert Message.objects.filter(conversation=recent).count() == 3
    old.refresh_from_db()
    assert (old.status, old.message_count, old.inbound_count) == (Status.RESOLVED, 2, 1)
    assert old.events.filter(kind=EventKind.CREATED).exists()
    assert old.subject == ""
    assert sum(r.messages for r in runs) == 3
    # The conversation page still opens, with its thread empty.
    for user in (world.admin, world.agent_a):
        assert login(user).get(f"/inbox/{old.pk}/").status_code == 200


def test_deleting_never_reaches_into_the_reports_range(world):
    now = timezone.now()
    # Saved past the settings page, which refuses this: the run still keeps 90 days.
    policy = _policy(days=10, action=RetentionAction.DELETE)
    kept = _conversation(world.channel_a, age_days=60, now=now)

    [run, *_] = retention_apply(now=now)

    assert Message.objects.filter(conversation=kept).count() == 3
    assert run.cutoff == now - timedelta(days=90) == policy_cutoff(policy=policy, now=now)


def test_the_reports_range_the_delete_floor_protects_is_the_longest_one():
    assert max(RANGES) == retention.REPORTS_LONGEST_RANGE_DAYS


def test_a_message_exactly_at_the_cutoff_is_kept(world):
    now = timezone.now()
    _policy(days=30)
    cutoff = now - timedelta(days=30)
    conversation = ConversationFactory(channel=world.channel_a, last_message_at=now)
    at_cutoff = MessageFactory(conversation=conversation, body="at", created_at=cutoff)
    before = MessageFactory(
        conversation=conversation, body="before", created_at=cutoff - timedelta(microseconds=1)
    )

    retention_apply(now=now)

    at_cutoff.refresh_from_db()
    before.refresh_from_db()
    assert (at_cutoff.body, before.body) == ("at", REMOVED)


def test_a_channel_policy_overrides_the_default(world):
    now = timezone.now()
    _policy(days=30)
    _policy(world.channel_b, days=365)
    channel_c = ChannelFactory(name="Channel C")
    _policy(channel_c, days=30, active=False)
    on_a = _conversation(world.channel_a, age_days=60, now=now)
    on_b = _conversation(world.channel_b, age_days=60, now=now)
    on_c = _conversation(channel_c, age_days=60, now=now)

    runs = retention_apply(now=now)

    assert {r.channel_id for r in runs} == {world.channel_a.pk, world.channel_b.pk}
    assert not Message.objects.filter(conversation=on_a).exclude(body=REMOVED).exists()
    assert not Message.objects.filter(conversation=on_b, body=REMOVED).exists()
    # An inactive policy of its own keeps everything on that channel, whatever the default.
    assert not Message.objects.filter(conversation=on_c, body=REMOVED).exists()


def test_without_any_policy_everything_is_kept(world):
    now = timezone.now()
    conversation = _conversation(world.channel_a, age_days=4000, now=now)

    assert retention_apply(now=now) == []
    assert not Message.objects.filter(conversation=conversation, body=REMOVED).exists()


def test_a_second_run_changes_nothing_and_reports_zero(world):
    now = timezone.now()
    _policy(days=30)
    _policy(world.channel_b, days=120, action=RetentionAction.DELETE)
    _conversation(world.channel_a, age_days=40, now=now)
    _conversation(world.channel_b, age_days=130, now=now)
    DeadLetter.objects.create(
        channel=world.channel_a,
        source="poll",
        raw="{}",
        error="x",
        created_at=now - timedelta(days=99),
    )

    first = retention_apply(now=now)
    snapshot = list(Message.objects.order_by("pk").values_list("pk", "body", "raw"))
    second = retention_apply(now=now)

    assert sum(r.messages + r.payloads for r in first) > 0
    assert [(r.messages, r.payloads) for r in second] == [(0, 0)] * len(second)
    assert list(Message.objects.order_by("pk").values_list("pk", "body", "raw")) == snapshot
    assert len(second) == len(first) == 2


def test_batches_cover_every_row(world, monkeypatch):
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    now = timezone.now()
    _policy(days=30)
    conversation = ConversationFactory(channel=world.channel_a, last_message_at=now)
    same_time = now - timedelta(days=50)
    for n in range(7):
        MessageFactory(conversation=conversation, body=f"m{n}", created_at=same_time)

    [run, _] = retention_apply(now=now)

    assert run.messages == 7
    assert not Message.objects.filter(conversation=conversation).exclude(body=REMOVED).exists()


def test_replies_still_on_their_way_keep_their_text(world):
    now = timezone.now()
    _policy(days=30)
    queued = MessageFactory(
        conversation=world.conversation_a,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        external_id=None,
        body="Queued reply",
        delivery_status=DeliveryStatus.QUEUED,
        created_at=now - timedelta(days=40),
    )

    retention_apply(now=now)

    queued.refresh_from_db()
    assert queued.body == "Queued reply"


def test_payloads_notifications_escalations_and_webhook_calls_go_with_the_channel(world):
    now = timezone.now()
    old_at, recent_at = now - timedelta(days=40), now - timedelta(days=5)
    _policy(days=30)
    conversation = _conversation(world.channel_a, age_days=40, now=now)
    letters = [
        DeadLetter.objects.create(
            channel=world.channel_a, source="poll", raw='{"text": "hi"}', error="x", created_at=at
        )
        for at in (old_at, recent_at)
    ]
    orphan = DeadLetter.objects.create(
        channel=None, source="poll", raw='{"text": "hi"}', error="x", created_at=old_at
    )
    processed, pending, fresh = (
        WebhookDelivery.objects.create(
            channel=world.channel_a, body='{"text": "hi"}', received_at=at, status=status
        )
        for at, status in (
            (old_at, WebhookStatus.PROCESSED),
            (old_at, WebhookStatus.PENDING),
            (recent_at, WebhookStatus.PROCESSED),
        )
    )
    notification = Notification.objects.create(
        recipient=world.agent_a, conversation=conversation, text="Parcel lost", created_at=old_at
    )
    escalation = Escalation.objects.create(
        conversation=conversation,
        trigger=EscalationTrigger.AGENT,
        reason="Parcel lost twice",
        answer="Refunded",
        status=EscalationStatus.CLOSED,
        created_at=old_at,
    )
    event = ConversationEvent.objects.create(
        conversation=conversation,
        kind=EventKind.ESCALATED,
        data={"escalation": escalation.pk, "reason": "Parcel lost twice"},
        created_at=old_at,
    )
    endpoint = WebhookEndpointFactory()
    call = WebhookCall.objects.create(
        endpoint=endpoint,
        key="k1",
        event="rule.matched",
        payload={"conversation": {"id": conversation.pk, "last_message": "Parcel lost"}},
        status=WebhookCallStatus.DELIVERED,
        created_at=old_at,
    )

    runs = {r.channel_id: r for r in retention_apply(now=now)}

    for row in (*letters, orphan, processed, pending, fresh, notification, escalation, event, call):
        row.refresh_from_db()
    assert (letters[0].raw, letters[0].status) == (REMOVED, DeadLetterStatus.DISCARDED)
    assert letters[1].raw == '{"text": "hi"}'
    assert orphan.raw == REMOVED
    assert (processed.body, pending.body, fresh.body) == (
        REMOVED,
        '{"text": "hi"}',
        '{"text": "hi"}',
    )
    assert notification.text == REMOVED
    assert (escalation.reason, escalation.answer) == (REMOVED, REMOVED)
    assert escalation.status == EscalationStatus.CLOSED
    assert event.data == {"escalation": escalation.pk, "reason": REMOVED}
    assert call.payload == {"removed": REMOVED, "conversation": {"id": conversation.pk}}
    # conversation, notification, escalation, dead letter, delivery, webhook call
    assert runs[world.channel_a.pk].payloads == 6
    assert runs[None].payloads == 1


def test_each_run_is_audited(world):
    _policy(days=30)

    runs = retention_apply()

    entries = AuditEntry.objects.filter(action="retention.applied")
    assert {e.object_id for e in entries} == {str(r.pk) for r in runs}
    entry = entries.get(object_id=str(runs[0].pk))
    assert entry.data["messages"] == 0 and entry.data["action_taken"] == "anonymise"


def test_the_nightly_task_applies_retention(world):
    now = timezone.now()
    _policy(days=30)
    conversation = _conversation(world.channel_a, age_days=40, now=now)

    assert apply_retention.delay().get() == 2

    assert not Message.objects.filter(conversation=conversation).exclude(body=REMOVED).exists()
    assert RetentionRun.objects.count() == 2


# --- Reports -----------------------------------------------------------------------------


def test_kpi_totals_are_identical_before_and_after_retention(world):
    now = timezone.now()
    for channel in (world.channel_a, world.channel_b):
        for age, status in (
            (2, Status.OPEN),
            (20, Status.RESOLVED),
            (45, Status.RESOLVED),
            (85, Status.PENDING),
            (100, Status.RESOLVED),
            (200, Status.CLOSED),
        ):
            _conversation(channel, age_days=age, now=now, status=status)
    _policy(days=7)
    _policy(world.channel_b, days=90, action=RetentionAction.DELETE)
    before = {user: kpi_totals(user) for user in (world.admin, world.manager)}
    assert before[world.admin][90]["inbound"] > 0
    assert before[world.admin][30]["outcomes"]["resolved"] > 0

    runs = retention_apply()

    assert sum(r.messages for r in runs) > 0
    assert Message.objects.filter(body=REMOVED).exists()
    assert {user: kpi_totals(user) for user in before} == before


# --- The settings page -------------------------------------------------------------------


def test_the_settings_page_lists_policies_and_runs(login, world):
    _policy(days=30)
    _policy(world.channel_b, days=400, action=RetentionAction.DELETE)
    retention_apply()

    page = login(world.admin).get("/governance/retention/").content.decode()

    assert "Default policy" in page and "Channel A" in page and "Channel B" in page
    assert "400 days, then delete messages" in page.lower()
    assert "Latest runs" in page and "Run now" in page


def test_an_admin_sets_the_default_and_a_channel_policy(login, world):
    client = login(world.admin)

    response = client.post(
        "/governance/retention/",
        {
            "scope": "default",
            "default-keep_days": "60",
            "default-action": "anonymise",
            "default-is_active": "on",
        },
    )
    assert response.status_code == 302
    scope = str(world.channel_a.pk)
    client.post(
        "/governance/retention/",
        {"scope": scope, f"{scope}-keep_days": "180", f"{scope}-action": "delete"},
    )

    default = RetentionPolicy.objects.get(channel=None)
    own = RetentionPolicy.objects.get(channel=world.channel_a)
    assert (default.keep_days, default.action, default.is_active) == (60, "anonymise", True)
    assert (own.keep_days, own.action, own.is_active) == (180, "delete", False)
    entry = AuditEntry.objects.get(action="retention_policy.created", object_id=str(own.pk))
    assert entry.after == {"keep_days": 180, "action": "delete", "is_active": False}
    assert entry.actor == world.admin

    client.post(f"/governance/retention/channels/{world.channel_a.pk}/default/")
    assert not RetentionPolicy.objects.filter(channel=world.channel_a).exists()
    assert AuditEntry.objects.filter(action="retention_policy.deleted").exists()


def test_deleting_sooner_than_the_reports_range_is_refused(login, world):
    response = login(world.admin).post(
        "/governance/retention/",
        {
            "scope": "default",
            "default-keep_days": "30",
            "default-action": "delete",
            "default-is_active": "on",
        },
    )

    assert response.status_code == 400
    assert "Deleting needs at least 90 days" in response.content.decode()
    assert not RetentionPolicy.objects.exists()


def test_run_now_runs_retention_and_is_audited(login, world):
    now = timezone.now()
    _policy(days=30)
    conversation = _conversation(world.channel_a, age_days=40, now=now)

    response = login(world.admin).post("/governance/retention/run/", follow=True)

    assert "Retention ran on 2 channels: 3 messages" in response.content.decode()
    assert not Message.objects.filter(conversation=conversation).exclude(body=REMOVED).exists()
    entries = AuditEntry.objects.filter(action="retention.applied")
    assert entries.count() == 2 and {e.actor for e in entries} == {world.admin}
