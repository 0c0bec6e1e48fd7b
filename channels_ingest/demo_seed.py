"""Demo data: users for each role, teams, demo channels, and 90 days of history.

History is produced by the demo connector's generator and stored through the real pipeline,
day by day, with agents answering and resolving through the real services, so every figure
in the dashboard comes from the same events live traffic produces. Running it again changes
nothing: users, teams and channels are fetched or created, and history is only played into
channels that hold no messages yet.
"""

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from channels_ingest.connectors.demo import generate_posts
from channels_ingest.models import ChannelAccount, ChannelMode
from channels_ingest.pipeline import ingest
from channels_ingest.platforms import Platform
from channels_ingest.services import message_send
from conversations import services as conversation_services
from conversations.models import (
    ACTIVE_STATUSES,
    BusinessCalendar,
    Conversation,
    ConversationEvent,
    Department,
    DepartmentDelivery,
    EscalationLevel,
    EscalationPath,
    EventKind,
    Holiday,
    Message,
    Priority,
    RoutingRule,
    SlaPolicy,
    Status,
    Tag,
)
from governance.models import ChannelAccess, Role, Team, TeamMembership
from governance.services import roles_ensure
from kpis.models import KpiTarget, Metric, Period
from kpis.tasks import refresh_until_current

DEMO_PASSWORD = "social-crm-demo"


@dataclass(frozen=True)
class DemoUser:
    username: str
    first_name: str
    last_name: str
    role: Role
    team: str | None


DEMO_USERS = [
    DemoUser("admin", "Morgan", "Lee", Role.ADMIN, None),
    DemoUser("manager", "Sam", "Rivera", Role.MANAGER, "care"),
    DemoUser("agent", "Jamie", "Chen", Role.AGENT, "care"),
    DemoUser("agent2", "Alex", "Novak", Role.AGENT, "care"),
    DemoUser("billing", "Riley", "Patel", Role.AGENT, "billing"),
]
DEMO_TEAMS = {"care": "Customer Care", "billing": "Billing"}


@dataclass(frozen=True)
class DemoChannel:
    name: str
    handle: str
    flavour: str
    mode: str
    poll_seconds: int
    posts_per_day: int
    teams: dict[str, bool]  # team slug -> may reply


DEMO_CHANNELS = [
    DemoChannel("Acme on X", "@acme", "x", ChannelMode.ENGAGE, 15, 10, {"care": True}),
    DemoChannel(
        "Acme Facebook Page",
        "Acme",
        "facebook",
        ChannelMode.ENGAGE,
        20,
        7,
        {"care": True, "billing": True},
    ),
    DemoChannel("Acme brand mentions", "acme", "x", ChannelMode.LISTEN, 30, 3, {"care": False}),
]
DEMO_TAGS = {
    "billing": ("#0ea5e9", ("charged", "invoice", "refund", "billing", "discount")),
    "delivery": ("#f59e0b", ("order", "shipping", "arrived", "delivery")),
    "outage": ("#ef4444", ("not working", "crashing", "crash")),
    "praise": ("#22c55e", ("thanks", "great", "love", "best", "well done")),
}
HISTORY_DAYS = 90


@dataclass
class SeedReport:
    users_created: int = 0
    channels_created: int = 0
    posts_ingested: int = 0
    replies_sent: int = 0


