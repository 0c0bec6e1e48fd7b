"""What the reports read: facts derived from conversations, messages and their timelines, and
the targets managers set.

Facts are rows computed per conversation (`kpis.facts`), never edited by hand: a change to
what a conversation's facts read marks it stale (database triggers, in the same transaction as
the change), and a beat task recomputes the stale ones, writing the rows that differ. A rebuild
computes every conversation the same way, so it gives the same rows. Times are seconds; days
are the organisation's (settings.TIME_ZONE).
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from conversations.models import ACTIVE_STATUSES


class StaleConversation(models.Model):
    """A conversation whose facts must be computed again. Written by triggers; `version` goes
    up with every change, so a refresh only clears the mark if nothing changed meanwhile."""

    conversation_id = models.BigIntegerField(primary_key=True)
    version = models.PositiveIntegerField(default=1)

    def __str__(self) -> str:
        return f"#{self.conversation_id} v{self.version}"


class _Dimensions(models.Model):
    """What reports filter by, as the conversation is now.

    Facts are derived rows the refresh replaces whole, so their references carry no database
    constraint: PostgreSQL checked each one at commit, which cost more than writing the rows.
    The ORM still cascades deletes and sets references to NULL; a rebuild drops any leftover."""

    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
    )
    platform = models.CharField(max_length=20)
    team = models.ForeignKey(
        "governance.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )
    priority = models.PositiveSmallIntegerField()

    class Meta:
        abstract = True


# Conversations whose contact's previous conversation was on another channel: the condition of
# ConversationFact's partial index kpi_conv_switched_idx, which a query must write out as is
# for the planner to use the index.
SWITCHED_CHANNEL = models.Q(previous_day__isnull=False) & (
    models.Q(channel_previous_day__isnull=True)
    | models.Q(channel_previous_day__lt=models.F("previous_day"))
)


class ConversationFact(_Dimensions):
    """One row per conversation: how it started, was answered, resolved and escalated."""

    conversation = models.OneToOneField(
        "conversations.Conversation",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="kpi_fact",
        db_constraint=False,
    )
    # Served by the (channel, day) and (team, day) indexes below.
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    team = models.ForeignKey(
        "governance.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    contact = models.ForeignKey(
        "contacts.Contact",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    status = models.CharField(max_length=10)
    is_monitoring = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    day = models.DateField(help_text="The day it started")
    inbound = models.PositiveIntegerField(default=0)
    outbound = models.PositiveIntegerField(default=0)
    # The contact was a VIP when the facts were computed (kept for erased contacts).
    is_vip = models.BooleanField(default=False)
    # The contact's first conversation, for a contact who came in through a social channel.
    new_contact = models.BooleanField(default=False)
    # Days since the same contact's previous conversation started; empty for the first one.
    days_since_previous = models.FloatField(null=True, blank=True)
    # The days the same contact's previous and second previous conversations started (by
    # start, then id), on any channel and on this one's; empty where there is none. A range's
    # contacts are counted from them (`ContactCounts`) instead of from its conversations.
    previous_day = models.DateField(null=True, blank=True)
    second_previous_day = models.DateField(null=True, blank=True)
    channel_previous_day = models.DateField(null=True, blank=True)
    channel_second_previous_day = models.DateField(null=True, blank=True)

    first_response_at = models.DateTimeField(null=True, blank=True)
    first_response_seconds = models.FloatField(null=True, blank=True)
    first_response_business_seconds = models.FloatField(null=True, blank=True)
    # Whether the first-response target was met: on the reply; not met also when it passed
    # with no reply (the breach), so a conversation left unanswered counts as a miss.
    first_response_met = models.BooleanField(null=True, blank=True)
    first_response_sla_day = models.DateField(
        null=True,
        blank=True,
        help_text="The day the first-response target was settled: the reply's if met, else "
        "the day it fell due",
    )

    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_day = models.DateField(null=True, blank=True)
    resolution_seconds = models.FloatField(null=True, blank=True)
    resolution_business_seconds = models.FloatField(null=True, blank=True)
    # Whether the resolution target was met: by the last resolution; not met also when the
    # target of the round running now (from creation or the last reopening) passed before it
    # was resolved, so a conversation left open counts as a miss.
    resolution_met = models.BooleanField(null=True, blank=True)
    resolution_sla_day = models.DateField(
        null=True,
        blank=True,
        help_text="The day the resolution target was settled: the resolution's if met, else "
        "the day it fell due",
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    first_resolved_day = models.DateField(
        null=True,
        blank=True,
        help_text="The day of the first resolution, the reopen rate's: whether it held counts "
        "there",
    )

    reopens = models.PositiveIntegerField(default=0)
    breaches = models.PositiveIntegerField(default=0)
    escalations = models.PositiveIntegerField(default=0)
    escalation_department = models.ForeignKey(
        "conversations.Department",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    escalation_outcome = models.CharField(max_length=30, blank=True)

    sentiment_first = models.FloatField(null=True, blank=True)
    sentiment_last = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [
            # The conversations started in a range, and their contacts without the rows.
            models.Index(
                fields=["day", "contact"], include=["channel"], name="kpi_conv_day_contact_idx"
            ),
            # The resolutions of a range, and those of one duration bucket among them; and
            # who resolved them, for the agents' medians, without the rows.
            models.Index(
                fields=["resolved_day", "resolution_seconds"],
                include=["channel", "resolved_by"],
                name="kpi_conv_resolution_by_idx",
            ),
            models.Index(
                fields=["resolved_day", "resolution_business_seconds"],
                include=["channel"],
                name="kpi_conv_resolution_bus_idx",
            ),
            # A channel's conversations started in a range, and those among them whose
            # contact came back from another channel, without the rows.
            models.Index(
                fields=["channel", "day"],
                include=["contact", "previous_day", "channel_previous_day"],
                name="kpi_conv_channel_contacts_idx",
            ),
            models.Index(fields=["team", "day"], name="kpi_conv_team_idx"),
            models.Index(fields=["assignee", "day"], name="kpi_conv_assignee_idx"),
            # A contact's conversations of a range, and their channels, without the rows.
            models.Index(
                fields=["contact", "day"], include=["channel"], name="kpi_conv_contact_channel_idx"
            ),
            # The conversations whose contact's previous one was on another channel (one in
            # fifteen in the benchmark): for a scope of several channels, the contacts counted
            # once per channel.
            models.Index(
                fields=["channel", "day"],
                include=["contact", "previous_day", "channel_previous_day"],
                condition=SWITCHED_CHANNEL,
                name="kpi_conv_switched_idx",
            ),
            # The escalated among the resolutions of a range (about one in twenty), by how and
            # where their escalation went, without the rows.
            models.Index(
                fields=["resolved_day"],
                condition=models.Q(escalations__gt=0),
                include=["escalation_outcome", "escalation_department", "channel"],
                name="kpi_conv_escalated_idx",
            ),
            # The backlog: the few conversations open now, not every one ever started.
            models.Index(
                fields=["started_at"],
                condition=models.Q(status__in=ACTIVE_STATUSES, is_monitoring=False),
                name="kpi_conv_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"facts of #{self.conversation_id}"


class ResponseFact(_Dimensions):
    """One agent reply that ended a customer's wait: the first response of its conversation
    or a next response."""

    conversation = models.ForeignKey(
        "conversations.Conversation",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    at = models.DateTimeField()
    day = models.DateField()
    is_first = models.BooleanField()
    seconds = models.FloatField()
    business_seconds = models.FloatField(null=True, blank=True)
    sla_met = models.BooleanField(null=True, blank=True)
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )

    class Meta:
        indexes = [
            models.Index(fields=["conversation"], name="kpi_response_conv_idx"),
            models.Index(fields=["day"], name="kpi_response_day_idx"),
            models.Index(fields=["agent", "day"], name="kpi_response_agent_idx"),
            # First or next responses of a range, and those of one duration bucket among them
            # (a day at a time: `day IN (...)`); first responses alone are about one in five.
            # With the agent, for the agents' medians, without the rows.
            models.Index(
                fields=["is_first", "day", "seconds"],
                include=["channel", "agent"],
                name="kpi_response_agent_secs_idx",
            ),
            models.Index(
                fields=["is_first", "day", "business_seconds"],
                include=["channel"],
                name="kpi_response_business_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"response on #{self.conversation_id} at {self.at:%Y-%m-%d %H:%M}"


class MessageDay(_Dimensions):
    """Messages of one conversation on one day: volume and the customers' sentiment."""

    conversation = models.ForeignKey(
        "conversations.Conversation",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    day = models.DateField()
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    inbound = models.PositiveIntegerField(default=0)
    outbound = models.PositiveIntegerField(default=0)
    positive = models.PositiveIntegerField(default=0)
    neutral = models.PositiveIntegerField(default=0)
    negative = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "day"], name="kpi_message_day_unique")
        ]
        indexes = [models.Index(fields=["day"], name="kpi_message_day_idx")]

    def __str__(self) -> str:
        return f"#{self.conversation_id} on {self.day}"


