import json

from django.db import models
from django.utils import timezone

from channels_ingest.crypto import EncryptedJSONField
from channels_ingest.platforms import Platform


class ChannelMode(models.TextChoices):
    LISTEN = "listen", "Listen only"
    ENGAGE = "engage", "Listen and reply"


class ChannelHealth(models.TextChoices):
    OK = "ok", "Healthy"
    ERROR = "error", "Error"
    RATE_LIMITED = "rate_limited", "Rate limited"
    NEEDS_REAUTH = "needs_reauth", "Needs re-authentication"


class ChannelAccount(models.Model):
    """A company account on one platform that we listen to (and maybe reply from)."""

    platform = models.CharField(max_length=20, choices=Platform.choices)
    name = models.CharField(max_length=100, unique=True)
    handle = models.CharField(max_length=100, blank=True, help_text="@handle or page name")
    external_account_id = models.CharField(
        max_length=100, blank=True, help_text="The account's id on the platform"
    )
    mode = models.CharField(max_length=10, choices=ChannelMode.choices, default=ChannelMode.ENGAGE)
    credentials = EncryptedJSONField(default=dict, blank=True)
    settings = models.JSONField(
        default=dict, blank=True, help_text="Connector options, e.g. search keywords"
    )
    cursor = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)
    poll_interval_seconds = models.PositiveIntegerField(default=60)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    # A lease taken by the worker polling this channel, so no two workers poll it at once.
    poll_lease_until = models.DateTimeField(null=True, blank=True)
    poll_lease_token = models.CharField(max_length=32, blank=True)
    health = models.CharField(
        max_length=20, choices=ChannelHealth.choices, default=ChannelHealth.OK
    )
    last_error = models.TextField(blank=True)
    rate_limited_until = models.DateTimeField(null=True, blank=True)
    default_team = models.ForeignKey(
        "governance.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["is_active", "next_poll_at"], name="channel_due_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_listen_only(self) -> bool:
        return self.mode == ChannelMode.LISTEN


class DeadLetterStatus(models.TextChoices):
    NEW = "new", "New"
    RETRIED = "retried", "Retried"
    DISCARDED = "discarded", "Discarded"


class DeadLetter(models.Model):
    """A payload we could not turn into posts, kept whole for inspection and retry."""

    channel = models.ForeignKey(
        ChannelAccount, null=True, on_delete=models.SET_NULL, related_name="dead_letters"
    )
    source = models.CharField(max_length=20, help_text="poll or webhook")
    raw = models.TextField()
    error = models.TextField()
    # A post read from ``raw`` that could not be stored, as it was read (``post_as_json``): a
    # retry stores it without reading the payload again.
    post = models.JSONField(null=True, blank=True)
    # For one item of a poll page or a delivery (``raw``), what its connector needs to read it
    # again alone: the reader and the parts of the page it referred to (``read_item``).
    context = models.JSONField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=DeadLetterStatus.choices, default=DeadLetterStatus.NEW
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "-created_at"], name="deadletter_status_idx")]

    def __str__(self) -> str:
        return f"Dead letter #{self.pk} ({self.source})"

    @property
    def context_json(self) -> str:
        """The context, laid out for admins to read beside the payload."""
        return json.dumps(self.context, indent=2, ensure_ascii=False) if self.context else ""


class WebhookStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    PROCESSED = "processed", "Processed"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """A verified webhook body, stored before we answer the platform so nothing is lost if the
    broker or a worker fails; a task turns it into posts."""

    channel = models.ForeignKey(
        ChannelAccount, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    body = models.TextField()
    received_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(
        max_length=10, choices=WebhookStatus.choices, default=WebhookStatus.PENDING
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    posts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "received_at"], name="webhook_status_idx")]

    def __str__(self) -> str:
        return f"Webhook delivery #{self.pk} ({self.status})"


class KeywordList(models.Model):
    """Terms admins watch for; a match is stored on the message and tags its conversation."""

    name = models.CharField(max_length=50, unique=True)
    terms = models.JSONField(default=list, help_text="Words or phrases, matched whole-word")
    tag = models.ForeignKey(
        "conversations.Tag",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Tag added to conversations with a match",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
