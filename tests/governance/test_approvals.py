"""Held outbound messages: how they are held, who approves them, edits, second approvals,
rejections, expiry, and the approvals page."""

from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels_ingest.models import ChannelMode
from channels_ingest.pipeline import ingest
from channels_ingest.tasks import send_message
from conversations.models import (
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    EventKind,
    Message,
    Notification,
    RoutingRule,
)
from governance import approvals as approvals_module
from governance.approvals import (
    EXPIRED_ERROR,
    ApprovalError,
    NotAnApprover,
    approval_approve,
    approval_reject,
    approvals_expire,
    approvals_pending_for,
    reply_submit,
)
from governance.models import (
    ApprovalRequirement,
    ApprovalStatus,
    AuditEntry,
    OutboundApproval,
    PolicyAction,
    PublishingPolicy,
)
from governance.services import Verdict
from governance.tasks import expire_approvals
from tests.factories import (
    ChannelAccessFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
    post,
)

pytestmark = pytest.mark.django_db

HELD_TEXT = "We will refund you today."


@pytest.fixture
def policy(world):
    """Channel A holds replies with "refund" for approval."""
    return PublishingPolicy.objects.create(
        channel=world.channel_a, banned_terms=["refund"], banned_action=PolicyAction.APPROVE
    )


@pytest.fixture
def sends():
    """Counts the send tasks enqueued (they still run, eagerly, through the demo connector)."""
    with mock.patch.object(send_message, "delay", wraps=send_message.delay) as delay:
        yield delay


def _held(world, author=None, text=HELD_TEXT, conversation=None):
    result = reply_submit(
        conversation=conversation or world.conversation_a,
        author=author or world.agent_a,
        body=text,
    )
    assert result.decision.verdict == Verdict.NEEDS_APPROVAL
    return result.approval


def _status(message_id):
    return Message.objects.get(pk=message_id).delivery_status


# --- Holding a reply ------------------------------------------------------------------


def test_an_agents_reply_needing_approval_is_stored_held_and_not_sent(
    login, world, policy, sends, django_capture_on_commit_callbacks
):
    client = login(world.agent_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/inbox/{world.conversation_a.pk}/reply/", {"body": HELD_TEXT}, follow=True
        )
    page = response.content.decode()
    assert "Waiting for approval: It contains the banned term “refund”." in page
    reply = Message.objects.get(conversation=world.conversation_a, direction=Direction.OUT)
    assert reply.delivery_status == DeliveryStatus.PENDING_APPROVAL
    assert reply.author_user == world.agent_a
    approval = reply.approval
    assert approval.status == ApprovalStatus.PENDING
    assert approval.requested_by == world.agent_a
    assert approval.reasons == ["It contains the banned term “refund”."]
    assert approval.levels_required == 1
    assert timedelta(hours=23) < approval.expires_at - timezone.now() <= timedelta(hours=24)
    assert sends.call_count == 0
    # Not sent, so no response yet: the customer still waits.
    conversation = Conversation.objects.get(pk=world.conversation_a.pk)
    assert conversation.first_response_at is None
    assert conversation.message_count == world.conversation_a.message_count
    assert AuditEntry.objects.filter(action="approval.requested", actor=world.agent_a).exists()
    # The thread shows it as waiting, with why.
    assert "Waiting for approval</span>" in page
    assert "badge status-pending" in page


def test_a_refused_reply_stores_nothing_and_shows_the_reasons(login, world, policy):
    policy.banned_action = PolicyAction.BLOCK
    policy.save()
    response = login(world.agent_a).post(
        f"/inbox/{world.conversation_a.pk}/reply/", {"body": HELD_TEXT}, follow=True
    )
    assert "It contains the banned term “refund”." in response.content.decode()
    assert not Message.objects.filter(direction=Direction.OUT).exists()
    assert not OutboundApproval.objects.exists()


def test_an_agent_reply_on_a_listen_only_channel_is_refused(login, world, policy):
    world.channel_a.mode = ChannelMode.LISTEN
    world.channel_a.save()
    result = reply_submit(conversation=world.conversation_a, author=world.agent_a, body="Hi")
    assert result.decision.verdict == Verdict.REFUSED
    assert result.message is None
    assert not Message.objects.filter(direction=Direction.OUT).exists()


