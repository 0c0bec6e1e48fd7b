from django.contrib import admin

from governance.audit import AuditEntryAdmin
from governance.models import AuditEntry, ChannelAccess, Team, TeamMembership

# Read-only for everyone. Every admin of the site records its changes: see
# governance.audit.audit_every_admin, applied when the app is ready.
admin.site.register(AuditEntry, AuditEntryAdmin)


class TeamMembershipInline(admin.TabularInline):
    model = TeamMembership
    extra = 0
    raw_id_fields = ("user",)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name",)
    prepopulated_fields = {"slug": ("name",)}
    inlines = [TeamMembershipInline]


@admin.register(TeamMembership)
class TeamMembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "team", "created_at")
    list_filter = ("team",)
    search_fields = ("user__username", "team__name")


@admin.register(ChannelAccess)
class ChannelAccessAdmin(admin.ModelAdmin):
    list_display = ("channel", "team", "can_reply")
    list_filter = ("can_reply", "team", "channel")
