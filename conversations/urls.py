from django.urls import path

from conversations import views

app_name = "conversations"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("<int:pk>/", views.conversation_detail, name="detail"),
    path("<int:pk>/reply/", views.conversation_reply, name="reply"),
    path("<int:pk>/note/", views.conversation_note, name="note"),
    path("<int:pk>/claim/", views.conversation_claim, name="claim"),
    path("<int:pk>/status/", views.conversation_status, name="status"),
]