class DayCounts(models.Model):
    """What the counted figures add up to on one day, per channel, team and priority: messages
    (the day they were written), conversations started and their breaches (the day it started),
    conversations resolved, how, and how their customers' sentiment changed (the day of the
    resolution), conversations first resolved and those reopened since (the day of the first
    resolution), first responses within SLA and responses per time bucket (the day of the
    reply).

    Kept by database triggers on the three fact tables, in the statement that changes them, so
    these always equal what the facts add up to (`facts_rebuild()` also computes them anew).
    Reports read them instead of the facts unless filtered by agent or tag. A row can come
    to hold only zeros; it counts nothing."""

    day = models.DateField()
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    platform = models.CharField(max_length=20)
    # The team's id, 0 for none: a key column must not be NULL for the triggers' upserts.
    team_key = models.BigIntegerField()
    priority = models.PositiveSmallIntegerField()

    inbound = models.IntegerField(default=0)
    outbound = models.IntegerField(default=0)
    positive = models.IntegerField(default=0)
    neutral = models.IntegerField(default=0)
    negative = models.IntegerField(default=0)

    started = models.IntegerField(default=0)
    new_contacts = models.IntegerField(default=0)
    returning_30 = models.IntegerField(default=0)
    returning_90 = models.IntegerField(default=0)
    vip = models.IntegerField(default=0)
    vip_answered = models.IntegerField(default=0)
    breaches = models.IntegerField(default=0)
    # Of those started that day, the conversations in the backlog now, and the unassigned.
    open = models.IntegerField(default=0)
    open_unassigned = models.IntegerField(default=0)

    resolved = models.IntegerField(default=0)
    in_channel = models.IntegerField(default=0)
    escalated = models.IntegerField(default=0)
    # Of the conversations first resolved that day, those reopened since (still open or not).
    first_resolved = models.IntegerField(default=0)
    reopened = models.IntegerField(default=0)
    resolution_met = models.IntegerField(default=0)
    resolution_missed = models.IntegerField(default=0)
    # Resolved conversations with a first and a last scored message, and how the score went.
    changed = models.IntegerField(default=0)
    improved = models.IntegerField(default=0)
    worsened = models.IntegerField(default=0)
    # Their first and last scores summed, in whole millionths (integers add up the same in
    # any order, so the triggers and a rebuild agree).
    sentiment_first_total = models.BigIntegerField(default=0)
    sentiment_last_total = models.BigIntegerField(default=0)

    first_response_met = models.IntegerField(default=0)
    first_response_missed = models.IntegerField(default=0)

    # First (f) and next (n) responses per bucket of metrics.RESPONSE_BUCKETS.
    f0 = models.IntegerField(default=0)
    f1 = models.IntegerField(default=0)
    f2 = models.IntegerField(default=0)
    f3 = models.IntegerField(default=0)
    f4 = models.IntegerField(default=0)
    f5 = models.IntegerField(default=0)
    n0 = models.IntegerField(default=0)
    n1 = models.IntegerField(default=0)
    n2 = models.IntegerField(default=0)
    n3 = models.IntegerField(default=0)
    n4 = models.IntegerField(default=0)
    n5 = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "channel", "platform", "team_key", "priority"],
                name="kpi_day_counts_key",
            )
        ]

    def __str__(self) -> str:
        return f"counts of {self.day} on channel {self.channel_id}"


