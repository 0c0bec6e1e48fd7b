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

    first_response_at = models.DateTimeField(null=True, blank=True)
    first_response_seconds = models.FloatField(null=True, blank=True)
    first_response_business_seconds = models.FloatField(null=True, blank=True)
    first_response_met = models.BooleanField(null=True, blank=True)

    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_day = models.DateField(null=True, blank=True)
    resolution_seconds = models.FloatField(null=True, blank=True)
    resolution_business_seconds = models.FloatField(null=True, blank=True)
    resolution_met = models.BooleanField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,
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
            models.Index(fields=["day"], name="kpi_conv_day_idx"),
            models.Index(fields=["resolved_day"], name="kpi_conv_resolved_idx"),
            models.Index(fields=["channel", "day"], name="kpi_conv_channel_idx"),
            models.Index(fields=["team", "day"], name="kpi_conv_team_idx"),
            models.Index(fields=["assignee", "day"], name="kpi_conv_assignee_idx"),
            models.Index(fields=["contact", "day"], name="kpi_conv_contact_idx"),
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
            # First responses alone (about one in five): their medians per week and targets.
            models.Index(
                fields=["day"], condition=models.Q(is_first=True), name="kpi_response_first_idx"
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
    conversations resolved and how (the day of the resolution), first responses within SLA
    and responses per time bucket (the day of the reply).

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

    resolved = models.IntegerField(default=0)
    in_channel = models.IntegerField(default=0)
    escalated = models.IntegerField(default=0)
    reopened = models.IntegerField(default=0)
    resolution_met = models.IntegerField(default=0)
    resolution_missed = models.IntegerField(default=0)

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
