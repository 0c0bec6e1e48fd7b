"""A year of support work for the KPI benchmark: the rows the product stores, and the facts.

Conversations are drawn day by day (fewer at weekends, most in the afternoon) and written in
creation order, a week at a time, each week's messages and timeline events sorted by time, so
that one conversation's messages lie apart on disk as arrival order puts them.

- four channels (two on X, two on Facebook), three teams, 40 agents, an admin and a manager
  on the Support team (which sees two of the channels);
- contacts: about 40% of conversations come from a contact seen before; 97% came in through a
  channel (social, with an identity), the rest were added by hand; 2% are VIPs;
- messages alternate customer / agent; agents answer after a log-normal wait (first response
  median 30 min, next 20 min), customers write again after a log-normal gap (median 2 h);
  1% of replies failed to send, 5% of conversations carry an internal note;
- inbound sentiment from the conversation's mood (positive, neutral, negative), 15% unscored;
- about 70% resolved and 20% closed; the rest still new, open, pending or escalated (most of
  the last three days' conversations); 6% of the longer ones were resolved, reopened by the
  customer and resolved again; 6% escalated to one of three departments, with an outcome once
  over; 3% monitoring only; priorities low 10%, normal 65%, high 18%, urgent 7%; tags on 20%;
- SLA policies (standard; urgent) on 85%, on a business calendar (Europe/Berlin, Mon-Fri
  09:00-18:00, no holidays): each reply says whether it met its target, breaches are events.

The timeline carries what the facts are computed from: ``reply_sent`` with
``{"response_seconds", "first_response", "sla_met"}``, ``status_changed`` with
``{"previous", "status", "sla_met"}``, ``sla_breached``, plus ``created``, ``assigned`` and
``escalated``.

On PostgreSQL the facts can also be derived from those rows with set-based SQL
(``facts_sql``), which gives what ``facts_rebuild`` would store, much faster; the benchmark
checks a sample against ``facts_compute``.
"""

import io
import json
import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bench import pages

CALENDAR_ZONE = "Europe/Berlin"
OPENS = 9 * 3600  # local time the calendar opens, Monday to Friday
OPEN = 9 * 3600  # open seconds per working day (09:00-18:00)
WEEKLY_HOURS = {str(day): [["09:00", "18:00"]] for day in range(5)}

# name, platform, share of the conversations, team index, inbound message kind
CHANNELS = (
    ("KPI X support", "x", 0.40, 0, "mention"),
    ("KPI X brand", "x", 0.15, 1, "mention"),
    ("KPI Facebook page", "facebook", 0.35, 0, "comment"),
    ("KPI Facebook messenger", "facebook", 0.10, 2, "dm"),
)
TEAMS = (("Support", 20), ("Social", 12), ("Billing", 8))  # name, agents
DEPARTMENTS = ("Legal", "Logistics", "Finance")
TAGS = ("billing", "delivery", "refund", "bug", "praise", "vip", "lead", "spam")
PRIORITIES = ((1, 0.10), (2, 0.65), (3, 0.18), (4, 0.07))
OUTCOMES = (
    ("resolved_in_channel", 0.40),
    ("resolved_by_department", 0.35),
    ("moved_offline", 0.15),
    ("abandoned", 0.10),
)
MOODS = ((0.45, 0.30), (0.0, 0.40), (-0.45, 0.30))  # centre, share
# SLA targets in business minutes: first response, next response, resolution.
STANDARD_SLA = (60, 240, 1440)
URGENT_SLA = (15, 60, 480)
REPEAT_SHARE = 0.40
SOCIAL_SHARE = 0.97
VIP_SHARE = 0.02
MONITORING_SHARE = 0.03
TAGGED_SHARE = 0.20
POLICY_SHARE = 0.85
ESCALATED_SHARE = 0.06
REOPENED_SHARE = 0.06
NOTE_SHARE = 0.05
FAILED_SHARE = 0.01
UNSCORED_SHARE = 0.15
RECENT_DAYS = 3  # most conversations of the last days are still active
ACTIVE_SHARE_OLD = 0.07
ACTIVE_SHARE_RECENT = 0.60
RESOLVED_OF_ENDED = 0.77  # the rest are closed
CHUNK_DAYS = 7

INBOUND_TEXTS = (
    "Hi, my order has not arrived yet, can you check what is going on?",
    "I was charged twice this month, please refund one of the payments.",
    "Is the blue jacket back in stock in size M?",
    "The app keeps logging me out since the last update.",
    "Still waiting for an answer about my refund, it has been a week.",
    "Love the new collection, great work!",
)
OUTBOUND_TEXTS = (
    "Thanks for reaching out! Could you send us your order number in a DM?",
    "Sorry about that. We have refunded the duplicate payment, it shows in 3-5 days.",
    "It is back next week; we can let you know as soon as it is in.",
    "Thanks for the report, our team is on it.",
)
NOTE_TEXT = "Checked with the warehouse, parcel left on Monday."


# --- What is made through the models ------------------------------------------------------


@dataclass
class World:
    admin_id: int
    manager_id: int
    channel_ids: list[int]
    channel_platforms: list[str]
    team_ids: list[int]
    agents_by_team: list[list[int]]
    department_ids: list[int]
    tag_ids: list[int]
    policy_ids: tuple[int, int]  # standard, urgent
    target_count: int

    @property
    def agent_ids(self) -> list[int]:
        return [a for team in self.agents_by_team for a in team]