def seed_demo(*, days: int = HISTORY_DAYS, rng_seed: int = 7) -> SeedReport:
    report = SeedReport()
    roles_ensure()
    teams = {
        slug: Team.objects.get_or_create(slug=slug, defaults={"name": name})[0]
        for slug, name in DEMO_TEAMS.items()
    }
    users: dict[str, User] = {}
    for person in DEMO_USERS:
        user, created = _user(person)
        report.users_created += created
        users[person.username] = user
        if person.team:
            TeamMembership.objects.get_or_create(team=teams[person.team], user=user)
    for name, (color, _) in DEMO_TAGS.items():
        Tag.objects.get_or_create(name=name, defaults={"color": color})

    _service_levels()
    rng = random.Random(rng_seed)
    for spec in DEMO_CHANNELS:
        channel, created = ChannelAccount.objects.get_or_create(
            name=spec.name,
            defaults={
                "platform": Platform.DEMO,
                "handle": spec.handle,
                "mode": spec.mode,
                "settings": {"flavour": spec.flavour, "population": 400},
                "poll_interval_seconds": spec.poll_seconds,
                "default_team": teams["care"],
            },
        )
        report.channels_created += created
        for slug, can_reply in spec.teams.items():
            ChannelAccess.objects.get_or_create(
                channel=channel, team=teams[slug], defaults={"can_reply": can_reply}
            )
        if not Message.objects.filter(channel=channel).exists():
            agents = [users[u.username] for u in DEMO_USERS if u.team in spec.teams]
            _play_history(channel, spec, agents, days, rng, report)
    # Rules come after the history: they route what arrives from now on.
    _routing(teams, users)
    _kpi_targets(teams, users.get("manager"))
    # The reports read facts the beat keeps current; the history is counted right away.
    refresh_until_current(seconds=600.0)
    return report


def _kpi_targets(teams: dict[str, Team], manager: User | None) -> None:
    if KpiTarget.objects.exists():
        return
    KpiTarget.objects.bulk_create(
        KpiTarget(created_by=manager, valid_from=date(2020, 1, 1), **spec)
        for spec in (
            {"metric": Metric.FIRST_RESPONSE_MEDIAN, "value": 30, "period": Period.MONTH},
            {"metric": Metric.FIRST_RESPONSE_SLA, "value": 95, "period": Period.MONTH},
            {"metric": Metric.IN_CHANNEL_RESOLUTION, "value": 70, "period": Period.MONTH},
            {"metric": Metric.NEGATIVE_SHARE, "value": 20, "period": Period.WEEK},
            {"metric": Metric.RESOLUTION_MEDIAN, "value": 240, "period": Period.WEEK},
            {
                "metric": Metric.FIRST_RESPONSE_MEDIAN,
                "value": 20,
                "period": Period.WEEK,
                "team": teams["billing"],
            },
        )
    )


def _service_levels() -> None:
    """Support hours and SLA policies, so the history already has due times and breaches."""
    hours, _ = BusinessCalendar.objects.get_or_create(
        name="Acme support hours",
        defaults={
            "time_zone": "Europe/Berlin",
            "weekly_hours": {
                **{str(day): [["08:00", "20:00"]] for day in range(5)},
                "5": [["10:00", "16:00"]],
            },
            "is_default": True,
        },
    )
    for day, name in (((12, 25), "Christmas Day"), ((12, 26), "Boxing Day"), ((1, 1), "New Year")):
        for year in (timezone.now().year - 1, timezone.now().year, timezone.now().year + 1):
            Holiday.objects.get_or_create(
                calendar=hours, date=date(year, *day), defaults={"name": name}
            )
    policies = [
        ("Standard", None, False, 4 * 60, 8 * 60, 24 * 60),
        ("Urgent", Priority.URGENT, False, 30, 60, 4 * 60),
        ("VIP customers", None, True, 60, 2 * 60, 8 * 60),
    ]
    for name, priority, vip_only, first, following, resolution in policies:
        SlaPolicy.objects.get_or_create(
            name=name,
            defaults={
                "priority": priority,
                "vip_only": vip_only,
                "first_response_minutes": first,
                "next_response_minutes": following,
                "resolution_minutes": resolution,
                "calendar": hours,
                "at_risk_minutes": 30 if priority != Priority.URGENT else 10,
            },
        )


