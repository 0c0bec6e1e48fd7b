from django.contrib import admin

from channels_ingest.models import ChannelAccount, DeadLetter
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
    readonly_fields = ("last_polled_at", "poll_lease_until", "created_at", "updated_at")
    inlines = [ChannelAccessInline]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("pk", "channel", "source", "status", "created_at")
    list_filter = ("status", "source", "channel")
    search_fields = ("error", "raw")
    readonly_fields = ("raw", "error", "created_at")
