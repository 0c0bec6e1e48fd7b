from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from conversations.models import Conversation, ConversationEvent, Message, SlaEvent, Tag


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("created_at", "direction", "kind", "body", "delivery_status")
    readonly_fields = fields
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "contact",
        "channel",
        "status",
        "priority",
        "team",
        "assignee",
        "last_message_at",
    )
    list_filter = ("status", "priority", "channel", "team", "is_monitoring")
    search_fields = ("subject", "contact__name", "last_message_preview")
    raw_id_fields = ("contact", "assignee")
    date_hierarchy = "created_at"
    list_select_related = ("contact", "channel", "team", "assignee")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("pk", "conversation", "direction", "kind", "delivery_status", "created_at")
    list_filter = ("direction", "kind", "delivery_status", "channel")
    search_fields = ("body", "external_id")
    raw_id_fields = ("conversation", "author_identity", "author_user")
    date_hierarchy = "created_at"


@admin.register(ConversationEvent)
class ConversationEventAdmin(admin.ModelAdmin):
    list_display = ("pk", "conversation", "kind", "actor", "created_at")
    list_filter = ("kind",)
    raw_id_fields = ("conversation", "actor")
    date_hierarchy = "created_at"


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ("name", "color")
    search_fields = ("name",)


class BreachRulesFilter(admin.SimpleListFilter):
    """What became of the routing rules on a breach."""

    title = "rules on the breach"
    parameter_name = "rules"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("waiting", "Waiting for a retry"),
            ("given_up", "Given up on"),
            ("ran", "Ran"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[SlaEvent]) -> QuerySet[SlaEvent]:
        if self.value() == "waiting":
            return queryset.filter(rules_due_at__isnull=False)
        if self.value() == "given_up":
            return queryset.filter(rules_due_at__isnull=True).exclude(rules_error="")
        if self.value() == "ran":
            return queryset.filter(rules_attempts__gt=0, rules_error="")
        return queryset


@admin.register(SlaEvent)
class SlaEventAdmin(admin.ModelAdmin):
    """Warnings and breaches as fired, read only: what the beat did, and whether the rules on
    a breach ran, wait for a retry (and why), or were given up on."""

    list_display = ("conversation", "target", "kind", "due_at", "created_at", "rules")
    list_filter = ("kind", "target", BreachRulesFilter)
    date_hierarchy = "created_at"
    list_select_related = ("conversation",)

    @admin.display(description="rules on the breach")
    def rules(self, event: SlaEvent) -> str:
        tries = f"{event.rules_attempts} tr{'y' if event.rules_attempts == 1 else 'ies'}"
        if event.rules_due_at is not None:
            retry_at = timezone.localtime(event.rules_due_at)
            return f"retry at {retry_at:%Y-%m-%d %H:%M} ({tries}): {event.rules_error}"
        if event.rules_error:
            return f"given up ({tries}): {event.rules_error}"
        return "ran" if event.rules_attempts else ""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
