"""A known history of four conversations, shared by the KPI tests."""

from datetime import UTC, date, datetime

import pytest

from channels_ingest.pipeline import ingest
from conversations import escalations, services
from conversations.models import (
    BusinessCalendar,
    Conversation,
    EscalationTrigger,
    SlaPolicy,
    Status,
)
from conversations.sla import sla_check
from governance.models import ChannelAccess, Role, TeamMembership
from kpis.facts import facts_refresh
from kpis.metrics import DateRange
from tests.factories import ChannelFactory, DepartmentFactory, TeamFactory, UserFactory, post


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


WEEK = DateRange(date(2026, 1, 9), date(2026, 1, 15))
NOW = utc(15, 12)


@pytest.fixture
def history(settings):
    """Four conversations in January 2026 (Berlin is UTC+1 then)."""
    settings.TIME_ZONE = "Europe/Berlin"
    calendar = BusinessCalendar.objects.create(
        name="Berlin office",
        time_zone="Europe/Berlin",
        weekly_hours={str(day): [["09:00", "17:00"]] for day in range(5)},
        is_default=True,
    )
    SlaPolicy.objects.create(
        name="Standard",
        first_response_minutes=60,
        resolution_minutes=8 * 60,
        at_risk_minutes=10,
        calendar=calendar,
    )
    x = ChannelFactory(name="X", platform="x")
    facebook = ChannelFactory(name="Facebook", platform="facebook")
    team = TeamFactory(name="Care")
    alice = UserFactory(first_name="Alice", role=Role.AGENT)
    bob = UserFactory(first_name="Bob", role=Role.AGENT)
    manager = UserFactory(role=Role.MANAGER)
    billing = DepartmentFactory(name="Billing")
    # The manager's team watches both channels.
    TeamMembership.objects.create(team=team, user=manager)
    ChannelAccess.objects.create(team=team, channel=x)
    ChannelAccess.objects.create(team=team, channel=facebook)

    # A: Friday 16:30 Berlin on X. Alice answers in 20 minutes; the customer writes again on
    # Saturday, Alice answers on Monday 09:30 and resolves at 10:00.
    ingest(channel=x, posts=[post("a1", author="ann", at=utc(9, 15, 30))])
    a = Conversation.objects.get(messages__external_id="a1")
    services.conversation_assign(conversation=a, assignee=alice, actor=manager, at=utc(9, 15, 35))
    services.conversation_reply_create(
        conversation=a, author=alice, body="On it", at=utc(9, 15, 50), delivery_status="sent"
    )
    ingest(channel=x, posts=[post("a2", author="ann", reply_to="a1", at=utc(10, 10))])
    services.conversation_reply_create(
        conversation=a, author=alice, body="Sorted", at=utc(12, 8, 30), delivery_status="sent"
    )
    services.conversation_status_set(
        conversation=a, status=Status.RESOLVED, actor=alice, at=utc(12, 9)
    )

    # B: Monday 23:30 UTC is Tuesday 00:30 in Berlin. The first response is due Tuesday 10:00
    # Berlin; the beat sees the breach at 09:10 UTC; Bob answers at 09:30 UTC (10:30 Berlin)
    # and resolves at 10:00 UTC. The customer writes again on Wednesday 08:00 UTC (reopened),
    # Bob answers at 08:20, escalates to Billing, and resolves at 12:00 UTC while Billing has
    # not answered (the escalation is abandoned).
    ingest(channel=facebook, posts=[post("b1", author="ben", at=utc(12, 23, 30))])
    b = Conversation.objects.get(messages__external_id="b1")
    services.conversation_assign(conversation=b, assignee=bob, actor=manager, at=utc(12, 23, 31))
    sla_check(now=utc(13, 9, 10))
    services.conversation_reply_create(
        conversation=b, author=bob, body="Sorry", at=utc(13, 9, 30), delivery_status="sent"
    )
    services.conversation_status_set(
        conversation=b, status=Status.RESOLVED, actor=bob, at=utc(13, 10)
    )
    ingest(channel=facebook, posts=[post("b2", author="ben", reply_to="b1", at=utc(14, 8))])
    services.conversation_reply_create(
        conversation=b, author=bob, body="Checking", at=utc(14, 8, 20), delivery_status="sent"
    )
    b.refresh_from_db()
    escalations.escalation_open(
        conversation=b, trigger=EscalationTrigger.AGENT, actor=bob, department=billing
    )
    b.refresh_from_db()
    services.conversation_status_set(
        conversation=b, status=Status.RESOLVED, actor=bob, at=utc(14, 12)
    )

    # C: Wednesday, a customer nobody answered yet: open and unassigned.
    ingest(channel=x, posts=[post("c1", author="cat", at=utc(14, 10))])
    # D: Ann again, now by direct message on X, Wednesday 10:00 UTC; not answered.
    d_channel_post = post("d1", author="ann", kind="dm", thread="dm:ann", at=utc(14, 10))
    ingest(channel=x, posts=[d_channel_post])
    facts_refresh()
    return {
        "x": x,
        "facebook": facebook,
        "alice": alice,
        "bob": bob,
        "manager": manager,
        "team": team,
        "a": a,
        "b": b,
    }