class ContactCounts(models.Model):
    """Conversations started on one day and channel whose contact's previous conversation
    started on an earlier day (`earlier_day`, which may be the same day): on any channel
    (`previous`), on the same channel (`channel_previous`), and as much for the second
    previous conversation. Kept by database triggers on the conversation facts, as
    `DayCounts` are.

    A contact with conversations started in a range counts once, for its first one there: the
    range's contacts are its conversations less those whose previous conversation started in
    the range, and the contacts with two or more those whose previous one started in the range
    less those whose second previous one did. A range of n days reads at most n (n + 1) / 2
    rows per channel, whatever the number of conversations. The counts on any channel serve
    every channel together, those on the same channel one channel; a scope of some of several
    channels, or filtered by team, priority, agent or tag, counts its contacts from the facts."""

    day = models.DateField()
    earlier_day = models.DateField()
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    platform = models.CharField(max_length=20)
    previous = models.IntegerField(default=0)
    second_previous = models.IntegerField(default=0)
    channel_previous = models.IntegerField(default=0)
    channel_second_previous = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "earlier_day", "channel", "platform"],
                name="kpi_contact_counts_key",
            )
        ]

    def __str__(self) -> str:
        return f"contacts of {self.day} back to {self.earlier_day}, channel {self.channel_id}"


