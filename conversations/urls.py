from django.urls import path

from conversations import views

app_name = "conversations"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("updates/", views.inbox_updates, name="updates"),
    path("bulk/", views.inbox_bulk, name="bulk"),
    path("mentions/", views.notifications, name="notifications"),
    path("mentions/<int:pk>/", views.notification_open, name="notification_open"),
    path("<int:pk>/", views.conversation_detail, name="detail"),
    path("<int:pk>/reply/", views.conversation_reply, name="reply"),
    path("<int:pk>/note/", views.conversation_note, name="note"),
    path("<int:pk>/claim/", views.conversation_claim, name="claim"),
    path("<int:pk>/status/", views.conversation_status, name="status"),
    path("<int:pk>/assign/", views.conversation_assign, name="assign"),
    path("<int:pk>/priority/", views.conversation_priority, name="priority"),
    path("<int:pk>/tag/", views.conversation_tag, name="tag"),
    path("<int:pk>/snooze/", views.conversation_snooze, name="snooze"),
    path("<int:pk>/presence/", views.conversation_presence, name="presence"),
    path("<int:pk>/canned/<int:canned_id>/", views.canned_text, name="canned"),
    path(
        "<int:pk>/messages/<int:message_id>/retry/",
        views.message_retry_view,
        name="message_retry",
    ),
]
