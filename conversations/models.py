from datetime import datetime

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models
from django.utils import timezone

from channels_ingest.crypto import EncryptedTextField
from conversations import nav_counts


class Status(models.TextChoices):
    NEW = "new", "New"
    OPEN = "open", "Open"
    PENDING = "pending", "Pending customer"
    ESCALATED = "escalated", "Escalated"
    RESOLVED = "resolved", "Resolved"
    CLOSED = "closed", "Closed"


# Statuses in which a conversation still needs something from us or the customer.
ACTIVE_STATUSES = (Status.NEW, Status.OPEN, Status.PENDING, Status.ESCALATED)


class Priority(models.IntegerChoices):
    LOW = 1, "Low"
    NORMAL = 2, "Normal"
    HIGH = 3, "High"
    URGENT = 4, "Urgent"


class Direction(models.TextChoices):
    IN = "in", "Inbound"
    OUT = "out", "Outbound"


class MessageKind(models.TextChoices):
    POST = "post", "Post"
    COMMENT = "comment", "Comment"
    MENTION = "mention", "Mention"
    DM = "dm", "Direct message"
    REPLY = "reply", "Reply"
    NOTE = "note", "Internal note"


class DeliveryStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PENDING_APPROVAL = "pending_approval", "Waiting for approval"
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"


class Sentiment(models.TextChoices):
    POSITIVE = "positive", "Positive"
    NEUTRAL = "neutral", "Neutral"
    NEGATIVE = "negative", "Negative"


def sentiment_label(score: float | None) -> str:
    """VADER's customary cut-offs on the compound score."""
    if score is None:
        return ""
    if score >= 0.05:
        return Sentiment.POSITIVE
    if score <= -0.05:
        return Sentiment.NEGATIVE
    return Sentiment.NEUTRAL


class SlaState(models.TextChoices):
    OK = "ok", "On track"
    AT_RISK = "at_risk", "At risk"
    BREACHED = "breached", "Breached"


def sla_state(
    due: datetime | None, warn: datetime | None, paused: datetime | None, now: datetime
) -> str:
    """ok, at_risk or breached for a conversation's running SLA targets; empty when none runs
    (no due time, or the clock paused)."""
    if due is None or paused is not None:
        return ""
    if due <= now:
        return SlaState.BREACHED
    if warn is not None and warn <= now:
        return SlaState.AT_RISK
    return SlaState.OK


