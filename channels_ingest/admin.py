from django.contrib import admin

from channels_ingest.models import ChannelAccount, DeadLetter, KeywordList, WebhookDelivery
from governance.models import ChannelAccess


class ChannelAccessInline(admin.TabularInline):
    model = ChannelAccess
    extra = 0


@admin.register(ChannelAccount)
class ChannelAccountAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "platform",
        "mode",
        "is_active",
        "health",
        "last_polled_at",
        "default_team",
    )
    list_filter = ("platform", "mode", "health", "is_active")
    search_fields = ("name", "handle", "external_account_id")
    # Credentials are write-only in the admin: never rendered back.
    exclude = ("credentials",)
    readonly_fields = (
        "health",
        "last_error",
        "rate_limited_until",
        "last_polled_at",
        "poll_lease_until",
        "cursor",
        "created_at",
        "updated_at",
    )
    inlines = [ChannelAccessInline]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("pk", "channel", "source", "status", "created_at")
    list_filter = ("status", "source", "channel")
    search_fields = ("error", "raw")
    readonly_fields = ("raw", "context", "error", "created_at")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("pk", "channel", "status", "posts", "received_at", "processed_at")
    list_filter = ("status", "channel")
    readonly_fields = ("channel", "body", "received_at", "processed_at", "posts", "error")


@admin.register(KeywordList)
class KeywordListAdmin(admin.ModelAdmin):
    list_display = ("name", "tag", "is_active")
    list_filter = ("is_active",)
    search_fields = ("name",)