def world_create() -> World:
    """Users, teams, channels and their access, departments, tags, the business calendar, SLA
    policies and a few KPI targets, through the models."""
    from django.contrib.auth.models import Group, User

    from channels_ingest.models import ChannelAccount
    from conversations.models import BusinessCalendar, Department, SlaPolicy, Tag
    from governance.models import ChannelAccess, Role, Team, TeamMembership
    from kpis.models import KpiTarget, Metric, Period

    groups = {role: Group.objects.get(name=role) for role in Role}

    def user(name: str, first: str, role: Role) -> User:
        person = User(username=name, first_name=first, last_name="Bench")
        person.set_unusable_password()
        person.save()
        person.groups.add(groups[role])
        return person

    admin = user("kpi-admin", "Ada", Role.ADMIN)
    manager = user("kpi-manager", "Mona", Role.MANAGER)
    teams, agents_by_team = [], []
    for index, (name, size) in enumerate(TEAMS):
        team = Team.objects.create(name=f"KPI {name}", slug=f"kpi-{name.lower()}")
        teams.append(team)
        members = []
        for number in range(size):
            agent = user(f"kpi-agent-{index}-{number}", f"Agent {index}.{number}", Role.AGENT)
            TeamMembership.objects.create(team=team, user=agent)
            members.append(agent.pk)
        agents_by_team.append(members)
    TeamMembership.objects.create(team=teams[0], user=manager)
    channels = []
    for name, platform, _share, team_index, _kind in CHANNELS:
        channel = ChannelAccount.objects.create(
            platform=platform,
            name=name,
            handle=name.lower().replace(" ", "_"),
            default_team=teams[team_index],
            is_active=False,  # nothing polls here
        )
        ChannelAccess.objects.create(channel=channel, team=teams[team_index])
        channels.append(channel)
    departments = [Department.objects.create(name=f"KPI {name}") for name in DEPARTMENTS]
    tags = [Tag.objects.create(name=f"kpi-{name}") for name in TAGS]
    calendar = BusinessCalendar.objects.create(
        name="KPI office hours", time_zone=CALENDAR_ZONE, weekly_hours=WEEKLY_HOURS, is_default=True
    )
    standard = SlaPolicy.objects.create(
        name="KPI standard",
        first_response_minutes=STANDARD_SLA[0],
        next_response_minutes=STANDARD_SLA[1],
        resolution_minutes=STANDARD_SLA[2],
        calendar=calendar,
    )
    urgent = SlaPolicy.objects.create(
        name="KPI urgent",
        priority=4,
        first_response_minutes=URGENT_SLA[0],
        next_response_minutes=URGENT_SLA[1],
        resolution_minutes=URGENT_SLA[2],
        calendar=calendar,
    )
    # What a manager typically watches: several periods and scopes, so the dashboard's
    # targets read several summaries.
    targets = [
        KpiTarget(metric=Metric.FIRST_RESPONSE_MEDIAN, value=45, period=Period.MONTH),
        KpiTarget(metric=Metric.RESOLUTION_SLA, value=90, period=Period.MONTH),
        KpiTarget(metric=Metric.BACKLOG, value=5000, period=Period.WEEK),
        KpiTarget(
            metric=Metric.NEGATIVE_SHARE, value=25, period=Period.QUARTER, channel=channels[0]
        ),
        KpiTarget(metric=Metric.FIRST_RESPONSE_SLA, value=85, period=Period.WEEK, team=teams[0]),
    ]
    for target in targets:
        target.valid_from = date(2000, 1, 1)
    KpiTarget.objects.bulk_create(targets)
    return World(
        admin_id=admin.pk,
        manager_id=manager.pk,
        channel_ids=[c.pk for c in channels],
        channel_platforms=[c.platform for c in channels],
        team_ids=[t.pk for t in teams],
        agents_by_team=agents_by_team,
        department_ids=[d.pk for d in departments],
        tag_ids=[t.pk for t in tags],
        policy_ids=(standard.pk, urgent.pk),
        target_count=len(targets),
    )


def world_load() -> World:
    """The world of a database loaded earlier (``--skip-load``)."""
    from django.contrib.auth.models import User

    from channels_ingest.models import ChannelAccount
    from conversations.models import Department, SlaPolicy, Tag
    from governance.models import Team, TeamMembership
    from kpis.models import KpiTarget

    # Channel credentials are encrypted with the key of the data folder of the run that
    # stored them, which is gone: the benchmark's channels have none, store them again empty.
    ChannelAccount.objects.filter(name__startswith="KPI ").update(credentials={})
    channels = dict(ChannelAccount.objects.values_list("name", "pk"))
    platforms = dict(ChannelAccount.objects.values_list("name", "platform"))
    teams = [Team.objects.get(name=f"KPI {name}") for name, _ in TEAMS]
    return World(
        admin_id=User.objects.get(username="kpi-admin").pk,
        manager_id=User.objects.get(username="kpi-manager").pk,
        channel_ids=[channels[name] for name, *_ in CHANNELS],
        channel_platforms=[platforms[name] for name, *_ in CHANNELS],
        team_ids=[t.pk for t in teams],
        agents_by_team=[
            list(
                TeamMembership.objects.filter(team=team, user__username__startswith="kpi-agent")
                .order_by("user_id")
                .values_list("user_id", flat=True)
            )
            for team in teams
        ],
        department_ids=[Department.objects.get(name=f"KPI {n}").pk for n in DEPARTMENTS],
        tag_ids=[Tag.objects.get(name=f"kpi-{n}").pk for n in TAGS],
        policy_ids=(
            SlaPolicy.objects.get(name="KPI standard").pk,
            SlaPolicy.objects.get(name="KPI urgent").pk,
        ),
        target_count=KpiTarget.objects.count(),
    )


# --- Business time ------------------------------------------------------------------------

_ZONE = ZoneInfo(CALENDAR_ZONE)