class SlaTarget(models.TextChoices):
    FIRST_RESPONSE = "first_response", "First response"
    NEXT_RESPONSE = "next_response", "Next response"
    RESOLUTION = "resolution", "Resolution"


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True)
    color = models.CharField(max_length=7, default="#64748b")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Conversation(models.Model):
    # Foreign keys served by the composite indexes below carry no index of their own: every
    # index is paid for on each insert of the ingest pipeline.
    contact = models.ForeignKey(
        "contacts.Contact", on_delete=models.PROTECT, related_name="conversations", db_index=False
    )
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.PROTECT,
        related_name="conversations",
        db_index=False,
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    team = models.ForeignKey(
        "governance.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="conversations",
        db_index=False,
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_conversations",
        db_index=False,
    )
    subject = models.CharField(max_length=200, blank=True)
    # The platform's thread: a DM thread id, or the id of the post that started a public thread.
    thread_key = models.CharField(max_length=200, blank=True)
    is_monitoring = models.BooleanField(
        default=False, help_text="Listened to, no reply expected (kept out of the work views)"
    )
    sentiment = models.FloatField(null=True, blank=True, help_text="Mean compound score, -1..1")
    tags = models.ManyToManyField(Tag, blank=True, related_name="conversations")
    message_count = models.PositiveIntegerField(default=0)
    inbound_count = models.PositiveIntegerField(default=0)
    last_message_preview = models.CharField(max_length=280, blank=True)
    last_message_direction = models.CharField(max_length=3, choices=Direction.choices, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(default=timezone.now)
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    # Set while the customer waits for us: the time of their oldest unanswered message.
    waiting_since = models.DateTimeField(null=True, blank=True)
    first_response_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Set while snoozed: the conversation waits as pending and reopens then, or when the
    # customer writes first.
    snoozed_until = models.DateTimeField(null=True, blank=True)
    # SLA timers: the policy chosen for the conversation and the due time of each target that is
    # running (NULL when met, not set by the policy, or not started).
    sla_policy = models.ForeignKey(
        "SlaPolicy", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    first_response_due_at = models.DateTimeField(null=True, blank=True)
    next_response_due_at = models.DateTimeField(null=True, blank=True)
    resolution_due_at = models.DateTimeField(null=True, blank=True)
    # The earliest running due time, and from when it counts as at risk: the inbox's SLA state.
    sla_due_at = models.DateTimeField(null=True, blank=True)
    sla_warn_at = models.DateTimeField(null=True, blank=True)
    # When the SLA check must next look at the conversation (a warning or breach to fire).
    sla_check_at = models.DateTimeField(null=True, blank=True)
    # Set while the clocks stand still: the customer has the ball, or nobody does.
    sla_paused_at = models.DateTimeField(null=True, blank=True)
    # When the current round of clocks started: the first message asking something of us, or
    # the last reopening (NULL: at creation). A target a new policy brings runs from here.
    sla_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["sla_check_at"],
                name="conv_sla_check_idx",
                condition=models.Q(sla_check_at__isnull=False),
            ),
            models.Index(
                fields=["sla_due_at", "id"],
                name="conv_sla_due_idx",
                condition=models.Q(sla_due_at__isnull=False),
            ),
            models.Index(
                fields=["snoozed_until"],
                name="conv_snoozed_idx",
                condition=models.Q(snoozed_until__isnull=False),
            ),
            # Inbox views: newest first within a status, optionally per channel/assignee/team.
            models.Index(
                fields=["status", "-last_message_at", "-id"], name="conv_status_recent_idx"
            ),
            models.Index(
                fields=["channel", "status", "-last_message_at"], name="conv_channel_status_idx"
            ),
            models.Index(
                fields=["assignee", "status", "-last_message_at"], name="conv_assignee_status_idx"
            ),
            models.Index(
                fields=["team", "status", "-last_message_at"], name="conv_team_status_idx"
            ),
            models.Index(fields=["-last_message_at", "-id"], name="conv_recent_idx"),
            models.Index(fields=["contact", "status"], name="conv_contact_status_idx"),
            models.Index(fields=["channel", "thread_key"], name="conv_thread_idx"),
        ]

    def __str__(self) -> str:
        return f"Conversation #{self.pk}"

    @property
    def sentiment_label(self) -> str:
        return sentiment_label(self.sentiment)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def sla_state(self, now: "datetime | None" = None) -> str:
        """ok, at_risk or breached for the running targets; empty when none runs."""
        return sla_state(
            self.sla_due_at, self.sla_warn_at, self.sla_paused_at, now or timezone.now()
        )


# What the inbox searches in message bodies on PostgreSQL; the index below is on exactly this.
MESSAGE_SEARCH_VECTOR = SearchVector("body", config="simple")


