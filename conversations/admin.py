from django.contrib import admin

from conversations.models import Conversation, ConversationEvent, Message, Tag


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