def business_clock(moment: int) -> int:
    """Business seconds from the epoch to ``moment`` (UTC epoch seconds) on the calendar.

    Opening hours do not include the clock changes (02:00-03:00), so counting local wall-clock
    seconds is exact; business time between two moments is the difference of their clocks.
    """
    offset = _ZONE.utcoffset(datetime.fromtimestamp(moment, UTC).replace(tzinfo=None))
    local = moment + int(offset.total_seconds()) if offset is not None else moment
    day, second = divmod(local, 86400)
    week, weekday = divmod(day + 3, 7)  # 1970-01-01 was a Thursday
    clock = week * 5 * OPEN + min(weekday, 5) * OPEN
    if weekday < 5:
        clock += min(max(second - OPENS, 0), OPEN)
    return clock


BUSINESS_CLOCK_SQL = f"""
CREATE OR REPLACE FUNCTION bench_kpi_clock(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (d + 3) / 7 * 5 * {OPEN} + least(mod(d + 3, 7), 5) * {OPEN}
         + CASE WHEN mod(d + 3, 7) < 5 THEN least(greatest(s - {OPENS}, 0), {OPEN}) ELSE 0 END
  FROM (SELECT floor(e / 86400)::bigint AS d, (e - floor(e / 86400) * 86400)::bigint AS s
        FROM (SELECT extract(epoch FROM (t AT TIME ZONE '{CALENDAR_ZONE}')) AS e) AS x) AS y
$$
"""


# --- Rows ---------------------------------------------------------------------------------
# The page benchmark's column lists, where this load writes the same columns.

CONVERSATION_COLUMNS = (*pages.CONVERSATION_COLUMNS, "sla_policy_id")
MESSAGE_COLUMNS = pages.MESSAGE_COLUMNS
EVENT_COLUMNS = pages.EVENT_COLUMNS
CONTACT_COLUMNS = (
    "id",
    "name",
    "email",
    "phone",
    "company",
    "is_vip",
    "attributes",
    "external_crm_id",
    "external_crm_url",
    "first_seen_at",
    "last_seen_at",
    "created_at",
    "updated_at",
    "source",
)
IDENTITY_COLUMNS = pages.IDENTITY_COLUMNS
ESCALATION_COLUMNS = (
    "conversation_id",
    "level",
    "department_id",
    "trigger",
    "reason",
    "created_by_id",
    "created_at",
    "status",
    "previous_assignee_id",
    "previous_team_id",
    "answer",
    "answered_by_name",
    "returned_at",
    "outcome",
    "closed_at",
)
TAG_COLUMNS = pages.TAG_LINK_COLUMNS
TABLES = {
    "contacts_contact": CONTACT_COLUMNS,
    "contacts_socialidentity": IDENTITY_COLUMNS,
    "conversations_conversation": CONVERSATION_COLUMNS,
    "conversations_message": MESSAGE_COLUMNS,
    "conversations_conversationevent": EVENT_COLUMNS,
    "conversations_escalation": ESCALATION_COLUMNS,
    "conversations_conversation_tags": TAG_COLUMNS,
}
# Columns holding a moment (epoch seconds in the generated rows).
MOMENTS = {
    "contacts_contact": {"first_seen_at", "last_seen_at", "created_at", "updated_at"},
    "contacts_socialidentity": {"created_at", "updated_at"},
    "conversations_conversation": {
        "created_at",
        "updated_at",
        "last_message_at",
        "last_inbound_at",
        "waiting_since",
        "first_response_at",
        "resolved_at",
    },
    "conversations_message": {"created_at", "received_at", "sent_at"},
    "conversations_conversationevent": {"created_at"},
    "conversations_escalation": {"created_at", "returned_at", "closed_at"},
    "conversations_conversation_tags": set(),
}


@dataclass
class Chunk:
    rows: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {table: [] for table in TABLES}
    )


@dataclass
class Shape:
    """What was generated, counted while generating."""

    conversations: int = 0
    messages: int = 0
    events: int = 0
    contacts: int = 0
    escalations: int = 0
    tag_links: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    reopened: int = 0
    repeat_conversations: int = 0
    first_day: str = ""
    last_day: str = ""


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    roll, running = rng.random(), 0.0
    for value, share in weighted:
        running += share
        if roll < running:
            return value
    return weighted[-1][0]


def _day_counts(total: int, days: int, first_day: date) -> list[int]:
    """Conversations per day: weekdays busier than weekends, summing to ``total``."""
    weights = [1.15 if (first_day + timedelta(days=d)).weekday() < 5 else 0.6 for d in range(days)]
    scale = total / sum(weights)
    counts = [math.floor(w * scale) for w in weights]
    for d in sorted(range(days), key=lambda i: weights[i] * scale - counts[i], reverse=True):
        if sum(counts) >= total:
            break
        counts[d] += 1
    return counts


def generate(
    world: World, *, conversations: int, per_conversation: int, days: int, now: int, seed: int
) -> Iterator[tuple[Chunk, Shape]]:
    """The rows, a week at a time, in creation order; yields each week and the running shape."""
    rng = random.Random(seed)
    shape = Shape()
    first_day = datetime.fromtimestamp(now, UTC).date() - timedelta(days=days - 1)
    counts = _day_counts(conversations, days, first_day)
    shape.first_day, shape.last_day = str(first_day), str(first_day + timedelta(days=days - 1))
    channel_weights = [(i, c[2]) for i, c in enumerate(CHANNELS)]
    contact_channel: dict[int, int] = {}  # contact id -> slot of the channel it came through
    next_contact = 1
    next_conversation = 1
    for week_start in range(0, days, CHUNK_DAYS):
        chunk = Chunk()
        rows = chunk.rows
        for day_index in range(week_start, min(days, week_start + CHUNK_DAYS)):
            midnight = int(
                datetime.combine(first_day + timedelta(days=day_index), datetime.min.time())
                .replace(tzinfo=UTC)
                .timestamp()
            )
            # Afternoon-heavy arrivals, never in the future.
            moments = sorted(
                min(now - 60, midnight + int(min(86399, max(0, rng.gauss(14 * 3600, 4 * 3600)))))
                for _ in range(counts[day_index])
            )
            for started in moments:
                conversation_id = next_conversation
                next_conversation += 1
                if next_contact > 1 and rng.random() < REPEAT_SHARE:
                    contact_id = rng.randrange(1, next_contact)
                    slot = contact_channel[contact_id] if rng.random() < 0.8 else None
                    shape.repeat_conversations += 1
                else:
                    contact_id = next_contact
                    next_contact += 1
                    slot = None
                if slot is None:
                    slot = _pick(rng, channel_weights)
                if contact_id not in contact_channel:
                    contact_channel[contact_id] = slot
                    _contact_rows(rows, rng, contact_id, started, world.channel_platforms[slot])
                    shape.contacts += 1
                _conversation_rows(
                    rows,
                    rng,
                    world,
                    shape,
                    conversation_id=conversation_id,
                    contact_id=contact_id,
                    social=_is_social(contact_id),
                    slot=slot,
                    started=started,
                    per_conversation=per_conversation,
                    now=now,
                )
        rows["conversations_message"].sort(key=lambda r: r[7])
        rows["conversations_conversationevent"].sort(key=lambda r: r[4])
        yield chunk, shape