def _routing(teams: dict[str, Team], users: dict[str, User]) -> None:
    """Departments, an escalation path and a few routing rules an admin would start with."""
    billing, _ = Department.objects.get_or_create(
        name="Billing", defaults={"delivery": DepartmentDelivery.IN_APP, "team": teams["billing"]}
    )
    Department.objects.get_or_create(
        name="Logistics",
        defaults={"delivery": DepartmentDelivery.EMAIL, "email": "logistics@acme.example"},
    )
    path, created = EscalationPath.objects.get_or_create(
        name="Billing disputes",
        defaults={"description": "Billing first; the support manager if Billing cannot help."},
    )
    if created:
        EscalationLevel.objects.create(path=path, position=0, department=billing)
        EscalationLevel.objects.create(path=path, position=1, user=users["manager"])
    tags = {tag.name: tag.pk for tag in Tag.objects.filter(name__in=DEMO_TAGS)}
    rules = [
        (
            "Outages are urgent",
            ["message_received"],
            [{"field": "text", "op": "contains_any", "value": ["not working", "crash", "down"]}],
            [
                {"type": "set_priority", "value": Priority.URGENT},
                {"type": "add_tags", "value": [tags["outage"]]},
            ],
        ),
        (
            "Billing questions go to Billing",
            ["conversation_created"],
            [{"field": "text", "op": "contains_any", "value": ["refund", "invoice", "charged"]}],
            [
                {"type": "set_team", "value": teams["billing"].pk},
                {"type": "add_tags", "value": [tags["billing"]]},
            ],
        ),
        (
            "Angry customers get attention",
            ["message_received"],
            [{"field": "sentiment", "op": "below", "value": -0.6}],
            [{"type": "set_priority", "value": Priority.HIGH}],
        ),
        (
            "Out-of-hours acknowledgement for DMs",
            ["conversation_created"],
            [
                {"field": "kind", "op": "is", "value": ["dm"]},
                {"field": "business_hours", "op": "outside", "value": None},
            ],
            [
                {
                    "type": "acknowledge",
                    "value": "Thanks {first_name}! We're offline now and will answer as soon "
                    "as we open.",
                }
            ],
        ),
        (
            "Share new conversations among online agents",
            ["conversation_created"],
            [],
            [{"type": "assign", "value": "auto"}],
        ),
        (
            "Tell the manager about urgent breaches",
            ["sla_breached"],
            [{"field": "priority", "op": "is", "value": Priority.URGENT}],
            [
                {
                    "type": "notify",
                    "value": {
                        "users": [users["manager"].pk],
                        "teams": [],
                        "assignee": True,
                        "email": False,
                        "message": "An urgent conversation missed its SLA",
                    },
                }
            ],
        ),
    ]
    for position, (name, events, conditions, actions) in enumerate(rules):
        RoutingRule.objects.get_or_create(
            name=name,
            defaults={
                "position": position,
                "events": events,
                "conditions": conditions,
                "actions": actions,
                "created_by": users["admin"],
            },
        )


def _user(spec: DemoUser) -> tuple[User, bool]:
    user, created = User.objects.get_or_create(
        username=spec.username,
        defaults={
            "first_name": spec.first_name,
            "last_name": spec.last_name,
            "email": f"{spec.username}@acme.example",
            "is_staff": spec.role == Role.ADMIN,
            "is_superuser": spec.role == Role.ADMIN,
        },
    )
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save(update_fields=["password"])
        user.groups.add(Group.objects.get(name=spec.role.value))
    return user, created


def _play_history(
    channel: ChannelAccount,
    spec: DemoChannel,
    agents: list[User],
    days: int,
    rng: random.Random,
    report: SeedReport,
) -> None:
    now = timezone.now()
    seq, recent = 0, list[list[str]]()
    for day in range(days, -1, -1):
        day_start = (now - timedelta(days=day)).replace(hour=7, minute=0, second=0, microsecond=0)
        count = max(0, int(rng.gauss(spec.posts_per_day, spec.posts_per_day / 3)))
        spacing = timedelta(hours=15) / max(count, 1)
        start = day_start + timedelta(seconds=rng.uniform(0, spacing.total_seconds()))
        if start + spacing * count > now:
            count = max(0, int((now - start) / spacing))
        if not count:
            continue
        posts, recent = generate_posts(
            flavour=spec.flavour,
            brand=spec.handle,
            seq=seq,
            recent=recent,
            population=400,
            count=count,
            start=start,
            spacing=spacing,
            rng=rng,
        )
        seq += count
        result = ingest(channel=channel, posts=posts)
        report.posts_ingested += result.stored
        _tag(result.conversation_ids)
        if spec.mode == ChannelMode.ENGAGE and agents:
            report.replies_sent += _work_the_queue(channel, agents, now, rng)
    ChannelAccount.objects.filter(pk=channel.pk).update(
        cursor={"seq": seq, "recent": recent}, next_poll_at=now
    )


