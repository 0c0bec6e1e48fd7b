"""Escalations: to a department in the app, a person, a department by email or by webhook;
raising through a path; answering in the app and through the link back; taking back; settling
on resolve; and who may do what."""

import hashlib
import hmac
import json
import re
import time
from urllib.parse import urlsplit

import pytest
import responses
from django.core import mail, signing
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.urls import include, path
from django.utils import timezone

from contacts.models import MergeSuggestion
from conversations.escalations import (
    ANSWER_SALT,
    escalated_conversation_ids,
    escalation_answer,
    escalation_answer_url,
    escalation_from_token,
    escalation_open,
    escalation_panel_context,
    escalation_raise,
    escalation_withdraw,
    escalations_settle,
)
from conversations.models import (
    ConversationEvent,
    DepartmentDelivery,
    Escalation,
    EscalationOutcome,
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
from conversations.services import conversation_status_set
from governance.models import Role
from scrm.urls import urlpatterns as project_urlpatterns
from tests.factories import (
    ConversationFactory,
    DepartmentFactory,
    EscalationLevelFactory,
    EscalationPathFactory,
    MessageFactory,
    TeamMembershipFactory,
    UserFactory,
    WebhookEndpointFactory,
)

# The project mounts these pages at /escalations/; until its URLconf does, the tests do.
urlpatterns = list(project_urlpatterns)
if not any(getattr(p, "namespace", None) == "escalations" for p in urlpatterns):
    urlpatterns.append(path("escalations/", include("conversations.escalation_urls")))

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

HOOK_URL = "https://logistics.example.com/hooks/scrm"


def _escalate(conversation, actor, **target):
    return escalation_open(
        conversation=conversation,
        trigger=EscalationTrigger.AGENT,
        actor=actor,
        reason="Refund above the agent limit",
        **target,
    )


def _answer_link_of(url):
    """The escalation a link back answers (links are signed with the time, so one made a
    second later differs)."""
    assert url.startswith("http://localhost:8000/escalations/answer/"), url
    return escalation_from_token(urlsplit(url).path.rstrip("/").rsplit("/", 1)[1])


def _events(conversation, kind):
    return list(ConversationEvent.objects.filter(conversation=conversation, kind=kind))


# --- Opening ------------------------------------------------------------------------------


def test_escalating_to_an_in_app_department_puts_it_in_the_team_queue(
    login, world, conversation, tier2
):
    response = login(world.agent_a).post(
        f"/escalations/{conversation.pk}/escalate/",
        {"target": f"department:{tier2.pk}", "reason": "Refund above the agent limit"},
    )

    assert response.status_code == 302
    assert response["Location"] == f"/inbox/{conversation.pk}/"
    conversation.refresh_from_db()
    assert conversation.status == Status.ESCALATED
    assert conversation.team_id == tier2.team_id
    assert conversation.assignee_id is None
    escalation = Escalation.objects.get(conversation=conversation)
    assert escalation.status == EscalationStatus.OPEN
    assert escalation.department == tier2
    assert escalation.previous_assignee == world.agent_a
    assert escalation.previous_team == world.team_a
    assert escalation.created_by == world.agent_a
    [event] = _events(conversation, EventKind.ESCALATED)
    assert event.actor == world.agent_a
    assert event.data == {
        "escalation": escalation.pk,
        "target": "Tier 2",
        "trigger": "agent",
        "reason": "Refund above the agent limit",
        "rule": "",
        "path": None,
        "level": 0,
    }
    [status_change] = _events(conversation, EventKind.STATUS_CHANGED)
    assert status_change.data == {"previous": "open", "status": "escalated"}
    notified = set(Notification.objects.values_list("recipient__username", flat=True))
    assert notified == {"dana"}


def test_escalating_to_a_person_assigns_the_conversation_to_them(world, conversation):
    escalation = _escalate(conversation, world.agent_a, user=world.manager)

    conversation.refresh_from_db()
    assert conversation.assignee == world.manager
    assert conversation.team == world.team_a
    assert conversation.status == Status.ESCALATED
    assert escalation.target_name == str(world.manager)
    [notification] = Notification.objects.all()
    assert notification.recipient == world.manager
    assert "Refund above the agent limit" in notification.text


def test_an_email_waiting_in_the_queue_holds_nothing_an_erasure_would_remove(
    world, conversation, django_capture_on_commit_callbacks
):
    from governance.subject_rights import contact_erase

    department = DepartmentFactory(
        name="Logistics", delivery=DepartmentDelivery.EMAIL, team=None, email="log@example.com"
    )
    MessageFactory(
        conversation=conversation,
        author_identity=conversation.contact.identities.first(),
        body="My address is 1 Secret Lane",
    )
    name = conversation.contact.name
    with django_capture_on_commit_callbacks(execute=False) as queued:
        _escalate(conversation, world.agent_a, department=department)
    contact_erase(contact=conversation.contact, actor=world.admin)
    for callback in queued:
        callback()
    for email in mail.outbox:
        assert name not in email.subject + email.body
        assert "Secret Lane" not in email.body


def test_an_email_department_gets_the_last_messages_and_the_link_back(
    client, world, conversation, django_capture_on_commit_callbacks
):
    department = DepartmentFactory(
        name="Logistics", delivery=DepartmentDelivery.EMAIL, team=None, email="log@example.com"
    )
    for i in range(7):
        MessageFactory(conversation=conversation, body=f"Customer message {i}")
    MessageFactory(
        conversation=conversation, kind=MessageKind.NOTE, direction="out", body="Internal gossip"
    )

    with django_capture_on_commit_callbacks(execute=True):
        escalation = _escalate(conversation, world.agent_a, department=department)

    [email] = mail.outbox
    assert email.to == ["log@example.com"]
    assert conversation.contact.name in email.subject
    assert "Refund above the agent limit" in email.body
    assert conversation.contact.name in email.body
    assert world.agent_a.get_full_name() in email.body
    # The last five messages, and no internal notes.
    assert "Customer message 6" in email.body
    assert "Customer message 2" in email.body
    assert "Customer message 1" not in email.body
    assert "Internal gossip" not in email.body
    [link] = re.findall(r"https?://\S+/escalations/answer/\S+/", email.body)
    assert _answer_link_of(link) == escalation
    assert client.get(urlsplit(link).path).status_code == 200
    # The conversation stays with support while an outside department looks at it.
    conversation.refresh_from_db()
    assert (conversation.assignee, conversation.team) == (world.agent_a, world.team_a)
    assert conversation.status == Status.ESCALATED


@responses.activate
def test_a_webhook_department_gets_a_signed_call_with_the_answer_url(
    world, conversation, django_capture_on_commit_callbacks
):
    responses.post(HOOK_URL, status=202)
    endpoint = WebhookEndpointFactory(url=HOOK_URL, secret="logistics-secret")
    department = DepartmentFactory(
        name="Logistics", delivery=DepartmentDelivery.WEBHOOK, team=None, endpoint=endpoint
    )

    with django_capture_on_commit_callbacks(execute=True):
        escalation = _escalate(conversation, world.agent_a, department=department)

    [sent] = responses.calls
    headers, body = sent.request.headers, sent.request.body
    expected = hmac.new(
        b"logistics-secret", f"{headers['X-SCRM-Timestamp']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(headers["X-SCRM-Signature"], f"sha256={expected}")
    assert headers["X-SCRM-Event"] == "escalation.opened"
    payload = json.loads(body)
    assert _answer_link_of(payload["answer_url"]) == escalation
    assert payload["escalation"]["id"] == escalation.pk
    assert payload["escalation"]["reason"] == "Refund above the agent limit"
    assert payload["conversation"]["id"] == conversation.pk
    assert payload["contact"]["name"] == conversation.contact.name
    assert payload["contact"]["handles"]
    assert payload["messages"][-1]["body"] == "My order never arrived"
    call = WebhookCall.objects.get()
    assert call.key == f"escalation:{escalation.pk}:0"
    assert call.status == WebhookCallStatus.DELIVERED


def test_a_rule_escalation_records_the_rule_and_notifies_the_team(world, conversation, tier2):
    escalation = escalation_open(
        conversation=conversation,
        trigger=EscalationTrigger.RULE,
        actor=None,
        reason="Angry VIP",
        department=tier2,
        rule_name="Angry VIPs",
    )

    [event] = _events(conversation, EventKind.ESCALATED)
    assert event.actor is None
    assert event.data["trigger"] == "rule"
    assert event.data["rule"] == "Angry VIPs"
    assert escalation.created_by is None
    [notification] = Notification.objects.all()
    assert notification.text.startswith("A routing rule escalated")


@pytest.mark.parametrize(
    ("delivery", "fields", "message"),
    [
        (DepartmentDelivery.IN_APP, {"team": None}, "has no team"),
        (DepartmentDelivery.EMAIL, {"team": None, "email": ""}, "has no email address"),
        (DepartmentDelivery.WEBHOOK, {"team": None, "endpoint": None}, "has no active webhook"),
    ],
)
def test_a_department_that_cannot_be_reached_is_refused(
    world, conversation, delivery, fields, message
):
    department = DepartmentFactory(delivery=delivery, **fields)

    with pytest.raises(ValueError, match=message):
        _escalate(conversation, world.agent_a, department=department)

    conversation.refresh_from_db()
    assert conversation.status == Status.OPEN
    assert not Escalation.objects.exists()


def test_only_one_target_at_a_time(world, conversation, tier2):
    with pytest.raises(ValueError, match="one path, department or person"):
        _escalate(conversation, world.agent_a, department=tier2, user=world.manager)


def test_another_target_while_escalated_is_refused_with_a_clear_message(world, conversation, tier2):
    _escalate(conversation, world.agent_a, department=tier2)

    with pytest.raises(ValueError, match="already escalated to Tier 2"):
        _escalate(conversation, world.agent_a, user=world.manager)


def test_a_resolved_conversation_is_not_escalated(world, conversation, tier2):
    conversation.status = Status.RESOLVED
    conversation.save()

    with pytest.raises(ValueError, match="reopen it"):
        _escalate(conversation, world.agent_a, department=tier2)


# --- Raising ------------------------------------------------------------------------------


@pytest.fixture
def support_path(world, tier2):
    """Tier 2 (in the app), then the support manager in person."""
    escalation_path = EscalationPathFactory(name="Support ladder")
    EscalationLevelFactory(path=escalation_path, position=0, department=tier2)
    EscalationLevelFactory(path=escalation_path, position=1, user=world.manager)
    return escalation_path


def test_raising_moves_through_the_path_and_stops_at_the_last_level(
    world, conversation, tier2, support_path
):
    escalation = _escalate(conversation, world.agent_a, path=support_path)
    assert (escalation.level, escalation.department) == (0, tier2)

    raised = escalation_raise(escalation=escalation, actor=world.agent_a, reason="No answer")

    assert raised.pk == escalation.pk
    assert (raised.level, raised.department, raised.user) == (1, None, world.manager)
    assert raised.reason.endswith("Level 2: No answer")
    conversation.refresh_from_db()
    assert conversation.assignee == world.manager
    assert conversation.team == world.team_a  # back from Tier 2's queue to the original team
    levels = [e.data["level"] for e in _events(conversation, EventKind.ESCALATED)]
    assert sorted(levels) == [0, 1]
    with pytest.raises(ValueError, match="already at the last level of Support ladder"):
        escalation_raise(escalation=raised, actor=world.agent_a)


def test_escalating_again_on_the_same_path_raises_the_open_escalation(
    world, conversation, support_path
):
    first = _escalate(conversation, world.agent_a, path=support_path)

    again = escalation_open(
        conversation=conversation, trigger=EscalationTrigger.SLA, actor=None, path=support_path
    )

    assert again.pk == first.pk
    assert again.level == 1
    assert Escalation.objects.count() == 1


def test_the_raise_page_shows_the_last_level_error(login, world, conversation, support_path):
    escalation = _escalate(conversation, world.agent_a, path=support_path)
    client = login(world.agent_a)

    raised = client.post(f"/escalations/{escalation.pk}/raise/", follow=True)
    refused = client.post(f"/escalations/{escalation.pk}/raise/", follow=True)

    assert [str(m) for m in raised.context["messages"]] == ["Raised to level 2: mona."]
    assert [str(m) for m in refused.context["messages"]] == [
        "This escalation is already at the last level of Support ladder."
    ]


# --- Answering ----------------------------------------------------------------------------


def test_an_answer_in_the_app_restores_assignee_and_team_and_adds_a_note(
    login, world, conversation, tier2
):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    dana = tier2.team.members.get()

    response = login(dana).post(
        f"/escalations/{escalation.pk}/answer/",
        {"answer": "Approved: refund 120 EUR.", "outcome": ""},
    )

    # Tier 2 does not watch channel A: once answered, the conversation is out of its sight.
    assert response["Location"] == "/inbox/"
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.RETURNED
    assert escalation.answer == "Approved: refund 120 EUR."
    assert escalation.answered_by == dana
    assert escalation.returned_at is not None
    assert escalation.closed_at is None
    conversation.refresh_from_db()
    assert conversation.status == Status.OPEN
    assert conversation.assignee == world.agent_a
    assert conversation.team == world.team_a
    note = Message.objects.get(conversation=conversation, kind=MessageKind.NOTE)
    assert note.direction == "out"
    assert note.author_user == dana
    assert note.body.startswith("Answer from Tier 2")
    assert note.body.endswith("Approved: refund 120 EUR.")
    assert Notification.objects.filter(recipient=world.agent_a).exists()
    [event] = _events(conversation, EventKind.DEESCALATED)
    assert event.data["outcome"] == ""
    assert event.data["message_id"] == note.pk


def test_an_answer_with_a_final_outcome_closes_the_escalation(world, conversation, tier2):
    escalation = _escalate(conversation, world.agent_a, department=tier2)

    answered = escalation_answer(
        escalation=escalation,
        answer="Refunded by bank transfer.",
        outcome=EscalationOutcome.RESOLVED_BY_DEPARTMENT,
        answered_by=world.manager,
    )

    assert answered.status == EscalationStatus.CLOSED
    assert answered.outcome == EscalationOutcome.RESOLVED_BY_DEPARTMENT
    assert answered.closed_at is not None
    with pytest.raises(ValueError, match="already answered"):
        escalation_answer(
            escalation=answered, answer="Again", outcome="", answered_by=world.manager
        )


def test_a_colleague_the_escalation_does_not_wait_on_cannot_answer_it(
    login, world, conversation, tier2
):
    escalation = _escalate(conversation, world.agent_a, department=tier2)

    response = login(world.agent_a).post(
        f"/escalations/{escalation.pk}/answer/", {"answer": "I will do it myself"}, follow=True
    )

    assert [str(m) for m in response.context["messages"]] == [
        "Only Tier 2 or a manager answers this escalation."
    ]
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.OPEN


def test_the_link_back_shows_the_request_and_takes_one_answer(client, world, conversation):
    department = DepartmentFactory(
        name="Logistics", delivery=DepartmentDelivery.EMAIL, team=None, email="log@example.com"
    )
    escalation = _escalate(conversation, world.agent_a, department=department)
    link = urlsplit(escalation_answer_url(escalation=escalation)).path

    page = client.get(link)
    assert page.status_code == 200
    assert "Refund above the agent limit" in page.content.decode()
    assert conversation.contact.name in page.content.decode()
    assert "My order never arrived" in page.content.decode()

    answered = client.post(
        link, {"name": "Lena", "answer": "Parcel is at the depot.", "outcome": "moved_offline"}
    )
    assert answered.status_code == 200
    assert "Thank you" in answered.content.decode()
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.CLOSED
    assert escalation.outcome == EscalationOutcome.MOVED_OFFLINE
    assert escalation.answered_by is None
    assert escalation.answered_by_name == "Lena"
    note = Message.objects.get(conversation=conversation, kind=MessageKind.NOTE)
    assert note.body == "Answer from Logistics (Lena): Parcel is at the depot."

    again = client.post(link, {"name": "Max", "answer": "Something else", "outcome": ""})
    assert again.status_code == 200
    assert "already answered" in again.content.decode()
    escalation.refresh_from_db()
    assert escalation.answer == "Parcel is at the depot."


def test_the_link_back_needs_a_name_and_an_answer(client, world, conversation, tier2):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    link = urlsplit(escalation_answer_url(escalation=escalation)).path

    response = client.post(link, {"name": "", "answer": ""})

    assert "Say who answers." in response.content.decode()
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.OPEN


def test_a_tampered_link_is_a_404_with_a_clear_message(client, world, conversation, tier2):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    link = urlsplit(escalation_answer_url(escalation=escalation)).path
    tampered = link[:-3] + ("A" if link[-3] != "A" else "B") + link[-2:]

    response = client.get(tampered)

    assert response.status_code == 404
    assert "This link is not valid" in response.content.decode()


def test_an_expired_link_is_refused(client, world, conversation, tier2):
    escalation = _escalate(conversation, world.agent_a, department=tier2)

    class Backdated(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(int(time.time()) - 31 * 24 * 3600)

    token = Backdated(salt=ANSWER_SALT).sign_object({"e": escalation.pk, "l": 0})

    with pytest.raises(signing.SignatureExpired):
        escalation_from_token(token)
    assert client.get(f"/escalations/answer/{token}/").status_code == 404


def test_the_link_of_a_level_left_behind_stops_working(world, conversation, support_path):
    escalation = _escalate(conversation, world.agent_a, path=support_path)
    first_link = escalation_answer_url(escalation=escalation)
    token = urlsplit(first_link).path.rstrip("/").rsplit("/", 1)[1]
    assert escalation_from_token(token) == escalation

    escalation_raise(escalation=escalation, actor=world.agent_a)

    with pytest.raises(Escalation.DoesNotExist):
        escalation_from_token(token)


def test_the_link_back_points_at_the_site(settings, world, conversation, tier2):
    settings.SITE_URL = "https://crm.example.com"
    escalation = _escalate(conversation, world.agent_a, department=tier2)

    assert escalation_answer_url(escalation=escalation).startswith(
        "https://crm.example.com/escalations/answer/"
    )
    settings.SITE_URL = ""
    assert escalation_answer_url(escalation=escalation).startswith("http://localhost:8000/")


# --- Taking back and settling -------------------------------------------------------------


def test_taking_an_escalation_back_abandons_it(login, world, conversation, tier2):
    escalation = _escalate(conversation, world.agent_a, department=tier2)

    response = login(world.agent_a).post(f"/escalations/{escalation.pk}/withdraw/")

    assert response.status_code == 302
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.CLOSED
    assert escalation.outcome == EscalationOutcome.ABANDONED
    assert escalation.closed_at is not None
    conversation.refresh_from_db()
    assert conversation.status == Status.OPEN
    assert (conversation.assignee, conversation.team) == (world.agent_a, world.team_a)
    [event] = _events(conversation, EventKind.ESCALATION_CLOSED)
    assert event.data["outcome"] == "abandoned"
    with pytest.raises(ValueError, match="Only an open escalation"):
        escalation_withdraw(escalation=escalation, actor=world.agent_a)


def test_resolving_settles_an_answered_escalation_as_resolved_in_the_channel(
    world, conversation, tier2
):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    escalation_answer(escalation=escalation, answer="Go ahead", outcome="", answered_by=None)

    settled = escalations_settle(
        conversation_id=conversation.pk, status=Status.RESOLVED, at=timezone.now()
    )

    assert settled == 1
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.CLOSED
    assert escalation.outcome == EscalationOutcome.RESOLVED_IN_CHANNEL
    [event] = _events(conversation, EventKind.ESCALATION_CLOSED)
    assert event.data["outcome"] == "resolved_in_channel"


def test_resolving_the_conversation_ends_its_escalation(world, conversation, tier2):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    escalation_answer(escalation=escalation, answer="Go ahead", outcome="", answered_by=None)

    conversation_status_set(conversation=conversation, status=Status.RESOLVED, actor=world.agent_a)

    escalation.refresh_from_db()
    assert escalation.outcome == EscalationOutcome.RESOLVED_IN_CHANNEL


def test_closing_abandons_an_escalation_still_waiting(world, conversation, tier2):
    escalation = _escalate(conversation, world.agent_a, department=tier2)

    def settle():
        return escalations_settle(
            conversation_id=conversation.pk, status=Status.CLOSED, at=timezone.now()
        )

    assert settle() == 1
    assert settle() == 0  # nothing left to settle

    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.CLOSED
    assert escalation.outcome == EscalationOutcome.ABANDONED


# --- Access -------------------------------------------------------------------------------


def test_an_agent_of_another_team_gets_404_on_escalate(login, world, tier2):
    client = login(world.agent_b)

    response = client.post(
        f"/escalations/{world.conversation_a.pk}/escalate/",
        {"target": f"department:{tier2.pk}", "reason": "Mine now"},
    )

    assert response.status_code == 404
    assert not Escalation.objects.exists()


def test_an_agent_of_another_team_gets_404_on_an_escalation(login, world, conversation, tier2):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    client = login(world.agent_b)

    for action in ("raise", "withdraw", "answer"):
        response = client.post(f"/escalations/{escalation.pk}/{action}/", {"answer": "x"})
        assert response.status_code == 404, action
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.OPEN


def test_the_anonymous_are_sent_to_log_in_but_the_link_back_is_open(
    client, world, conversation, tier2
):
    escalation = _escalate(conversation, world.agent_a, department=tier2)

    response = client.post(f"/escalations/{escalation.pk}/withdraw/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    link = urlsplit(escalation_answer_url(escalation=escalation)).path
    assert client.get(link).status_code == 200


def test_the_escalate_page_needs_a_target_and_a_reason(login, world, conversation, tier2):
    client = login(world.agent_a)

    no_reason = client.post(
        f"/escalations/{conversation.pk}/escalate/",
        {"target": f"department:{tier2.pk}", "reason": ""},
        follow=True,
    )
    no_target = client.post(
        f"/escalations/{conversation.pk}/escalate/", {"reason": "Help"}, follow=True
    )
    bad_target = client.post(
        f"/escalations/{conversation.pk}/escalate/",
        {"target": "department:999999", "reason": "Help"},
        follow=True,
    )

    assert "Say why: the department reads the reason first." in [
        str(m) for m in no_reason.context["messages"]
    ]
    assert "Choose one escalation path, department or person." in [
        str(m) for m in no_target.context["messages"]
    ]
    assert bad_target.context["messages"]
    assert not Escalation.objects.exists()


def test_escalation_pages_take_posts_only(login, world, conversation):
    assert login(world.agent_a).get(f"/escalations/{conversation.pk}/escalate/").status_code == 405


def test_a_departments_team_is_offered_what_was_escalated_to_it(world, conversation, tier2):
    dana = tier2.team.members.get()
    _escalate(conversation, world.agent_a, department=tier2)

    ids = list(escalated_conversation_ids(user=dana).values_list("conversation_id", flat=True))

    assert ids == [conversation.pk]
    assert not escalated_conversation_ids(user=world.agent_b).exists()


# --- The workspace panel ------------------------------------------------------------------


def test_the_panel_context_costs_a_fixed_number_of_queries(
    world, conversation, support_path, django_assert_max_num_queries
):
    for i in range(5):
        EscalationLevelFactory(
            path=EscalationPathFactory(), department=DepartmentFactory(name=f"Dept {i}")
        )
    escalation = _escalate(conversation, world.agent_a, path=support_path)

    with django_assert_max_num_queries(6):
        context = escalation_panel_context(conversation=conversation, user=world.manager)

    assert context["escalation"] == escalation
    assert context["escalation"].level_count == 2
    assert context["can_answer"] is True
    # While it is open, there is nothing to escalate to: the panel offers no targets.
    assert context["escalation_paths"] == context["departments"] == []
    assert set(context) == {
        "conversation",
        "escalation",
        "escalation_paths",
        "departments",
        "can_answer",
        "can_steer",
    }
    assert context["can_steer"] is True

    # Not escalated: the paths with levels and every department, each by name, in one query
    # (with the escalation's and the user's access).
    EscalationPathFactory(name="Without levels")
    with django_assert_max_num_queries(3):
        context = escalation_panel_context(conversation=world.conversation_b, user=world.admin)
    assert context["escalation"] is None
    paths = [p["name"] for p in context["escalation_paths"]]
    assert len(paths) == 6 and "Support ladder" in paths and paths == sorted(paths)
    assert "Without levels" not in paths
    departments = [d["name"] for d in context["departments"]]
    assert departments == sorted(departments) and {f"Dept {i}" for i in range(5)} <= set(
        departments
    )


def test_the_department_answers_but_does_not_raise_or_take_back(world, conversation, login):
    billing = DepartmentFactory(name="Billing")
    outsider = UserFactory(username="riley", role="agent")
    TeamMembershipFactory(team=billing.team, user=outsider)
    escalation = _escalate(conversation, world.agent_a, department=billing)
    client = login(outsider)
    assert client.get(f"/inbox/{conversation.pk}/").status_code == 200
    assert client.post(f"/escalations/{escalation.pk}/withdraw/").status_code == 403
    assert client.post(f"/escalations/{escalation.pk}/raise/").status_code == 403
    escalation.refresh_from_db()
    assert escalation.status == "open"


def test_the_department_cannot_escalate_or_raise_through_the_escalate_page(
    world, conversation, support_path, tier2, login
):
    escalation = _escalate(conversation, world.agent_a, path=support_path)
    request_user = tier2.team.members.get()
    client = login(request_user)
    assert client.get(f"/inbox/{conversation.pk}/").status_code == 200
    # The open escalation's path asked for again would raise it; another target escalate.
    for target in (f"path:{support_path.pk}", f"department:{DepartmentFactory().pk}"):
        response = client.post(
            f"/escalations/{conversation.pk}/escalate/", {"target": target, "reason": "Up"}
        )
        assert response.status_code == 403, target
    escalation.refresh_from_db()
    assert (escalation.status, escalation.level) == ("open", 0)
    assert Escalation.objects.count() == 1

    escalation_answer(
        escalation=escalation, answer="Refunded", outcome="", answered_by=request_user
    )
    # Answered and back with support: were the page shown to the department, it would offer
    # nothing to escalate to.
    request = RequestFactory().get("/")
    request.user = request_user
    html = render_to_string(
        "conversations/_escalation_panel.html",
        escalation_panel_context(conversation=conversation, user=request_user),
        request=request,
    )
    assert "Escalate to" not in html


def test_the_escalation_actions_take_posts_only(world, conversation, tier2, login):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    client = login(world.manager)
    for action in ("raise", "withdraw", "answer"):
        assert client.get(f"/escalations/{escalation.pk}/{action}/").status_code == 405, action
    escalation.refresh_from_db()
    assert escalation.status == "open"


def test_the_panel_shows_an_open_escalation_and_what_can_be_done(world, conversation, support_path):
    _escalate(conversation, world.agent_a, path=support_path)
    request = RequestFactory().get("/")
    request.user = world.manager

    html = render_to_string(
        "conversations/_escalation_panel.html",
        escalation_panel_context(conversation=conversation, user=world.manager),
        request=request,
    )

    assert "Tier 2" in html
    assert "Support ladder · level 1 of 2" in html
    assert "Raise to level 2" in html
    assert "Take back" in html
    assert "Send answer" in html
    assert "Escalate to" not in html  # one escalation at a time


def test_the_panel_offers_paths_and_departments_when_not_escalated(
    world, conversation, support_path, tier2
):
    request = RequestFactory().get("/")
    request.user = world.agent_a

    context = escalation_panel_context(conversation=conversation, user=world.agent_a)
    html = render_to_string("conversations/_escalation_panel.html", context, request=request)

    assert context["escalation"] is None
    assert context["can_answer"] is False
    assert f'value="path:{support_path.pk}"' in html
    assert f'value="department:{tier2.pk}"' in html
    assert "Not escalated." in html


def test_an_escalated_conversation_shows_escalated_as_its_status(world, conversation, login, tier2):
    _escalate(conversation, world.agent_a, department=tier2)
    page = login(world.agent_a).get(f"/inbox/{conversation.pk}/").content.decode()
    assert '<option value="" selected disabled>Escalated</option>' in page


def test_the_workspace_shows_the_escalation_while_open_and_its_answer_after(
    world, conversation, login, tier2
):
    client = login(world.agent_a)
    page = client.get(f"/inbox/{conversation.pk}/").content.decode()
    assert "Not escalated." in page and "Escalate to" in page
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    page = client.get(f"/inbox/{conversation.pk}/").content.decode()
    assert "Take back" in page and "Escalate to" not in page
    escalation_answer(escalation=escalation, answer="Refund approved", outcome="", answered_by=None)
    page = client.get(f"/inbox/{conversation.pk}/").content.decode()
    assert "Refund approved" in page and "Escalate to" in page
    assert "Not escalated." not in page


def test_the_workspace_shows_merge_suggestions_for_its_contact(login, world):
    mine = world.conversation_a.contact
    theirs = ConversationFactory(channel=world.channel_a)
    client = login(world.agent_a)
    url = f"/inbox/{world.conversation_a.pk}/"
    assert client.get(url).context["merge_candidates"] == []
    MergeSuggestion.objects.create(contact_id=mine.pk, other_id=theirs.contact_id, reason="Same")
    page = client.get(url)
    assert [c.contact.pk for c in page.context["merge_candidates"]] == [theirs.contact_id]
    assert "Possibly the same customer" in page.content.decode()
    # Either side of a suggestion counts.
    other_side = client.get(f"/inbox/{theirs.pk}/").context["merge_candidates"]
    assert [c.contact.pk for c in other_side] == [mine.pk]


# --- Levels, hand-backs and the record of what became of an escalation -----------------


def _email_department(name, address):
    return DepartmentFactory(name=name, delivery=DepartmentDelivery.EMAIL, team=None, email=address)


def _ladder(tier2, manager):
    path = EscalationPathFactory(name="Ladder")
    EscalationLevelFactory(path=path, position=0, department=tier2)
    EscalationLevelFactory(path=path, position=1, user=manager)
    return path


def test_an_email_still_queued_when_the_escalation_moves_on_is_not_sent_to_the_next_level(
    world, conversation, django_capture_on_commit_callbacks
):
    billing = _email_department("Billing", "billing@example.com")
    logistics = _email_department("Logistics", "logistics@example.com")
    path = EscalationPathFactory(name="Money")
    EscalationLevelFactory(path=path, position=0, department=billing)
    EscalationLevelFactory(path=path, position=1, department=logistics)

    # The worker is behind: both levels' emails are still queued when it gets to them.
    with django_capture_on_commit_callbacks(execute=False) as queued:
        escalation = _escalate(conversation, world.agent_a, path=path)
        escalation_raise(escalation=escalation, actor=world.agent_a, reason="No answer")
    for callback in queued:
        callback()

    # Billing's link (level 1) no longer works, so it is not asked; Logistics is, once.
    assert [m.to for m in mail.outbox] == [["logistics@example.com"]]
    assert "Level 2: No answer" in mail.outbox[0].body
    assert _answer_link_of(re.search(r"http\S+", mail.outbox[0].body)[0]).level == 1


def test_the_answer_of_an_outside_department_keeps_a_reassignment_made_while_it_waited(
    world, conversation, client
):
    from conversations.services import conversation_assign

    carol = UserFactory(username="carol", role=Role.AGENT)
    TeamMembershipFactory(team=world.team_a, user=carol)
    logistics = _email_department("Logistics", "logistics@example.com")
    escalation = _escalate(conversation, world.agent_a, department=logistics)
    # Support keeps the conversation while an outside department works on it: Bob is off
    # sick and the manager hands it to Carol.
    conversation_assign(conversation=conversation, assignee=carol, actor=world.manager)
    Notification.objects.all().delete()

    link = urlsplit(escalation_answer_url(escalation=escalation)).path
    client.post(link, {"name": "Lena", "answer": "Parcel is at the depot.", "outcome": ""})

    conversation.refresh_from_db()
    assert (conversation.status, conversation.assignee) == (Status.OPEN, carol)
    assert list(Notification.objects.values_list("recipient__username", flat=True)) == ["carol"]


def test_the_answer_of_an_in_app_department_returns_it_to_support_whoever_took_it_there(
    world, conversation, tier2
):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    dana = tier2.team.memberships.get().user
    conversation.refresh_from_db()
    conversation.assignee = dana  # taken from the department's queue
    conversation.save(update_fields=["assignee"])

    escalation_answer(escalation=escalation, answer="Refund approved", outcome="", answered_by=dana)

    conversation.refresh_from_db()
    assert (conversation.assignee, conversation.team) == (world.agent_a, world.team_a)
    assert Notification.objects.filter(recipient=world.agent_a).exists()


def test_the_panel_shows_the_latest_escalation_with_what_became_of_it(
    login, world, conversation, tier2
):
    first = _escalate(conversation, world.agent_a, department=tier2)
    escalation_answer(escalation=first, answer="OLD TIER2 ANSWER", outcome="", answered_by=None)
    billing = _email_department("Billing", "billing@example.com")
    second = _escalate(conversation, world.agent_a, department=billing)
    escalation_answer(
        escalation=second,
        answer="Refunded by bank transfer",
        outcome=EscalationOutcome.RESOLVED_BY_DEPARTMENT,
        answered_by=None,
        answered_by_name="Ben",
    )

    page = login(world.agent_a).get(f"/inbox/{conversation.pk}/")
    panel = page.content.decode().split('id="escalation"', 1)[1].split("</section>", 1)[0]

    assert page.context["escalation"].pk == second.pk
    assert "Refunded by bank transfer" in panel
    assert "Resolved by the department" in panel
    assert "OLD TIER2 ANSWER" not in panel and "Not escalated." not in panel
    assert 'name="target"' in panel  # it may be escalated again


def test_an_escalation_taken_back_shows_as_abandoned_and_may_be_escalated_again(
    login, world, conversation, tier2
):
    escalation = _escalate(conversation, world.agent_a, department=tier2)
    escalation_withdraw(escalation=escalation, actor=world.agent_a)

    panel = login(world.agent_a).get(f"/inbox/{conversation.pk}/").content.decode()
    panel = panel.split('id="escalation"', 1)[1].split("</section>", 1)[0]

    assert "Closed" in panel and "Abandoned" in panel
    assert 'name="target"' in panel


def test_escalations_ended_by_resolving_the_conversation_are_in_the_audit_log(
    world, conversation, tier2
):
    from governance.models import AuditEntry

    escalation = _escalate(conversation, world.agent_a, department=tier2)

    conversation_status_set(conversation=conversation, status=Status.RESOLVED, actor=world.agent_a)

    closed = AuditEntry.objects.get(action="escalation.closed", object_id=str(escalation.pk))
    assert closed.actor == world.agent_a
    assert closed.data["outcome"] == EscalationOutcome.ABANDONED
    assert closed.data["conversation_status"] == Status.RESOLVED


def test_a_raise_by_an_sla_breach_is_announced_as_the_breach_not_as_the_opening_agent(
    world, conversation, tier2
):
    path = _ladder(tier2, world.manager)
    _escalate(conversation, world.agent_a, path=path)
    Notification.objects.all().delete()

    escalation_open(
        conversation=conversation,
        trigger=EscalationTrigger.SLA,
        actor=None,
        reason="First response breached",
        path=path,
    )

    [notification] = Notification.objects.filter(recipient=world.manager)
    assert notification.text.startswith("An SLA breach escalated"), notification.text


@responses.activate
def test_a_raise_to_a_webhook_department_names_the_trigger_of_the_raise(world, conversation, tier2):
    endpoint = WebhookEndpointFactory(url=HOOK_URL, secret="s3cret")
    hook = DepartmentFactory(
        name="Logistics", delivery=DepartmentDelivery.WEBHOOK, team=None, endpoint=endpoint
    )
    path = EscalationPathFactory(name="Ladder")
    EscalationLevelFactory(path=path, position=0, department=tier2)
    EscalationLevelFactory(path=path, position=1, department=hook)
    _escalate(conversation, world.agent_a, path=path)

    escalation_open(conversation=conversation, trigger=EscalationTrigger.SLA, actor=None, path=path)

    payload = WebhookCall.objects.get().payload["escalation"]
    assert (payload["trigger"], payload["escalated_by"]) == ("sla", "An SLA breach")


def test_escalating_again_along_the_same_path_is_refused_not_raised(
    login, world, conversation, tier2
):
    path = _ladder(tier2, world.manager)
    client = login(world.agent_a)
    form = {"target": f"path:{path.pk}", "reason": "Refund above the agent limit"}

    client.post(f"/escalations/{conversation.pk}/escalate/", form)
    again = client.post(f"/escalations/{conversation.pk}/escalate/", form, follow=True)

    escalation = Escalation.objects.get(conversation=conversation)
    assert (escalation.level, escalation.department) == (0, tier2)
    assert [str(m) for m in again.context["messages"]][-1] == (
        "This conversation is already escalated along Ladder, at level 1 (Tier 2): "
        "raise it to go further."
    )