def _is_social(contact_id: int) -> bool:
    # Decided by the id, so that a contact's later conversations agree with its first.
    return (contact_id * 2654435761) % 1000 < SOCIAL_SHARE * 1000


def _contact_rows(
    rows: dict[str, list[tuple[Any, ...]]],
    rng: random.Random,
    contact_id: int,
    started: int,
    platform: str,
) -> None:
    social = _is_social(contact_id)
    rows["contacts_contact"].append(
        (
            contact_id,
            f"Customer {contact_id}",
            f"customer{contact_id}@example.com" if contact_id % 4 == 0 else "",
            "",
            "",
            rng.random() < VIP_SHARE,
            "{}",
            "",
            "",
            started,
            started,
            started,
            started,
            "social" if social else "manual",
        )
    )
    if social:
        rows["contacts_socialidentity"].append(
            (
                contact_id,
                platform,
                f"kpi-user-{contact_id}",
                f"customer_{contact_id}",
                f"Customer {contact_id}",
                "",
                rng.randrange(5000),
                False,
                started,
                started,
                contact_id,
            )
        )


def _wait(rng: random.Random, median_seconds: float, sigma: float) -> int:
    return max(5, int(rng.lognormvariate(math.log(median_seconds), sigma)))


def _conversation_rows(
    rows: dict[str, list[tuple[Any, ...]]],
    rng: random.Random,
    world: World,
    shape: Shape,
    *,
    conversation_id: int,
    contact_id: int,
    social: bool,
    slot: int,
    started: int,
    per_conversation: int,
    now: int,
) -> None:
    cid = conversation_id
    channel_id = world.channel_ids[slot]
    _name, _platform, _share, team_index, inbound_kind = CHANNELS[slot]
    if rng.random() < 0.05:
        team_index = 2  # handed to Billing
    team_id = world.team_ids[team_index]
    assignee: int | None = rng.choice(world.agents_by_team[team_index])
    priority = _pick(rng, PRIORITIES)
    monitoring = rng.random() < MONITORING_SHARE
    has_policy = not monitoring and rng.random() < POLICY_SHARE
    targets = URGENT_SLA if priority == 4 else STANDARD_SLA
    policy_id = world.policy_ids[1 if priority == 4 else 0] if has_policy else None
    mood = _pick(rng, [(centre, share) for centre, share in MOODS])

    # Message times: customer first, then agent and customer in turn.
    count = 1
    if not monitoring and per_conversation > 1:
        count = min(300, 1 + round(rng.expovariate(1 / (per_conversation - 1))))
    times = [started]
    moment = started
    for k in range(2, count + 1):
        # Agents answer (first response slower), customers write again.
        gap = _wait(rng, 1800 if k == 2 else 1200, 1.3) if k % 2 == 0 else _wait(rng, 7200, 1.2)
        if moment + gap >= now:
            break
        moment += gap
        times.append(moment)
    count = len(times)
    last = times[-1]

    age = now - started
    active = not monitoring and rng.random() < (
        ACTIVE_SHARE_RECENT if age < RECENT_DAYS * 86400 else ACTIVE_SHARE_OLD
    )
    resolved_at = None
    if not active:
        resolved_at = min(now - 1, last + _wait(rng, 3600, 1.2))
        if resolved_at <= last:
            active = True
            resolved_at = None
    replies = count // 2
    if active and replies == 0 and rng.random() < 0.5:
        assignee = None
    escalated = count >= 3 and not monitoring and rng.random() < ESCALATED_SHARE
    if monitoring:
        status = "closed"
    elif not active:
        status = "resolved" if rng.random() < RESOLVED_OF_ENDED else "closed"
    elif escalated:
        status = "escalated"
    elif replies == 0:
        status = "new"
    else:
        status = "pending" if count % 2 == 0 and rng.random() < 0.5 else "open"
    shape.statuses[status] = shape.statuses.get(status, 0) + 1
    shape.conversations += 1

    messages = rows["conversations_message"]
    events = rows["conversations_conversationevent"]
    events.append((cid, "created", None, "{}", started))
    if assignee is not None:
        events.append(
            (cid, "assigned", None, json.dumps({"previous": None, "assignee": assignee}), started)
        )
    sentiments: list[float] = []
    inbound = 0
    first_response_at = None
    last_inbound = started
    for index, at in enumerate(times):
        k = index + 1
        external = f"kpi-{cid}-{k}"
        previous_external = f"kpi-{cid}-{k - 1}" if k > 1 else ""
        if k % 2 == 1:
            inbound += 1
            last_inbound = at
            score = None
            if rng.random() >= UNSCORED_SHARE:
                drift = 0.08 * index if status in ("resolved", "closed") else 0.0
                score = round(max(-1.0, min(1.0, rng.gauss(mood + drift, 0.35))), 3)
                sentiments.append(score)
            messages.append(
                (
                    "in",
                    inbound_kind,
                    external,
                    previous_external,
                    INBOUND_TEXTS[(cid + k) % len(INBOUND_TEXTS)],
                    "en",
                    score,
                    at,
                    at,
                    None,
                    "received",
                    "",
                    "{}",
                    "[]",
                    contact_id if social else None,
                    None,
                    channel_id,
                    cid,
                )
            )
            continue
        waited = at - last_inbound  # the customer's message is the one before
        failed = rng.random() < FAILED_SHARE
        messages.append(
            (
                "out",
                "reply",
                external,
                previous_external,
                OUTBOUND_TEXTS[(cid * 7 + k) % len(OUTBOUND_TEXTS)],
                "en",
                None,
                at,
                at,
                None if failed else at,
                "failed" if failed else "sent",
                "timeout" if failed else "",
                "{}",
                "[]",
                None,
                assignee,
                channel_id,
                cid,
            )
        )
        first = first_response_at is None
        if first:
            first_response_at = at
        data: dict[str, Any] = {"first_response": first, "response_seconds": float(waited)}
        if has_policy:
            target = (targets[0] if first else targets[1]) * 60
            business = business_clock(at) - business_clock(at - waited)
            data["sla_met"] = business <= target
            if not data["sla_met"]:
                events.append(
                    (
                        cid,
                        "sla_breached",
                        None,
                        json.dumps({"target": "first_response" if first else "next_response"}),
                        at - 1,
                    )
                )
        events.append((cid, "reply_sent", assignee, json.dumps(data), at))
    if rng.random() < NOTE_SHARE and assignee is not None:
        note_at = times[min(1, count - 1)] + 60
        messages.append(
            (
                "out",
                "note",
                None,
                "",
                NOTE_TEXT,
                "",
                None,
                note_at,
                note_at,
                None,
                "sent",
                "",
                "{}",
                "[]",
                None,
                assignee,
                channel_id,
                cid,
            )
        )

    if escalated:
        escalated_at = times[2] + 300
        department = rng.choice(world.department_ids)
        outcome = "" if active else _pick(rng, OUTCOMES)
        rows["conversations_escalation"].append(
            (
                cid,
                0,
                department,
                "agent",
                "Needs the department",
                assignee,
                escalated_at,
                "open" if active else "closed",
                assignee,
                team_id,
                "" if active else "Handled.",
                "",
                None,
                outcome,
                None if active else resolved_at,
            )
        )
        events.append(
            (
                cid,
                "escalated",
                assignee,
                json.dumps({"department": department}),
                escalated_at,
            )
        )
        shape.escalations += 1

    if resolved_at is not None:
        sla: dict[str, Any] = {}
        if has_policy:
            business = business_clock(resolved_at) - business_clock(started)
            sla["sla_met"] = business <= targets[2] * 60
        actor = assignee
        if count >= 5 and status == "resolved" and rng.random() < REOPENED_SHARE:
            # Resolved after an early reply, reopened when the customer wrote again.
            reply_index = 1 if count < 7 else 3
            first_close = times[reply_index] + 120
            reopen_at = times[reply_index + 1]
            if first_close < reopen_at:
                events.append(
                    (
                        cid,
                        "status_changed",
                        actor,
                        json.dumps({"previous": "open", "status": "resolved", **sla}),
                        first_close,
                    )
                )
                events.append(
                    (
                        cid,
                        "status_changed",
                        None,
                        json.dumps({"previous": "resolved", "status": "open"}),
                        reopen_at,
                    )
                )
                shape.reopened += 1
        events.append(
            (
                cid,
                "status_changed",
                actor,
                json.dumps({"previous": "open", "status": status, **sla}),
                resolved_at,
            )
        )
    elif status == "escalated":
        events.append(
            (
                cid,
                "status_changed",
                assignee,
                json.dumps({"previous": "open", "status": "escalated"}),
                times[2] + 300,
            )
        )

    if rng.random() < TAGGED_SHARE:
        first_tag = rng.randrange(len(world.tag_ids))
        tags = {first_tag}
        if rng.random() < 0.3:
            tags.add((first_tag + 1 + rng.randrange(len(world.tag_ids) - 1)) % len(world.tag_ids))
        for tag in sorted(tags):
            rows["conversations_conversation_tags"].append((cid, world.tag_ids[tag]))
            shape.tag_links += 1

    last_direction = "in" if count % 2 == 1 else "out"
    waiting_since = last if active and last_direction == "in" else None
    last_text = (
        INBOUND_TEXTS[(cid + count) % len(INBOUND_TEXTS)]
        if last_direction == "in"
        else OUTBOUND_TEXTS[(cid * 7 + count) % len(OUTBOUND_TEXTS)]
    )
    rows["conversations_conversation"].append(
        (
            cid,
            status,
            priority,
            f"Conversation {cid}",
            f"kpi-{cid}-1",
            monitoring,
            round(sum(sentiments) / len(sentiments), 3) if sentiments else None,
            count,
            inbound,
            last_text[:280],
            last_direction,
            started,
            max(last, resolved_at or last),
            last,
            last_inbound,
            waiting_since,
            first_response_at,
            resolved_at,
            assignee,
            channel_id,
            contact_id,
            team_id,
            policy_id,
        )
    )
    shape.messages += count