class Message(models.Model):
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    # Denormalised from the conversation so a platform id is unique per channel.
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        on_delete=models.PROTECT,
        related_name="messages",
        db_index=False,
    )
    direction = models.CharField(max_length=3, choices=Direction.choices)
    kind = models.CharField(max_length=10, choices=MessageKind.choices)
    # NULL until an outbound message is sent; the unique constraint only covers set values.
    external_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    in_reply_to_external_id = models.CharField(max_length=100, blank=True)
    author_identity = models.ForeignKey(
        "contacts.SocialIdentity",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    author_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="authored_messages",
    )
    body = models.TextField()
    language = models.CharField(max_length=16, blank=True)
    sentiment = models.FloatField(null=True, blank=True)
    keywords = models.JSONField(default=list, blank=True, help_text="Keyword lists matched")
    created_at = models.DateTimeField(default=timezone.now)
    received_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    # When a worker took the message to send it: a send stuck past a deadline failed unseen.
    send_started_at = models.DateTimeField(null=True, blank=True)
    delivery_status = models.CharField(
        max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.RECEIVED
    )
    error = models.TextField(blank=True)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "external_id"],
                condition=models.Q(external_id__isnull=False),
                name="message_channel_external_id_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at", "id"], name="msg_conversation_idx"),
            models.Index(fields=["created_at"], name="msg_created_idx"),
            models.Index(fields=["channel", "created_at"], name="msg_channel_created_idx"),
            # Created on PostgreSQL only (see the migration); SQLite searches by substring.
            GinIndex(MESSAGE_SEARCH_VECTOR, name="msg_body_search_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def sentiment_label(self) -> str:
        return sentiment_label(self.sentiment)

    @property
    def is_note(self) -> bool:
        return self.kind == MessageKind.NOTE


class EventKind(models.TextChoices):
    CREATED = "created", "Conversation created"
    REPLY_SENT = "reply_sent", "Reply written"
    MESSAGE_SENT = "message_sent", "Message delivered"
    NOTE_ADDED = "note_added", "Note added"
    ASSIGNED = "assigned", "Assigned"
    STATUS_CHANGED = "status_changed", "Status changed"
    PRIORITY_CHANGED = "priority_changed", "Priority changed"
    TAGGED = "tagged", "Tag added"
    UNTAGGED = "untagged", "Tag removed"
    SNOOZED = "snoozed", "Snoozed"
    WOKE = "woke", "Snooze ended"
    REOPENED = "reopened", "Reopened"
    TEAM_CHANGED = "team_changed", "Team changed"
    MONITORING = "monitoring", "Marked for monitoring"
    RULE_APPLIED = "rule_applied", "Routing rule applied"
    SLA_AT_RISK = "sla_at_risk", "SLA at risk"
    SLA_BREACHED = "sla_breached", "SLA breached"
    ESCALATED = "escalated", "Escalated"
    DEESCALATED = "deescalated", "Returned from escalation"
    ESCALATION_CLOSED = "escalation_closed", "Escalation closed"


class ConversationEvent(models.Model):
    """The timeline of a conversation: who did what when. KPIs are computed from these."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    kind = models.CharField(max_length=30, choices=EventKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="event_conversation_idx"),
            models.Index(fields=["kind", "created_at"], name="event_kind_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on #{self.conversation_id}"


class CannedResponse(models.Model):
    """A prepared reply, shared with a team or kept by one agent. Placeholders such as
    {first_name} are filled in for the conversation at hand."""

    title = models.CharField(max_length=100)
    body = models.TextField()
    team = models.ForeignKey(
        "governance.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="canned_responses",
        help_text="Set for a personal response; leave empty with a team for a shared one.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class NotificationQuerySet(models.QuerySet["Notification"]):
    def bulk_create(self, objs, *args, **kwargs):  # type: ignore[no-untyped-def]
        created = super().bulk_create(objs, *args, **kwargs)
        nav_counts.unread_forget(n.recipient_id for n in created)
        return created


class Notification(models.Model):
    """Something a user should look at: a colleague mentioned them in a note, for now."""

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="notifications"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(
                fields=["recipient", "-created_at"],
                name="notification_unread_idx",
                condition=models.Q(read_at__isnull=True),
            ),
            models.Index(fields=["recipient", "-created_at"], name="notification_recipient_idx"),
        ]

    def __str__(self) -> str:
        return f"To {self.recipient_id}: {self.text}"

    def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().save(*args, **kwargs)
        # The recipient's unread count, cached per page, includes this one from now on.
        nav_counts.unread_forget([self.recipient_id])


# --- Business hours and SLAs --------------------------------------------------------------


def _default_weekly_hours() -> dict[str, list[list[str]]]:
    return {str(day): [["09:00", "17:00"]] for day in range(5)}


class BusinessCalendar(models.Model):
    """Opening hours in a time zone, with holidays: SLA clocks only run while open."""

    name = models.CharField(max_length=100, unique=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    # Weekday ("0" = Monday) -> local [start, end) intervals as "HH:MM"; "24:00" ends at midnight.
    weekly_hours = models.JSONField(default=_default_weekly_hours)
    is_default = models.BooleanField(
        default=False, help_text="The organisation's hours, used where no calendar is named"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="calendar_one_default",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Holiday(models.Model):
    calendar = models.ForeignKey(
        BusinessCalendar, on_delete=models.CASCADE, related_name="holidays"
    )
    date = models.DateField()
    name = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["date"]
        constraints = [
            models.UniqueConstraint(fields=["calendar", "date"], name="holiday_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.name}".strip()


class SlaPolicy(models.Model):
    """Response and resolution targets, chosen per conversation by priority, channel and VIP.

    The most specific active policy wins: a channel counts most, then VIP, then priority.
    """

    name = models.CharField(max_length=100, unique=True)
    priority = models.PositiveSmallIntegerField(
        choices=Priority.choices, null=True, blank=True, help_text="Empty for any priority"
    )
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Empty for every channel",
    )
    vip_only = models.BooleanField("VIP contacts only", default=False)
    first_response_minutes = models.PositiveIntegerField(null=True, blank=True)
    next_response_minutes = models.PositiveIntegerField(null=True, blank=True)
    resolution_minutes = models.PositiveIntegerField(null=True, blank=True)
    calendar = models.ForeignKey(
        BusinessCalendar,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Business hours the clocks run in; empty for around the clock",
    )
    at_risk_minutes = models.PositiveIntegerField(
        default=30, help_text="How long before a due time the conversation shows as at risk"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "SLA policy"
        verbose_name_plural = "SLA policies"

    def __str__(self) -> str:
        return self.name


class SlaEventKind(models.TextChoices):
    AT_RISK = "at_risk", "At risk"
    BREACHED = "breached", "Breached"


class SlaEvent(models.Model):
    """A target that came near or past its due time: fired once, whatever retries happen."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="sla_events", db_index=False
    )
    policy = models.ForeignKey(
        SlaPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target = models.CharField(max_length=20, choices=SlaTarget.choices)
    kind = models.CharField(max_length=10, choices=SlaEventKind.choices)
    due_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    # A breach's rules when they failed: when they are to run again (the beat's second scan
    # finds it), cleared once they ran or were given up on; tries so far; the last error.
    rules_due_at = models.DateTimeField(null=True, blank=True)
    rules_attempts = models.PositiveSmallIntegerField(default=0)
    rules_error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "target", "kind", "due_at"], name="sla_event_once"
            ),
        ]
        indexes = [
            models.Index(fields=["kind", "created_at"], name="sla_event_kind_idx"),
            models.Index(
                fields=["rules_due_at"],
                name="sla_event_rules_due_idx",
                condition=models.Q(rules_due_at__isnull=False),
            ),
        ]
        verbose_name = "SLA event"

    def __str__(self) -> str:
        return f"{self.get_target_display()} {self.get_kind_display().lower()}"


