from django.contrib import admin
from django.db import models

from contacts.models import Contact, ContactImport, MergeSuggestion, SocialIdentity


class SocialIdentityInline(admin.TabularInline):
    model = SocialIdentity
    extra = 0
    fields = (
        "platform",
        "platform_user_id",
        "handle",
        "display_name",
        "followers_count",
        "verified",
    )


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "email",
        "company",
        "is_vip",
        "source",
        "first_seen_at",
        "last_seen_at",
    )
    list_filter = ("is_vip", "source")
    raw_id_fields = ("created_by",)
    search_fields = ("name", "email", "phone", "company", "identities__handle", "external_crm_id")
    date_hierarchy = "first_seen_at"
    inlines = [SocialIdentityInline]
    # A link typed without its scheme is taken as https, as the contact form takes it.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(SocialIdentity)
class SocialIdentityAdmin(admin.ModelAdmin):
    list_display = ("handle", "platform", "display_name", "contact", "followers_count", "verified")
    list_filter = ("platform", "verified")
    search_fields = ("handle", "display_name", "platform_user_id")
    raw_id_fields = ("contact",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(MergeSuggestion)
class MergeSuggestionAdmin(admin.ModelAdmin):
    list_display = ("contact", "other", "reason", "status", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("contact", "other")


@admin.register(ContactImport)
class ContactImportAdmin(admin.ModelAdmin):
    list_display = ("file_name", "status", "created_by", "created_at", "finished_at")
    list_filter = ("status",)
    readonly_fields = ("created_at", "updated_at", "finished_at")
    exclude = ("content",)