# --- Writing ------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = _EPOCH.replace(tzinfo=None)  # SQLite stores UTC without an offset


def _postgres_text(table: str, rows: list[tuple[Any, ...]]) -> io.StringIO:
    moments = [column in MOMENTS[table] for column in TABLES[table]]
    lines = []
    for row in rows:
        cells = []
        for value, is_moment in zip(row, moments, strict=True):
            if value is None:
                cells.append("\\N")
            elif is_moment:
                cells.append((_EPOCH + timedelta(seconds=value)).isoformat(" "))
            else:
                cells.append(str(value))
        lines.append("\t".join(cells))
    lines.append("")
    return io.StringIO("\n".join(lines))


def _sqlite_rows(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    moments = [column in MOMENTS[table] for column in TABLES[table]]
    return [
        tuple(
            (_NAIVE_EPOCH + timedelta(seconds=v)).isoformat(" ")
            if is_moment and v is not None
            else v
            for v, is_moment in zip(row, moments, strict=True)
        )
        for row in rows
    ]


def write_chunk(chunk: Chunk, *, vendor: str) -> dict[str, int]:
    """Store the chunk's rows; returns rows per table."""
    from django.db import connection, transaction

    written = {}
    with transaction.atomic(), connection.cursor() as cursor:
        for table, columns in TABLES.items():
            rows = chunk.rows[table]
            written[table] = len(rows)
            if not rows:
                continue
            names = ", ".join(f'"{c}"' for c in columns)
            if vendor == "postgresql":
                cursor.copy_expert(
                    f"COPY {table} ({names}) FROM STDIN", _postgres_text(table, rows)
                )
            else:
                marks = ", ".join("?" for _ in columns)
                raw = cursor.connection
                assert isinstance(raw, sqlite3.Connection)
                raw.executemany(
                    f"INSERT INTO {table} ({names}) VALUES ({marks})", _sqlite_rows(table, rows)
                )
    return written


# --- Load helpers -------------------------------------------------------------------------


# The migration that creates the stale-marking triggers in use.
STALE_TRIGGERS = "kpis.migrations.0004_stale_marks_what_facts_read"


def stale_triggers(vendor: str) -> list[tuple[str, str]]:
    """(trigger, table) of the stale-marking triggers the kpis migrations create."""
    import importlib

    return importlib.import_module(STALE_TRIGGERS).triggers()


def stale_triggers_set(*, enabled: bool, vendor: str) -> None:
    """Switch the stale-marking triggers off or on: ALTER TABLE on PostgreSQL; on SQLite,
    which cannot disable a trigger, drop them and create them again from the migration."""
    import importlib

    from django.db import connection

    with connection.cursor() as cursor:
        if vendor == "postgresql":
            verb = "ENABLE" if enabled else "DISABLE"
            for name, table in stale_triggers(vendor):
                cursor.execute(f"ALTER TABLE {table} {verb} TRIGGER {name}")
            return
        for name, _table in stale_triggers(vendor):
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
        if enabled:
            for statement in importlib.import_module(STALE_TRIGGERS).statements(vendor)[0]:
                cursor.execute(statement)


def user_triggers_set(*, enabled: bool) -> None:
    """PostgreSQL: every user trigger of the loaded tables off (or on again)."""
    from django.db import connection

    verb = "ENABLE" if enabled else "DISABLE"
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"ALTER TABLE {table} {verb} TRIGGER USER")