def _tag(conversation_ids: list[int]) -> None:
    tags = {tag.name: tag for tag in Tag.objects.filter(name__in=DEMO_TAGS)}
    through = Conversation.tags.through
    links = []
    for pk, subject in Conversation.objects.filter(pk__in=conversation_ids).values_list(
        "pk", "subject"
    ):
        text = subject.lower()
        for name, (_, words) in DEMO_TAGS.items():
            if any(word in text for word in words):
                links.append(through(conversation_id=pk, tag_id=tags[name].pk))
    through.objects.bulk_create(links, ignore_conflicts=True)


def _work_the_queue(
    channel: ChannelAccount, agents: list[User], now: datetime, rng: random.Random
) -> int:
    """Answer customers who waited, as a team would have; leave the last day's work open."""
    sent = 0
    waiting = Conversation.objects.select_related("contact", "assignee").filter(
        channel=channel,
        status__in=ACTIVE_STATUSES,
        waiting_since__isnull=False,
        is_monitoring=False,
    )
    for conversation in waiting:
        assert conversation.waiting_since is not None  # filtered on above
        # Answered after a realistic wait, and after anything else the customer wrote.
        answered_at = max(
            conversation.waiting_since + timedelta(minutes=rng.lognormvariate(3.6, 1.1)),
            (conversation.last_inbound_at or conversation.waiting_since) + timedelta(minutes=2),
        )
        if answered_at > now - timedelta(hours=20) or rng.random() < 0.08:
            continue
        with transaction.atomic():
            agent = conversation.assignee or rng.choice(agents)
            conversation_services.conversation_assign(
                conversation=conversation, assignee=agent, actor=agent, at=answered_at
            )
            reply = conversation_services.conversation_reply_create(
                conversation=conversation,
                author=agent,
                body=_reply_text(conversation, rng),
                at=answered_at,
            )
        message_send(message_id=reply.pk)
        # History: the reply went out when it was written, not when the demo was loaded.
        Message.objects.filter(pk=reply.pk).update(sent_at=answered_at)
        ConversationEvent.objects.filter(
            kind=EventKind.MESSAGE_SENT, data__message_id=reply.pk
        ).update(created_at=answered_at)
        sent += 1
        resolved_at = answered_at + timedelta(minutes=rng.lognormvariate(4.5, 1.0))
        if resolved_at < now - timedelta(days=1) and rng.random() < 0.8:
            conversation_services.conversation_status_set(
                conversation=conversation, status=Status.RESOLVED, actor=agent, at=resolved_at
            )
        elif rng.random() < 0.5:
            conversation_services.conversation_status_set(
                conversation=conversation, status=Status.PENDING, actor=agent, at=answered_at
            )
    return sent


_REPLIES = [
    "Hi {name}, sorry to hear that! Could you DM us your order number so we can check?",
    "Thanks for reaching out, {name}. We've passed this to the team and will update you today.",
    "Hi {name}, thanks for the kind words! We'll share them with the team.",
    "Hello {name}, that should be fixed now. Could you try again and let us know?",
    "Hi {name}, we're sorry for the wait. A colleague from billing will contact you shortly.",
]


def _reply_text(conversation: Conversation, rng: random.Random) -> str:
    first_name = (conversation.contact.name or "there").split()[0]
    return rng.choice(_REPLIES).format(name=first_name)