def test_an_allowed_reply_is_sent_at_once(world, sends, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = reply_submit(
            conversation=world.conversation_a, author=world.agent_a, body="On it!"
        )
    assert result.approval is None
    assert _status(result.message.pk) == DeliveryStatus.SENT
    assert sends.call_count == 1


def test_the_reply_box_check_shows_the_verdict_before_sending(login, world, policy):
    client = login(world.agent_a)
    url = f"/governance/check/{world.conversation_a.pk}/"
    held = client.post(url, {"body": HELD_TEXT}).content.decode()
    assert "It will wait for approval" in held and "banned term “refund”" in held
    assert "It can be sent." in client.post(url, {"body": "Hello"}).content.decode()
    refused = client.post(url, {"body": "x" * 300}).content.decode()
    assert "It cannot be sent" in refused and "at most 280 characters" in refused
    assert login(world.agent_b).post(url, {"body": "Hello"}).status_code == 404


# --- Approving ------------------------------------------------------------------------


def test_a_manager_approves_and_the_reply_is_sent_once_and_counts_then(
    world, policy, sends, django_capture_on_commit_callbacks
):
    approval = _held(world)
    with django_capture_on_commit_callbacks(execute=True):
        approved = approval_approve(approval=approval, approver=world.manager)
    assert approved.status == ApprovalStatus.APPROVED
    assert approved.decided_by == world.manager
    message = Message.objects.get(pk=approval.message_id)
    assert message.delivery_status == DeliveryStatus.SENT
    assert message.external_id == f"demo-out-{message.pk}"
    assert sends.call_count == 1
    conversation = Conversation.objects.get(pk=world.conversation_a.pk)
    assert conversation.first_response_at == message.created_at
    assert conversation.last_message_preview == HELD_TEXT
    reply_event = ConversationEvent.objects.get(
        conversation=conversation, kind=EventKind.REPLY_SENT
    )
    assert reply_event.actor == world.agent_a  # the author replied; the manager let it out
    assert AuditEntry.objects.filter(action="approval.approved", actor=world.manager).exists()

    with pytest.raises(ApprovalError, match="already approved"):
        approval_approve(approval=approval, approver=world.admin)
    assert sends.call_count == 1


def test_approving_twice_through_the_page_sends_once(
    login, world, policy, sends, django_capture_on_commit_callbacks
):
    approval = _held(world)
    client = login(world.manager)
    url = f"/governance/approvals/{approval.pk}/approve/"
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(url, follow=True)
        second = client.post(url, follow=True)
    assert "Approved: the message is on its way." in first.content.decode()
    assert "This message was already approved." in second.content.decode()
    assert sends.call_count == 1
    assert (
        ConversationEvent.objects.filter(
            kind=EventKind.MESSAGE_SENT, data__message_id=approval.message_id
        ).count()
        == 1
    )


def test_two_approvers_at_the_same_moment_let_it_out_once(
    world, policy, sends, django_capture_on_commit_callbacks, monkeypatch
):
    """Both read the approval as pending; the conditional update lets only one through."""
    approval = _held(world)
    stale = OutboundApproval.objects.select_related("message__channel").get(pk=approval.pk)
    with django_capture_on_commit_callbacks(execute=True):
        approval_approve(approval=approval, approver=world.manager)
    monkeypatch.setattr(approvals_module, "_fresh", lambda a: stale)
    with pytest.raises(ApprovalError, match="at the same moment"):
        approval_approve(approval=approval, approver=world.admin)
    assert sends.call_count == 1
    assert AuditEntry.objects.filter(action="approval.approved").count() == 1


def test_edit_and_approve_sends_the_edited_text_and_keeps_the_original(
    world, policy, django_capture_on_commit_callbacks
):
    approval = _held(world)
    with django_capture_on_commit_callbacks(execute=True):
        approval_approve(
            approval=approval, approver=world.manager, body="  We will look into it today.  "
        )
    approval.refresh_from_db()
    message = Message.objects.get(pk=approval.message_id)
    assert message.body == "We will look into it today."
    assert message.delivery_status == DeliveryStatus.SENT
    assert approval.original_body == HELD_TEXT
    edited = AuditEntry.objects.get(action="approval.edited")
    assert edited.data == {
        "message": message.pk,
        "chars_before": len(HELD_TEXT),
        "chars_after": len("We will look into it today."),
    }


def test_an_edit_the_policy_refuses_is_not_approved(world, policy):
    approval = _held(world)
    with pytest.raises(ApprovalError, match=r"payment card number \(…1111\)"):
        approval_approve(
            approval=approval, approver=world.manager, body="Card 4111 1111 1111 1111 refunded"
        )
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING
    assert Message.objects.get(pk=approval.message_id).body == HELD_TEXT


def test_a_channel_made_listen_only_meanwhile_cannot_send_what_was_held(world, policy):
    approval = _held(world)
    world.channel_a.mode = ChannelMode.LISTEN
    world.channel_a.save()
    with pytest.raises(ApprovalError, match="listen-only"):
        approval_approve(approval=approval, approver=world.manager)
    assert _status(approval.message_id) == DeliveryStatus.PENDING_APPROVAL


def test_nobody_approves_their_own_reply(world, policy):
    approval = _held(world, author=world.manager)
    with pytest.raises(ApprovalError, match="You asked for this approval"):
        approval_approve(approval=approval, approver=world.manager)
    assert approval not in approvals_pending_for(user=world.manager)
    assert approval in approvals_pending_for(user=world.admin)


def test_agents_and_managers_of_other_teams_may_not_approve(login, world, policy):
    approval = _held(world)
    other_manager = UserFactory(role="manager")
    TeamMembershipFactory(team=world.team_b, user=other_manager)
    with pytest.raises(NotAnApprover):
        approval_approve(approval=approval, approver=other_manager)
    with pytest.raises(NotAnApprover):
        approval_approve(approval=approval, approver=world.agent_b)
    assert (
        login(other_manager).post(f"/governance/approvals/{approval.pk}/approve/").status_code
        == 403
    )
    assert (
        login(world.agent_a).post(f"/governance/approvals/{approval.pk}/approve/").status_code
        == 403
    )
    assert _status(approval.message_id) == DeliveryStatus.PENDING_APPROVAL


def test_a_manager_of_a_view_only_team_does_not_approve(world, policy):
    approval = _held(world)
    world.channel_a.access.update(can_reply=False)
    with pytest.raises(NotAnApprover):
        approval_approve(approval=approval, approver=world.manager)


def test_named_approvers_replace_the_managers_and_admins(
    world, policy, django_capture_on_commit_callbacks
):
    approver = UserFactory(role="agent")
    TeamMembershipFactory(team=world.team_b, user=approver)
    policy.approvers.add(approver)
    approval = _held(world)
    for outsider in (world.manager, world.admin):
        with pytest.raises(NotAnApprover):
            approval_approve(approval=approval, approver=outsider)
    assert list(approvals_pending_for(user=world.manager)) == []
    assert list(approvals_pending_for(user=approver)) == [approval]
    with django_capture_on_commit_callbacks(execute=True):
        approval_approve(approval=approval, approver=approver)
    assert _status(approval.message_id) == DeliveryStatus.SENT


def test_a_second_level_needs_a_second_different_approver(
    world, policy, sends, django_capture_on_commit_callbacks
):
    policy.second_level = True
    policy.save()
    approval = _held(world)
    assert approval.levels_required == 2
    with django_capture_on_commit_callbacks(execute=True):
        first = approval_approve(approval=approval, approver=world.manager)
    assert first.status == ApprovalStatus.PENDING
    assert first.first_approved_by == world.manager
    assert _status(approval.message_id) == DeliveryStatus.PENDING_APPROVAL
    assert sends.call_count == 0
    assert AuditEntry.objects.filter(action="approval.first_approved").exists()
    with pytest.raises(ApprovalError, match="second, different approver"):
        approval_approve(approval=approval, approver=world.manager)
    assert approval not in approvals_pending_for(user=world.manager)
    with django_capture_on_commit_callbacks(execute=True):
        second = approval_approve(approval=approval, approver=world.admin)
    assert second.status == ApprovalStatus.APPROVED
    assert second.decided_by == world.admin
    assert _status(approval.message_id) == DeliveryStatus.SENT
    assert sends.call_count == 1


# --- Rejecting and expiring -----------------------------------------------------------


def test_a_rejection_needs_a_note_which_the_agent_sees(login, world, policy, sends):
    approval = _held(world)
    with pytest.raises(ApprovalError, match="Write a note"):
        approval_reject(approval=approval, approver=world.manager, note="  ")
    client = login(world.manager)
    client.post(f"/governance/approvals/{approval.pk}/reject/", {"note": "No refunds by DM."})
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.REJECTED
    assert approval.note == "No refunds by DM."
    message = Message.objects.get(pk=approval.message_id)
    assert message.delivery_status == DeliveryStatus.REJECTED
    assert message.error == f"Not approved by {world.manager.get_full_name()}."
    notification = Notification.objects.get(recipient=world.agent_a)
    assert notification.text == "Your reply was not approved: No refunds by DM."
    assert notification.actor == world.manager
    # The note stays with the approval, where an erasure can reach it, not in the audit log.
    assert AuditEntry.objects.get(action="approval.rejected").data["note_chars"] == 17
    page = login(world.agent_a).get(f"/inbox/{world.conversation_a.pk}/").content.decode()
    assert "No refunds by DM." in page and "badge status-escalated" in page
    assert sends.call_count == 0
    with pytest.raises(ApprovalError, match="already rejected"):
        approval_approve(approval=approval, approver=world.admin)


def test_held_messages_expire_unsent_and_the_author_is_told(world, policy, sends):
    approval = _held(world)
    assert approvals_expire(now=timezone.now() + timedelta(hours=23)) == 0
    assert approvals_expire(now=timezone.now() + timedelta(hours=25)) == 1
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.EXPIRED
    message = Message.objects.get(pk=approval.message_id)
    assert message.delivery_status == DeliveryStatus.REJECTED
    assert message.error == EXPIRED_ERROR == "Not approved in time"
    assert Notification.objects.filter(recipient=world.agent_a).count() == 1
    assert AuditEntry.objects.filter(action="approval.expired").count() == 1
    assert approvals_expire(now=timezone.now() + timedelta(hours=26)) == 0  # safe twice
    assert sends.call_count == 0


def test_an_approval_past_its_deadline_cannot_be_approved(world, policy):
    approval = _held(world)
    with pytest.raises(ApprovalError, match="expired"):
        approval_approve(
            approval=approval, approver=world.manager, now=timezone.now() + timedelta(hours=25)
        )
    assert approval not in approvals_pending_for(
        user=world.manager, now=timezone.now() + timedelta(hours=25)
    )


def test_the_expiry_task_runs_the_service(world, policy):
    approval = _held(world)
    OutboundApproval.objects.filter(pk=approval.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert expire_approvals.delay().get() == 1
    assert _status(approval.message_id) == DeliveryStatus.REJECTED


# --- Automatic acknowledgements --------------------------------------------------------


def _acknowledging_rule():
    RoutingRule.objects.create(
        name="Thank",
        events=["conversation_created"],
        conditions=[],
        actions=[{"type": "acknowledge", "value": "Thanks {first_name}, we are on it."}],
        position=0,
    )


def test_an_acknowledgement_needing_approval_is_held_not_sent(
    world, sends, django_capture_on_commit_callbacks
):
    _acknowledging_rule()
    PublishingPolicy.objects.create(channel=world.channel_a, approval=ApprovalRequirement.EVERYONE)
    with django_capture_on_commit_callbacks(execute=True):
        ingest(channel=world.channel_a, posts=[post("ack-1")])
    conversation = Conversation.objects.get(messages__external_id="ack-1")
    ack = Message.objects.get(conversation=conversation, direction=Direction.OUT)
    assert ack.delivery_status == DeliveryStatus.PENDING_APPROVAL
    assert ack.approval.requested_by is None
    assert list(approvals_pending_for(user=world.manager)) == [ack.approval]
    assert ack.approval.reasons == ["On Channel A, every message is sent after approval."]
    assert sends.call_count == 0
    assert conversation.message_count == 1  # not counted until it goes out
    assert ConversationEvent.objects.filter(
        conversation=conversation, data__has_key="acknowledgement_held"
    ).exists()

    with django_capture_on_commit_callbacks(execute=True):
        approval_approve(approval=ack.approval, approver=world.manager)
    conversation.refresh_from_db()
    assert _status(ack.pk) == DeliveryStatus.SENT
    assert conversation.message_count == 2
    # Still no response by a person: the customer keeps waiting.
    assert conversation.first_response_at is None and conversation.waiting_since is not None


def test_an_automatic_message_is_rejected_without_notifying_anyone(world):
    _acknowledging_rule()
    PublishingPolicy.objects.create(approval=ApprovalRequirement.EVERYONE)
    ingest(channel=world.channel_a, posts=[post("ack-2")])
    approval = OutboundApproval.objects.get()
    approval_reject(approval=approval, approver=world.admin, note="Not this week.")
    assert _status(approval.message_id) == DeliveryStatus.REJECTED
    assert not Notification.objects.exists()


def test_an_acknowledgement_on_a_listen_only_channel_is_refused_even_with_approval(world):
    _acknowledging_rule()
    PublishingPolicy.objects.create(approval=ApprovalRequirement.EVERYONE)
    world.channel_a.mode = ChannelMode.LISTEN
    world.channel_a.save()
    ingest(channel=world.channel_a, posts=[post("ack-3")])
    assert not Message.objects.filter(direction=Direction.OUT).exists()
    assert not OutboundApproval.objects.exists()


def test_each_batch_checks_acknowledgements_against_the_policy_as_it_is_then(world):
    """The policy is built once and reused, but a change by any means (the form, a bulk
    update, a new policy of the channel, a deletion) reaches the next batch."""
    _acknowledging_rule()

    def outcome(external_id):
        ingest(channel=world.channel_a, posts=[post(external_id, author=external_id)])
        conversation = Conversation.objects.get(messages__external_id=external_id)
        ack = Message.objects.filter(conversation=conversation, direction=Direction.OUT).first()
        return ack.delivery_status if ack else "refused"

    assert outcome("p1") == DeliveryStatus.QUEUED  # the built-in default
    default = PublishingPolicy.objects.create(approval=ApprovalRequirement.EVERYONE)
    assert outcome("p2") == DeliveryStatus.PENDING_APPROVAL
    PublishingPolicy.objects.filter(pk=default.pk).update(approval=ApprovalRequirement.NONE)
    assert outcome("p3") == DeliveryStatus.QUEUED
    own = PublishingPolicy.objects.create(
        channel=world.channel_a, banned_terms=["thanks"], banned_action=PolicyAction.BLOCK
    )
    assert outcome("p4") == "refused"
    own.delete()
    assert outcome("p5") == DeliveryStatus.QUEUED


def test_an_unchanged_policy_is_reused_and_read_in_one_plain_query(world):
    from conversations import setup_cache

    PublishingPolicy.objects.create(channel=world.channel_a, banned_terms=["refund"])
    first = setup_cache.publishing_policy(world.channel_a)
    with CaptureQueriesContext(connection) as queries:
        again = setup_cache.publishing_policy(world.channel_a)
    assert again is first
    assert again.banned_terms == ["refund"]
    assert len(queries) == 1
    assert "governance_publishingpolicy" in queries[0]["sql"]
    assert setup_cache.publishing_policy(world.channel_b).pk is None  # the built-in default


# --- The approvals page ----------------------------------------------------------------


def test_the_queue_lists_what_the_user_may_approve(login, world, policy):
    approval = _held(world)
    PublishingPolicy.objects.create(
        channel=world.channel_b, banned_terms=["refund"], banned_action=PolicyAction.APPROVE
    )
    on_b = _held(world, author=world.agent_b, conversation=world.conversation_b)
    manager_page = login(world.manager).get("/governance/approvals/")
    assert [a.pk for a in manager_page.context["approvals"]] == [approval.pk]
    content = manager_page.content.decode()
    assert HELD_TEXT in content and "banned term “refund”" in content
    assert world.agent_a.get_full_name() in content
    assert f"/inbox/{world.conversation_a.pk}/" in content
    assert "Approve and send" in content and "Edit and approve" in content
    admin_page = login(world.admin).get("/governance/approvals/")
    assert {a.pk for a in admin_page.context["approvals"]} == {approval.pk, on_b.pk}


def test_the_navigation_counts_what_waits_for_approvers_only(login, world, policy):
    _held(world)
    manager_page = login(world.manager).get("/inbox/").content.decode()
    assert 'href="/governance/approvals/"' in manager_page
    assert 'aria-label="1 waiting"' in manager_page
    agent_page = login(world.agent_a).get("/inbox/").content.decode()
    assert 'href="/governance/approvals/"' not in agent_page


def test_a_named_approver_who_is_an_agent_sees_the_queue(login, world, policy):
    approver = UserFactory(role="agent")
    login(world.admin).post(
        f"/governance/policies/{policy.pk}/",
        {
            "approval": "none",
            "approvers": [approver.pk],
            "approval_expiry_hours": "24",
            "banned_terms": "refund",
            "banned_action": "approve",
            "pii_action": "block",
            "links_action": "off",
            "quiet_hours_action": "approve",
        },
    )
    _held(world)
    client = login(approver)
    assert 'href="/governance/approvals/"' in client.get("/inbox/").content.decode()
    assert len(client.get("/governance/approvals/").context["approvals"]) == 1


def test_the_decided_tab_shows_the_history(
    login, world, policy, django_capture_on_commit_callbacks
):
    sent, rejected = _held(world), _held(world, text="A refund, maybe")
    with django_capture_on_commit_callbacks(execute=True):
        approval_approve(approval=sent, approver=world.manager)
    approval_reject(approval=rejected, approver=world.manager, note="Too vague")
    page = login(world.manager).get("/governance/approvals/decided/")
    assert [a.pk for a in page.context["approvals"]] == [rejected.pk, sent.pk]
    content = page.content.decode()
    assert "Too vague" in content and "Approved by" in content
    assert login(world.manager).get("/governance/approvals/").context["approvals"] == []


@pytest.mark.parametrize("tab", ["", "decided/"])
def test_the_approvals_page_costs_a_fixed_number_of_queries(
    login, world, policy, django_assert_max_num_queries, tab
):
    client = login(world.manager)
    _held(world)
    if tab:
        approval_reject(approval=OutboundApproval.objects.get(), approver=world.admin, note="No")
    with CaptureQueriesContext(connection) as few:
        assert client.get(f"/governance/approvals/{tab}").status_code == 200
    team_c = TeamFactory()
    ChannelAccessFactory(channel=world.channel_a, team=team_c)
    for n in range(8):
        agent = UserFactory(role="agent")
        TeamMembershipFactory(team=team_c, user=agent)
        approval = _held(world, author=agent, text=f"Refund number {n}")
        if tab:
            approval_reject(approval=approval, approver=world.admin, note="No")
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(f"/governance/approvals/{tab}")
    assert len(response.context["approvals"]) == 9


def test_the_navigation_count_is_kept_and_counted_again_after_the_approvers_own_changes(
    login, world, policy, settings
):
    settings.SCRM_INBOX_COUNTS_SECONDS = 60
    first = _held(world)
    client = login(world.manager)
    assert 'aria-label="1 waiting"' in client.get("/inbox/").content.decode()
    _held(world, text=HELD_TEXT + " again")
    # Kept: another request for approval shows within the inbox's refresh interval...
    assert 'aria-label="1 waiting"' in client.get("/inbox/").content.decode()
    # ... or at once after anything the approver changes.
    client.post(f"/inbox/{world.conversation_b.pk}/priority/", {"priority": 3})
    assert 'aria-label="2 waiting"' in client.get("/inbox/").content.decode()
    client.post(f"/governance/approvals/{first.pk}/approve/")
    assert 'aria-label="1 waiting"' in client.get("/inbox/").content.decode()