def secondary_indexes(table: str) -> list[tuple[str, str]]:
    """(name, definition) of the table's indexes that back no constraint (PostgreSQL)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
               FROM pg_index AS i
               WHERE i.indrelid = %s::regclass
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
               ORDER BY 1""",
            [table],
        )
        return [(str(name), str(definition)) for name, definition in cursor.fetchall()]


def check_columns() -> None:
    """Every NOT NULL column without a default must be written, or the load would fail
    halfway: say which, before anything is loaded (PostgreSQL)."""
    from django.db import connection

    missing = []
    with connection.cursor() as cursor:
        for table, columns in TABLES.items():
            cursor.execute(
                """SELECT column_name FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = %s
                     AND is_nullable = 'NO' AND column_default IS NULL
                     AND is_identity = 'NO'""",
                [table],
            )
            missing += [f"{table}.{n}" for (n,) in cursor.fetchall() if n not in columns]
    if missing:
        raise SystemExit(
            "The schema has NOT NULL columns bench/kpis_data.py does not fill: "
            + ", ".join(missing)
        )


def sequences_reset(vendor: str) -> None:
    from django.db import connection

    if vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for table in (*TABLES, "kpis_responsefact", "kpis_messageday"):
            cursor.execute(
                "SELECT pg_get_serial_sequence(%s, 'id')",
                [table],
            )
            sequence = cursor.fetchone()[0]
            if sequence:
                cursor.execute(
                    f"SELECT setval(%s, coalesce((SELECT max(id) FROM {table}), 0) + 1, false)",
                    [sequence],
                )


# --- Facts in SQL (PostgreSQL) -----------------------------------------------------------

_SENT = "('queued', 'sending', 'sent')"
_ENDED = "('resolved', 'closed')"
_COUNTED = f"m.kind <> 'note' AND (m.direction = 'in' OR m.delivery_status IN {_SENT})"

