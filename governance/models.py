from django.conf import settings
from django.db import models


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
