from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models
from django.utils import timezone


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

    class Meta:
        indexes = [
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
            models.Index(fields=["waiting_since"], name="conv_waiting_idx"),
            models.Index(fields=["contact", "status"], name="conv_contact_status_idx"),
            models.Index(fields=["channel", "thread_key"], name="conv_thread_idx"),
            # Reports: conversations opened in a time range.
            models.Index(fields=["created_at"], name="conv_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Conversation #{self.pk}"

    @property
    def sentiment_label(self) -> str:
        return sentiment_label(self.sentiment)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


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