CONVERSATION_FACTS_SQL = f"""
INSERT INTO kpis_conversationfact (
    conversation_id, channel_id, platform, team_id, priority, assignee_id, contact_id, status,
    is_monitoring, started_at, day, inbound, outbound, new_contact, days_since_previous,
    previous_day, second_previous_day, channel_previous_day, channel_second_previous_day,
    __VIP_COLUMN__
    first_response_at, first_response_seconds, first_response_business_seconds,
    first_response_met, first_response_sla_day, resolved_at, resolved_day, resolution_seconds,
    resolution_business_seconds, resolution_met, resolution_sla_day, resolved_by_id,
    first_resolved_day, reopens, breaches,
    escalations, escalation_department_id, escalation_outcome, sentiment_first, sentiment_last)
SELECT c.id, c.channel_id, ch.platform, c.team_id, c.priority, c.assignee_id, c.contact_id,
       c.status, c.is_monitoring, c.created_at, (c.created_at AT TIME ZONE %(tz)s)::date,
       coalesce(m.inbound, 0), coalesce(m.outbound, 0),
       h.previous IS NULL AND ct.source = 'social',
       extract(epoch FROM c.created_at - h.previous)::float8 / 86400,
       h.previous_day, h.second_previous_day, h.channel_previous_day,
       h.channel_second_previous_day,__VIP_VALUE__
       fr.at, fr.seconds,
       bench_kpi_clock(fr.at) - bench_kpi_clock(fr.at - fr.seconds * interval '1 second'),
       -- the load records no due times: a first response settles its target on its day
       fr.met, CASE WHEN fr.met IS NOT NULL THEN (fr.at AT TIME ZONE %(tz)s)::date END,
       e.resolved_at, (e.resolved_at AT TIME ZONE %(tz)s)::date,
       -- greatest() would read a missing resolution as 0
       CASE WHEN e.resolved_at IS NOT NULL
            THEN greatest(0, extract(epoch FROM e.resolved_at - c.created_at)::float8) END,
       bench_kpi_clock(e.resolved_at) - bench_kpi_clock(c.created_at),
       CASE WHEN e.resolved_at IS NOT NULL THEN rs.met END,
       -- nor resolution due times or breaches: a result settles on the resolution's day
       CASE WHEN e.resolved_at IS NOT NULL AND rs.met IS NOT NULL
            THEN (e.resolved_at AT TIME ZONE %(tz)s)::date END,
       CASE WHEN e.resolved_at IS NOT NULL THEN rs.actor_id END,
       (coalesce(ev.first_resolved, e.resolved_at) AT TIME ZONE %(tz)s)::date,
       coalesce(ev.reopens, 0), coalesce(ev.breaches, 0),
       coalesce(es.n, 0), es.department_id, coalesce(es.outcome, ''),
       m.sentiment_first, m.sentiment_last
FROM conversations_conversation AS c
JOIN channels_ingest_channelaccount AS ch ON ch.id = c.channel_id
JOIN contacts_contact AS ct ON ct.id = c.contact_id
JOIN bench_kpi_history AS h ON h.id = c.id
CROSS JOIN LATERAL (
    SELECT CASE WHEN c.status IN {_ENDED} THEN c.resolved_at END AS resolved_at) AS e
LEFT JOIN (
    SELECT m.conversation_id,
           count(*) FILTER (WHERE m.direction = 'in') AS inbound,
           count(*) FILTER (WHERE m.direction <> 'in') AS outbound,
           (array_agg(m.sentiment ORDER BY m.created_at, m.id)
                FILTER (WHERE m.direction = 'in' AND m.sentiment IS NOT NULL))[1]
               AS sentiment_first,
           (array_agg(m.sentiment ORDER BY m.created_at DESC, m.id DESC)
                FILTER (WHERE m.direction = 'in' AND m.sentiment IS NOT NULL))[1]
               AS sentiment_last
    FROM conversations_message AS m
    WHERE m.conversation_id BETWEEN %(low)s AND %(high)s AND {_COUNTED}
    GROUP BY m.conversation_id
) AS m ON m.conversation_id = c.id
LEFT JOIN (
    SELECT DISTINCT ON (conversation_id) conversation_id, created_at AS at,
           (data->>'response_seconds')::float8 AS seconds, (data->>'sla_met')::boolean AS met
    FROM conversations_conversationevent
    WHERE conversation_id BETWEEN %(low)s AND %(high)s AND kind = 'reply_sent'
      AND data->>'response_seconds' IS NOT NULL
      AND coalesce((data->>'first_response')::boolean, false)
    ORDER BY conversation_id, created_at, id
) AS fr ON fr.conversation_id = c.id
LEFT JOIN (
    SELECT DISTINCT ON (conversation_id) conversation_id, actor_id,
           (data->>'sla_met')::boolean AS met
    FROM conversations_conversationevent
    WHERE conversation_id BETWEEN %(low)s AND %(high)s AND kind = 'status_changed'
      AND data->>'status' IN {_ENDED}
      AND coalesce(data->>'previous', '') NOT IN {_ENDED}
    ORDER BY conversation_id, created_at DESC, id DESC
) AS rs ON rs.conversation_id = c.id
LEFT JOIN (
    SELECT conversation_id,
           count(*) FILTER (WHERE kind = 'reopened'
                            OR (kind = 'status_changed'
                                AND data->>'previous' IN {_ENDED}
                                AND coalesce(data->>'status', '') NOT IN {_ENDED}))
               AS reopens,
           count(*) FILTER (WHERE kind = 'sla_breached') AS breaches,
           min(created_at) FILTER (WHERE kind = 'status_changed'
                                   AND data->>'status' IN {_ENDED}
                                   AND coalesce(data->>'previous', '') NOT IN {_ENDED})
               AS first_resolved
    FROM conversations_conversationevent
    WHERE conversation_id BETWEEN %(low)s AND %(high)s
      AND kind IN ('status_changed', 'reopened', 'sla_breached')
    GROUP BY conversation_id
) AS ev ON ev.conversation_id = c.id
LEFT JOIN (
    SELECT DISTINCT ON (conversation_id) conversation_id, department_id, outcome,
           count(*) OVER (PARTITION BY conversation_id) AS n
    FROM conversations_escalation
    WHERE conversation_id BETWEEN %(low)s AND %(high)s
    ORDER BY conversation_id, created_at DESC, id DESC
) AS es ON es.conversation_id = c.id
WHERE c.id BETWEEN %(low)s AND %(high)s
"""