class AgentCounts(models.Model):
    """What an agent did on one day and channel: responses and how many met their SLA (the
    day of the reply), conversations they resolved and how many within SLA (the day of the
    resolution). Kept by database triggers on the response and conversation facts, as
    `DayCounts` are; the agents page reads them unless filtered by team, priority or tag."""

    day = models.DateField()
    # Deleting a user sets the facts' references to NULL, which takes their counts away.
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    platform = models.CharField(max_length=20)
    responses = models.IntegerField(default=0)
    responses_met = models.IntegerField(default=0)
    responses_missed = models.IntegerField(default=0)
    resolved = models.IntegerField(default=0)
    resolved_met = models.IntegerField(default=0)
    resolved_missed = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "agent", "channel", "platform"], name="kpi_agent_counts_key"
            )
        ]

    def __str__(self) -> str:
        return f"agent {self.agent_id} on {self.day}, channel {self.channel_id}"


class EscalationCounts(models.Model):
    """Conversations resolved on one day and channel after an escalation, per department their
    last escalation went to, by how it ended. Kept by database triggers on the conversation
    facts, as `DayCounts` are; a summary reads them unless filtered by team, priority, agent
    or tag."""

    day = models.DateField(help_text="The day of the resolution")
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    platform = models.CharField(max_length=20)
    # The department's id, 0 for none: a key column must not be NULL for the triggers' upserts.
    department_key = models.BigIntegerField()
    # Resolved while the escalation was still open (no outcome).
    still_open = models.IntegerField(default=0)
    resolved_in_channel = models.IntegerField(default=0)
    resolved_by_department = models.IntegerField(default=0)
    moved_offline = models.IntegerField(default=0)
    abandoned = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "channel", "platform", "department_key"],
                name="kpi_escalation_counts_key",
            )
        ]

    def __str__(self) -> str:
        return f"escalations resolved on {self.day}, channel {self.channel_id}"