class QueuedAssignment(models.Model):
    """A conversation a rule wanted auto-assigned while nobody in its team could take it
    (everyone away or at capacity): it waits here, oldest first, until the beat
    (``queued_assign``) finds an agent online with room, or it no longer needs one (someone
    assigned it, it was resolved, it left its team)."""

    conversation = models.OneToOneField(
        Conversation, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    # The team it waits in: moved to another since, it no longer waits here.
    team = models.ForeignKey(
        "governance.Team", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    queued_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["queued_at", "conversation"], name="queued_assign_idx")]

    def __str__(self) -> str:
        return f"Conversation #{self.conversation_id} waiting for an agent"


# --- Routing rules ----------------------------------------------------------------------


class RoutingRule(models.Model):
    """Conditions and actions run in order on events; the definitions are checked by
    ``conversations.rules`` when saved, so they never fail at run time."""

    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    events = models.JSONField(default=list)
    match = models.CharField(
        max_length=3, choices=[("all", "All conditions"), ("any", "Any condition")], default="all"
    )
    conditions = models.JSONField(default=list, blank=True)
    actions = models.JSONField(default=list)
    stop_processing = models.BooleanField(
        "Stop processing further rules", default=False, help_text="when this rule matches"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name


class WebhookEndpoint(models.Model):
    """An outside system we call: signed JSON POSTs, retried until they are accepted."""

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    secret = EncryptedTextField(blank=True, help_text="Signs each call (HMAC-SHA256)")
    is_active = models.BooleanField(default=True)
    # Product events this endpoint subscribes to (conversations.webhook_events.WEBHOOK_EVENTS);
    # rules and departments call it whatever it subscribes to.
    events = models.JSONField(default=list, blank=True)
    allow_private_network = models.BooleanField(
        "Allow private addresses",
        default=False,
        help_text="Let calls go to loopback, link-local and private addresses (an internal system)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WebhookCallStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookCall(models.Model):
    """One event to deliver to an endpoint. ``key`` makes a repeated request harmless."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="calls")
    key = models.CharField(max_length=200, unique=True)
    event = models.CharField(max_length=50)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=WebhookCallStatus.choices, default=WebhookCallStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_call_due_idx",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.endpoint}"


# --- Escalation -------------------------------------------------------------------------


class DepartmentDelivery(models.TextChoices):
    IN_APP = "in_app", "In the app (the team's queue)"
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class Department(models.Model):
    """Where escalations go: a team in the product (tier 2, billing) or a department outside
    it (logistics, the call center) reached by email or a signed webhook with a link back."""

    name = models.CharField(max_length=100, unique=True)
    delivery = models.CharField(
        max_length=10, choices=DepartmentDelivery.choices, default=DepartmentDelivery.IN_APP
    )
    team = models.ForeignKey(
        "governance.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    email = models.EmailField(blank=True)
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class EscalationPath(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class EscalationLevel(models.Model):
    """One step of a path: a department, or a named person such as the support manager."""

    path = models.ForeignKey(EscalationPath, on_delete=models.CASCADE, related_name="levels")
    position = models.PositiveSmallIntegerField(default=0)
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    class Meta:
        ordering = ["path", "position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(department__isnull=False, user__isnull=True)
                | models.Q(department__isnull=True, user__isnull=False),
                name="escalation_level_one_target",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.path} level {self.position + 1}: {self.department or self.user}"


class EscalationTrigger(models.TextChoices):
    AGENT = "agent", "An agent"
    RULE = "rule", "A routing rule"
    SLA = "sla", "An SLA breach"


class EscalationStatus(models.TextChoices):
    OPEN = "open", "Waiting for the department"
    RETURNED = "returned", "Answered, back with support"
    CLOSED = "closed", "Closed"


class EscalationOutcome(models.TextChoices):
    RESOLVED_IN_CHANNEL = "resolved_in_channel", "Resolved in the channel"
    RESOLVED_BY_DEPARTMENT = "resolved_by_department", "Resolved by the department"
    MOVED_OFFLINE = "moved_offline", "Moved to phone or email"
    ABANDONED = "abandoned", "Abandoned"


class Escalation(models.Model):
    """A conversation handed to a department: who, why, to whom and when, the answer, and
    how it ended. One is open per conversation at a time; moving up a level updates it."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="escalations", db_index=False
    )
    path = models.ForeignKey(
        EscalationPath, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    level = models.PositiveSmallIntegerField(default=0)
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.PROTECT, related_name="escalations"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    trigger = models.CharField(max_length=10, choices=EscalationTrigger.choices)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(
        max_length=10, choices=EscalationStatus.choices, default=EscalationStatus.OPEN
    )
    # Whom the conversation goes back to when the department answers.
    previous_assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    previous_team = models.ForeignKey(
        "governance.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    answer = models.TextField(blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    answered_by_name = models.CharField(max_length=200, blank=True)
    returned_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=30, choices=EscalationOutcome.choices, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(status="open"),
                name="escalation_one_open",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "status"], name="escalation_conversation_idx"),
            models.Index(fields=["department", "status"], name="escalation_department_idx"),
            models.Index(fields=["created_at"], name="escalation_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Escalation of #{self.conversation_id} to {self.department or self.user}"

    @property
    def target_name(self) -> str:
        if self.department_id:
            return str(self.department)
        return str(self.user) if self.user_id else ""
