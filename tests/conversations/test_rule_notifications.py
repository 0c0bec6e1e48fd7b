"""Notify actions: who gets them and what the email says."""

import pytest
from django.core import mail

from channels_ingest.pipeline import ingest
from conversations.models import Notification, RoutingRule
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
    post,
)

pytestmark = pytest.mark.django_db


def _team_and_channel(*users):
    team = TeamFactory()
    for user in users:
        TeamMembershipFactory(team=team, user=user)
    channel = ChannelFactory(default_team=team)
    ChannelAccessFactory(channel=channel, team=team, can_reply=True)
    return team, channel


def _notify(team, *, email=True):
    return {
        "type": "notify",
        "value": {
            "users": [],
            "teams": [team.pk],
            "assignee": False,
            "email": email,
            "message": "A complaint came in",
        },
    }


def test_the_notification_email_quotes_the_customer_not_our_acknowledgement(
    django_capture_on_commit_callbacks,
):
    ann = UserFactory(role="agent")
    team, channel = _team_and_channel(ann)
    RoutingRule.objects.create(
        name="Complaints",
        events=["conversation_created"],
        conditions=[],
        actions=[
            {"type": "acknowledge", "value": "Thanks {first_name}, we are on it."},
            _notify(team),
        ],
    )
    with django_capture_on_commit_callbacks(execute=True):
        ingest(channel=channel, posts=[post("p1", body="My parcel arrived broken!")])
    [email] = mail.outbox
    assert "My parcel arrived broken!" in email.body, email.body


def test_a_deactivated_team_member_gets_no_notification(django_capture_on_commit_callbacks):
    ann, gone = UserFactory(role="agent"), UserFactory(role="agent")
    team, channel = _team_and_channel(ann, gone)
    gone.is_active = False
    gone.save(update_fields=["is_active"])
    RoutingRule.objects.create(
        name="Complaints",
        events=["message_received"],
        conditions=[],
        actions=[_notify(team, email=False)],
    )
    ingest(channel=channel, posts=[post("p1")])
    assert set(Notification.objects.values_list("recipient_id", flat=True)) == {ann.pk}


def test_notification_emails_are_retried_one_by_one_while_the_mail_server_is_down(monkeypatch):
    """Each recipient list's email is a send task of its own, retried on SMTP errors: one
    failing neither loses it nor sends the others again."""
    import smtplib

    from celery.exceptions import Retry

    from conversations import tasks
    from tests.factories import ConversationFactory

    ann, bob = UserFactory(role="agent"), UserFactory(role="agent")
    conversation = ConversationFactory()
    sent: list[list[str]] = []

    def flaky(subject, body, sender, recipients):
        if recipients == [bob.email]:
            raise smtplib.SMTPServerDisconnected("mail server down")
        sent.append(recipients)
        return 1

    monkeypatch.setattr(tasks, "send_mail", flaky)
    emails = [([ann.pk], "For Ann", conversation.pk), ([bob.pk], "For Bob", conversation.pk)]
    # Run eagerly, the failed send raises Retry: a worker would send it again later.
    with pytest.raises(Retry):
        tasks.send_notification_emails.delay(emails)
    assert sent == [[ann.email]]