# Edges of the duration buckets in whole seconds, about 10% apart from 1 second to 104 days.
# Bucket 0 holds durations below zero, bucket 1 those of exactly zero (replies before business
# hours open: many), bucket 2 those between zero and a second, bucket 2 + i those from edge
# i - 1 up to (not including) edge i, the last those from the last edge up. Whole numbers, so
# the database and Python compare a duration with them alike. Frozen in
# kpis/migrations/0008_duration_counts.py, which holds the triggers that count by them.
DURATION_EDGES: tuple[int, ...] = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    16,
    17,
    19,
    21,
    23,
    26,
    28,
    31,
    34,
    37,
    41,
    45,
    50,
    55,
    60,
    66,
    73,
    80,
    88,
    97,
    107,
    117,
    129,
    142,
    156,
    172,
    189,
    208,
    229,
    252,
    277,
    304,
    335,
    368,
    405,
    446,
    490,
    539,
    593,
    653,
    718,
    790,
    869,
    956,
    1051,
    1156,
    1272,
    1399,
    1539,
    1693,
    1862,
    2048,
    2253,
    2479,
    2726,
    2999,
    3299,
    3629,
    3992,
    4391,
    4830,
    5313,
    5844,
    6429,
    7072,
    7779,
    8557,
    9412,
    10354,
    11389,
    12528,
    13781,
    15159,
    16675,
    18342,
    20176,
    22194,
    24413,
    26855,
    29540,
    32494,
    35743,
    39318,
    43249,
    47574,
    52332,
    57565,
    63322,
    69654,
    76619,
    84281,
    92709,
    101980,
    112178,
    123396,
    135735,
    149309,
    164240,
    180664,
    198730,
    218603,
    240463,
    264510,
    290961,
    320057,
    352063,
    387269,
    425996,
    468595,
    515455,
    567000,
    623700,
    686070,
    754677,
    830145,
    913160,
    1004475,
    1104923,
    1215415,
    1336957,
    1470653,
    1617718,
    1779490,
    1957439,
    2153182,
    2368501,
    2605351,
    2865886,
    3152474,
    3467722,
    3814494,
    4195943,
    4615538,
    5077092,
    5584801,
    6143281,
    6757609,
    7433370,
    8176707,
    8994377,
)
DURATION_BUCKETS = len(DURATION_EDGES) + 3


class DurationMeasure(models.IntegerChoices):
    """Each duration whose spread the reports show, by where it is read from."""

    FIRST_RESPONSE = 0, "First response"  # ResponseFact.seconds of first responses
    FIRST_RESPONSE_BUSINESS = 1, "First response, business time"
    NEXT_RESPONSE = 2, "Next response"  # ResponseFact.seconds of next responses
    NEXT_RESPONSE_BUSINESS = 3, "Next response, business time"
    RESOLUTION = 4, "Resolution"  # ConversationFact.resolution_seconds, by resolved_day
    RESOLUTION_BUSINESS = 5, "Resolution, business time"


class DurationCounts(models.Model):
    """How many durations of each measure fell in each bucket of `DURATION_EDGES` on one day
    (the day of the reply, of the resolution) and channel, and their sum in microseconds.

    Kept by database triggers on the response and conversation facts, in the statement that
    changes them, as `DayCounts` are. A report finds in them which bucket holds the median or
    the 90th percentile, then reads only the facts of that bucket to pick the exact value.
    Kept per channel only: a range filtered by team, priority, agent or tag reads the facts."""

    day = models.DateField()
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    platform = models.CharField(max_length=20)
    measure = models.PositiveSmallIntegerField(choices=DurationMeasure.choices)
    n = models.IntegerField(default=0)
    # Whole microseconds: integers add up the same whichever order the rows come in.
    total = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "channel", "platform", "measure"], name="kpi_duration_counts_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_measure_display()} on {self.day}, channel {self.channel_id}"


# One counter per bucket: b0 .. b156.
for _bucket in range(DURATION_BUCKETS):
    DurationCounts.add_to_class(f"b{_bucket}", models.IntegerField(default=0))