RESPONSE_FACTS_SQL = """
INSERT INTO kpis_responsefact (
    conversation_id, at, day, is_first, seconds, business_seconds, sla_met, agent_id,
    channel_id, platform, team_id, priority)
SELECT r.conversation_id, r.created_at, (r.created_at AT TIME ZONE %(tz)s)::date,
       r.flagged AND r.rank = 1, r.seconds,
       bench_kpi_clock(r.created_at)
           - bench_kpi_clock(r.created_at - r.seconds * interval '1 second'),
       r.met, r.actor_id, c.channel_id, ch.platform, c.team_id, c.priority
FROM (
    SELECT conversation_id, created_at, id, actor_id,
           (data->>'response_seconds')::float8 AS seconds,
           (data->>'sla_met')::boolean AS met,
           coalesce((data->>'first_response')::boolean, false) AS flagged,
           row_number() OVER (
               PARTITION BY conversation_id, coalesce((data->>'first_response')::boolean, false)
               ORDER BY created_at, id) AS rank
    FROM conversations_conversationevent
    WHERE conversation_id BETWEEN %(low)s AND %(high)s AND kind = 'reply_sent'
      AND data->>'response_seconds' IS NOT NULL
) AS r
JOIN conversations_conversation AS c ON c.id = r.conversation_id
JOIN channels_ingest_channelaccount AS ch ON ch.id = c.channel_id
ORDER BY r.conversation_id, r.created_at, r.id
"""

MESSAGE_DAYS_SQL = f"""
INSERT INTO kpis_messageday (
    conversation_id, day, channel_id, platform, team_id, priority, assignee_id,
    inbound, outbound, positive, neutral, negative)
SELECT m.conversation_id, (m.created_at AT TIME ZONE %(tz)s)::date,
       c.channel_id, ch.platform, c.team_id, c.priority, c.assignee_id,
       count(*) FILTER (WHERE m.direction = 'in'),
       count(*) FILTER (WHERE m.direction <> 'in'),
       count(*) FILTER (WHERE m.direction = 'in' AND m.sentiment >= 0.05),
       count(*) FILTER (WHERE m.direction = 'in' AND m.sentiment > -0.05 AND m.sentiment < 0.05),
       count(*) FILTER (WHERE m.direction = 'in' AND m.sentiment <= -0.05)
FROM conversations_message AS m
JOIN conversations_conversation AS c ON c.id = m.conversation_id
JOIN channels_ingest_channelaccount AS ch ON ch.id = c.channel_id
WHERE m.conversation_id BETWEEN %(low)s AND %(high)s AND {_COUNTED}
GROUP BY m.conversation_id, 2, c.channel_id, ch.platform, c.team_id, c.priority, c.assignee_id
"""

HISTORY_SQL = """
CREATE TEMPORARY TABLE bench_kpi_history AS
SELECT id, previous,
       (previous AT TIME ZONE %(tz)s)::date AS previous_day,
       (second_previous AT TIME ZONE %(tz)s)::date AS second_previous_day,
       (channel_previous AT TIME ZONE %(tz)s)::date AS channel_previous_day,
       (channel_second_previous AT TIME ZONE %(tz)s)::date AS channel_second_previous_day
FROM (
    SELECT id,
           lag(created_at, 1) OVER everywhere AS previous,
           lag(created_at, 2) OVER everywhere AS second_previous,
           lag(created_at, 1) OVER here AS channel_previous,
           lag(created_at, 2) OVER here AS channel_second_previous
    FROM conversations_conversation
    WINDOW everywhere AS (PARTITION BY contact_id ORDER BY created_at, id),
           here AS (PARTITION BY contact_id, channel_id ORDER BY created_at, id)
) AS h
"""


def facts_sql(*, chunk: int, progress: Callable[[str], None], time_zone: str) -> dict[str, float]:
    """Derive the three fact tables from the stored rows, as ``facts_compute`` defines them,
    with set-based statements over ranges of conversation ids. Returns seconds per table."""
    from django.db import connection

    seconds = {
        "history": 0.0,
        "conversation facts": 0.0,
        "response facts": 0.0,
        "message days": 0.0,
    }
    with connection.cursor() as cursor:
        cursor.execute(BUSINESS_CLOCK_SQL)
        started = time.perf_counter()
        cursor.execute("DROP TABLE IF EXISTS bench_kpi_history")
        cursor.execute(HISTORY_SQL, {"tz": time_zone})
        cursor.execute("CREATE INDEX ON bench_kpi_history (id)")
        cursor.execute("ANALYZE bench_kpi_history")
        seconds["history"] = time.perf_counter() - started
        # The contact's VIP mark, where the schema keeps it on the facts.
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'kpis_conversationfact' AND column_name = 'is_vip'"
        )
        vip = cursor.fetchone() is not None
        conversation_facts = CONVERSATION_FACTS_SQL.replace(
            "__VIP_COLUMN__", " is_vip," if vip else ""
        ).replace("__VIP_VALUE__", " ct.is_vip," if vip else "")
        cursor.execute("SELECT coalesce(max(id), 0) FROM conversations_conversation")
        highest = int(cursor.fetchone()[0])
        reported = 0.0
        for low in range(1, highest + 1, chunk):
            high = min(highest, low + chunk - 1)
            params: dict[str, Any] = {"low": low, "high": high, "tz": time_zone}
            for name, statement in (
                ("conversation facts", conversation_facts),
                ("response facts", RESPONSE_FACTS_SQL),
                ("message days", MESSAGE_DAYS_SQL),
            ):
                started = time.perf_counter()
                cursor.execute(statement, params)
                seconds[name] += time.perf_counter() - started
            done = high / highest
            if done - reported >= 0.2 or high == highest:
                reported = done
                progress(f"  facts: {done:.0%}")
        cursor.execute("DROP TABLE bench_kpi_history")
        cursor.execute("DROP FUNCTION bench_kpi_clock(timestamptz)")
    return seconds
