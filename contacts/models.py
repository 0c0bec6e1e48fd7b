from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from channels_ingest.platforms import Platform


class ContactSource(models.TextChoices):
    SOCIAL = "social", "Social channel"
    MANUAL = "manual", "Added by hand"
    IMPORT = "import", "CSV import"


# Contacts that did not arrive through a channel belong to no team: everyone may see them.
SHARED_CONTACT_SOURCES = (ContactSource.MANUAL, ContactSource.IMPORT)


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
    # A database default too, so raw bulk inserts by the ingest pipeline stay "social".
    source = models.CharField(
        max_length=10,
        choices=ContactSource.choices,
        default=ContactSource.SOCIAL,
        db_default=ContactSource.SOCIAL,
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Set when this contact was merged into another: it is hidden, and its page leads there.
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(Lower("email"), name="contact_email_lower_idx"),
            models.Index(fields=["external_crm_id"], name="contact_crm_id_idx"),
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


class ContactImportStatus(models.TextChoices):
    PENDING = "pending", "Waiting"
    RUNNING = "running", "Importing"
    DONE = "done", "Finished"
    FAILED = "failed", "Failed"


class ContactImport(models.Model):
    """One uploaded CSV file of contacts and how far its import got.

    The file's text is kept in the row so whichever worker picks the job up can read it; it
    is dropped once the import ends. ``errors`` holds ``{"row", "column", "message"}`` items
    (a row may have several); ``skipped_count`` counts the rows they kept out.
    """

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    file_name = models.CharField(max_length=255)
    content = models.TextField(blank=True)
    delimiter = models.CharField(max_length=1, default=",")
    ignored_columns = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=10, choices=ContactImportStatus.choices, default=ContactImportStatus.PENDING
    )
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    failure = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["-created_at"], name="contact_import_recent_idx")]

    # The report keeps this many problems; the counts stay exact beyond it.
    MAX_ERRORS = 1000

    def __str__(self) -> str:
        return f"{self.file_name} ({self.get_status_display()})"

    @property
    def errors_truncated(self) -> bool:
        return len(self.errors) >= self.MAX_ERRORS

    @property
    def is_finished(self) -> bool:
        return self.status in (ContactImportStatus.DONE, ContactImportStatus.FAILED)

    @property
    def percent(self) -> int:
        if not self.total_rows:
            return 100 if self.is_finished else 0
        return min(100, self.processed_rows * 100 // self.total_rows)


class ContactMerge(models.Model):
    """A merge of one contact into another, with what it moved and changed, so that it can be
    undone exactly and shows who merged what when."""

    kept = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="merges_in")
    merged = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="merges_out")
    identity_ids = models.JSONField(default=list)
    conversation_ids = models.JSONField(default=list)
    # Fields of the kept contact the merge filled in, with the values they had before.
    previous_values = models.JSONField(default=dict)
    merged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.merged_id} into {self.kept_id}"


class IdentityMove(models.Model):
    """An agent moved a social identity (and the conversations only it took part in) to
    another contact: recorded for the customer's history and the audit."""

    identity = models.ForeignKey(SocialIdentity, on_delete=models.CASCADE, related_name="moves")
    from_contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    to_contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    conversation_ids = models.JSONField(default=list)
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.identity} from {self.from_contact_id} to {self.to_contact_id}"