class AgentDurations(models.Model):
    """How many of an agent's first responses (the day of the reply) and resolutions (the day
    of the resolution) fell in each bucket of `DURATION_EDGES`, per day and channel. Kept by
    database triggers on the response and conversation facts, as `DurationCounts` are; the
    agents page finds each agent's medians from them and the facts of the bucket that holds
    them, unless filtered by team, priority or tag."""

    day = models.DateField()
    # Deleting a user sets the facts' references to NULL, which takes their counts away.
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    platform = models.CharField(max_length=20)
    measure = models.PositiveSmallIntegerField(choices=DurationMeasure.choices)
    n = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "agent", "channel", "platform", "measure"],
                name="kpi_agent_durations_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_measure_display()} of agent {self.agent_id} on {self.day}"


for _bucket in range(DURATION_BUCKETS):
    AgentDurations.add_to_class(f"b{_bucket}", models.IntegerField(default=0))


class Metric(models.TextChoices):
    """Every figure a target can be set on. Times are in minutes, shares in percent."""

    INBOUND = "inbound", "Inbound messages"
    OUTBOUND = "outbound", "Outbound messages"
    NEW_CONVERSATIONS = "new_conversations", "New conversations"
    NEW_CONTACTS = "new_contacts", "New contacts first seen on social"
    FIRST_RESPONSE_MEDIAN = "first_response_median", "Median first response (min)"
    FIRST_RESPONSE_P90 = "first_response_p90", "90th percentile first response (min)"
    NEXT_RESPONSE_MEDIAN = "next_response_median", "Median next response (min)"
    RESOLUTION_MEDIAN = "resolution_median", "Median resolution time (min)"
    RESOLUTION_P90 = "resolution_p90", "90th percentile resolution time (min)"
    FIRST_RESPONSE_SLA = "first_response_sla", "First responses within SLA (%)"
    RESOLUTION_SLA = "resolution_sla", "Resolutions within SLA (%)"
    BREACHES = "breaches", "SLA breaches"
    IN_CHANNEL_RESOLUTION = "in_channel_resolution", "In-channel resolution (%)"
    ESCALATION_RATE = "escalation_rate", "Escalation rate (%)"
    REOPEN_RATE = "reopen_rate", "Reopen rate (%)"
    POSITIVE_SHARE = "positive_share", "Positive messages (%)"
    NEGATIVE_SHARE = "negative_share", "Negative messages (%)"
    BACKLOG = "backlog", "Open conversations"
    UNASSIGNED = "unassigned", "Open and unassigned"
    RETURNING_30 = "returning_30", "Customers returning within 30 days (%)"
    VIP_COVERAGE = "vip_coverage", "VIP conversations answered (%)"


class Period(models.TextChoices):
    WEEK = "week", "Weekly"
    MONTH = "month", "Monthly"
    QUARTER = "quarter", "Quarterly"


class KpiTarget(models.Model):
    """A figure a manager commits to in advance, for a scope (everything, a channel, a
    platform or a team) and a period length."""

    metric = models.CharField(max_length=30, choices=Metric.choices)
    value = models.FloatField(help_text="Minutes for times, percent for shares, else a count")
    period = models.CharField(max_length=10, choices=Period.choices, default=Period.MONTH)
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    platform = models.CharField(max_length=20, blank=True)
    team = models.ForeignKey(
        "governance.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    at_risk_margin = models.FloatField(
        default=10.0, help_text="Within this many percent of the target counts as at risk"
    )
    valid_from = models.DateField(default=timezone.localdate)
    note = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["metric", "period", "pk"]

    def __str__(self) -> str:
        return f"{self.get_metric_display()} {self.value:g} ({self.get_period_display()})"


class DigestRun(models.Model):
    """One digest per period: a retried task finds the row and sends nothing twice."""

    period = models.CharField(max_length=10, choices=Period.choices, default=Period.WEEK)
    period_start = models.DateField()
    period_end = models.DateField()
    sent_at = models.DateTimeField(null=True, blank=True)
    # User ids already sent to: a retry after a failure part-way does not send them twice.
    sent_to = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["period", "period_start"], name="kpi_digest_once")
        ]

    def __str__(self) -> str:
        return f"digest {self.period_start}..{self.period_end}"
