from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce


class Role(models.TextChoices):
    """Roles are Django groups of these names; permissions hang on the groups."""

    AGENT = "agent", "Agent"
    MANAGER = "manager", "Manager"
    ADMIN = "admin", "Admin"


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="TeamMembership", related_name="teams", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    # Auto-assignment: at most this many active conversations (empty: no limit), and the
    # member assigned longest ago goes next.
    capacity = models.PositiveIntegerField(null=True, blank=True)
    last_auto_assigned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="team_membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class ChannelAccess(models.Model):
    """Which teams may see a channel account's conversations, and whether they may reply."""

    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount", on_delete=models.CASCADE, related_name="access"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="channel_access")
    can_reply = models.BooleanField(default=True)

    class Meta:
        verbose_name_plural = "channel access"
        constraints = [
            models.UniqueConstraint(fields=["channel", "team"], name="channel_access_unique"),
        ]

    def __str__(self) -> str:
        verb = "replies on" if self.can_reply else "views"
        return f"{self.team} {verb} {self.channel}"


# --- Publishing policy and approvals ----------------------------------------------------


class PolicyAction(models.TextChoices):
    OFF = "off", "Allow"
    APPROVE = "approve", "Send for approval"
    BLOCK = "block", "Refuse"


class ApprovalRequirement(models.TextChoices):
    NONE = "none", "Nobody: replies go out directly"
    AGENTS = "agents", "Agents' replies (managers and admins send directly)"
    EVERYONE = "everyone", "Every reply, including automatic ones"


class PublishingPolicy(models.Model):
    """What may be sent on a channel, checked on every outbound message. The policy without a
    channel is the default for channels that have none of their own."""

    channel = models.OneToOneField(
        "channels_ingest.ChannelAccount",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="publishing_policy",
    )
    approval = models.CharField(
        max_length=10, choices=ApprovalRequirement.choices, default=ApprovalRequirement.NONE
    )
    approvers = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="+",
        help_text="Who approves; empty for the managers of the channel's teams and the admins",
    )
    second_level = models.BooleanField(
        "Second approval", default=False, help_text="A second, different approver is needed"
    )
    approval_expiry_hours = models.PositiveIntegerField(default=24)
    banned_terms = models.JSONField(default=list, blank=True)
    banned_patterns = models.JSONField(default=list, blank=True, help_text="Regular expressions")
    banned_action = models.CharField(
        max_length=10, choices=PolicyAction.choices, default=PolicyAction.BLOCK
    )
    pii_action = models.CharField(
        "Personal data (cards, ids, phone numbers, emails)",
        max_length=10,
        choices=PolicyAction.choices,
        default=PolicyAction.BLOCK,
    )
    links_action = models.CharField(
        max_length=10, choices=PolicyAction.choices, default=PolicyAction.OFF
    )
    # Local "HH:MM" start and end in the organisation's time zone; empty for none.
    quiet_hours_start = models.CharField(max_length=5, blank=True)
    quiet_hours_end = models.CharField(max_length=5, blank=True)
    quiet_hours_action = models.CharField(
        max_length=10, choices=PolicyAction.choices, default=PolicyAction.APPROVE
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "publishing policies"
        constraints = [
            # One default: channel ids are positive, so the default takes the place of 0.
            models.UniqueConstraint(Coalesce("channel", 0), name="publishing_policy_one_default"),
        ]

    def __str__(self) -> str:
        return f"Publishing policy of {self.channel}" if self.channel_id else "Default policy"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Waiting for approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"


class OutboundApproval(models.Model):
    """An outbound message held until an approver lets it out (or rejects it, or it expires)."""

    message = models.OneToOneField(
        "conversations.Message", on_delete=models.CASCADE, related_name="approval"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reasons = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    levels_required = models.PositiveSmallIntegerField(default=1)
    first_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    first_approved_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)
    original_body = models.TextField(blank=True, help_text="The text as written, if edited")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(
                fields=["expires_at"],
                name="approval_pending_idx",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"Approval of message #{self.message_id}"


# --- Audit log --------------------------------------------------------------------------


class _AppendOnly(models.QuerySet["AuditEntry"]):
    """Bulk changes are refused too, not only changes of one entry."""

    def update(self, **kwargs: object) -> int:
        raise PermissionError("Audit entries cannot be changed.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit entries cannot be deleted.")


class AuditEntry(models.Model):
    """One thing that happened, kept for good: the product never changes or deletes these
    (the database refuses it too, see the migration)."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=60)
    object_type = models.CharField(max_length=60, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    data = models.JSONField(default=dict, blank=True)

    objects = _AppendOnly.as_manager()

    class Meta:
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["action", "at"], name="audit_action_idx"),
            models.Index(fields=["object_type", "object_id"], name="audit_object_idx"),
            models.Index(fields=["actor", "at"], name="audit_actor_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.object_repr}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise PermissionError("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit entries cannot be deleted.")


# --- Retention and data-subject rights -------------------------------------------------


class RetentionAction(models.TextChoices):
    ANONYMISE = "anonymise", "Anonymise message texts and raw payloads"
    DELETE = "delete", "Delete messages (conversation facts are kept)"


class RetentionPolicy(models.Model):
    """How long message contents are kept on a channel; the policy without a channel is the
    default. Facts the KPIs need (times, counts, sentiment, outcomes) outlive it."""

    channel = models.OneToOneField(
        "channels_ingest.ChannelAccount",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="retention_policy",
    )
    keep_days = models.PositiveIntegerField(default=365)
    action = models.CharField(
        max_length=10, choices=RetentionAction.choices, default=RetentionAction.ANONYMISE
    )
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "retention policies"
        constraints = [
            # One default: channel ids are positive, so the default takes the place of 0.
            models.UniqueConstraint(Coalesce("channel", 0), name="retention_policy_one_default"),
        ]

    def __str__(self) -> str:
        return f"Retention of {self.channel}" if self.channel_id else "Default retention"


class RetentionRun(models.Model):
    """What one run of the retention task did, per channel."""

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    channel = models.ForeignKey(
        "channels_ingest.ChannelAccount", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=10, choices=RetentionAction.choices)
    cutoff = models.DateTimeField()
    messages = models.PositiveIntegerField(default=0)
    payloads = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"Retention run {self.started_at:%Y-%m-%d} on {self.channel}"


# --- Sign-in security -------------------------------------------------------------------


class SecuritySettings(models.Model):
    """Organisation-wide sign-in rules: one row. (Devices are django-otp's own tables.)"""

    SINGLETON_ID = 1

    require_two_factor_for_admins = models.BooleanField(
        "Require two-factor for admins",
        default=False,
        help_text="Admins without an authenticator are sent to set one up before anything else",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "security settings"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="security_settings_singleton"),
        ]

    def __str__(self) -> str:
        return "Security settings"


# --- API tokens -------------------------------------------------------------------------


class ApiToken(models.Model):
    """A personal key for scripts: acts as its user, with the same access. Only a hash is
    stored; the key itself is shown once, when it is made."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The start of the key, shown so a user can tell their keys apart.
    prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="api_token_user_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
