from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from channels_ingest.platforms import Platform


class Contact(models.Model):
    """A customer, however many social accounts they reach us from."""

    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=50, blank=True)
    company = models.CharField(max_length=200, blank=True)
    is_vip = models.BooleanField("VIP", default=False)
    attributes = models.JSONField(default=dict, blank=True)
    external_crm_id = models.CharField("external CRM id", max_length=100, blank=True)
    external_crm_url = models.URLField("external CRM link", blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(Lower("email"), name="contact_email_lower_idx"),
            models.Index(fields=["phone"], name="contact_phone_idx"),
            models.Index(fields=["first_seen_at"], name="contact_first_seen_idx"),
            models.Index(fields=["-last_seen_at", "-id"], name="contact_last_seen_idx"),
        ]

    def __str__(self) -> str:
        return self.name or f"Contact #{self.pk}"


class SocialIdentity(models.Model):
    """One account on one platform; many may belong to the same contact."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="identities")
    platform = models.CharField(max_length=20, choices=Platform.choices)
    platform_user_id = models.CharField(max_length=100)
    handle = models.CharField(max_length=100, blank=True)
    display_name = models.CharField(max_length=200, blank=True)
    profile_url = models.URLField(max_length=500, blank=True)
    followers_count = models.PositiveIntegerField(null=True, blank=True)
    verified = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "social identities"
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "platform_user_id"], name="identity_platform_user_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["platform", "handle"], name="identity_handle_idx"),
            # Merge suggestions look handles up across platforms, ignoring case.
            models.Index(Lower("handle"), name="identity_handle_lower_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_platform_display()} @{self.handle or self.platform_user_id}"


class MergeSuggestionStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACCEPTED = "accepted", "Merged"
    DISMISSED = "dismissed", "Dismissed"


class MergeSuggestion(models.Model):
    """Two contacts that look like one customer; an agent decides, nothing merges silently.
    The pair is stored lower id first so each pair is suggested once."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    other = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=200)
    status = models.CharField(
        max_length=10, choices=MergeSuggestionStatus.choices, default=MergeSuggestionStatus.OPEN
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contact", "other"], name="merge_suggestion_pair"),
            models.CheckConstraint(
                condition=models.Q(contact__lt=models.F("other")), name="merge_suggestion_ordered"
            ),
        ]
        indexes = [models.Index(fields=["other"], name="merge_suggestion_other_idx")]

    def __str__(self) -> str:
        return f"{self.contact_id} ~ {self.other_id}: {self.reason}"
