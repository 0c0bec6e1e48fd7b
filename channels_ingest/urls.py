from django.urls import path

from channels_ingest import views

app_name = "channels"

urlpatterns = [
    path("", views.channel_list, name="list"),
    path("new/", views.channel_edit, name="new"),
    path("<int:pk>/", views.channel_edit, name="edit"),
    path("dead-letters/", views.dead_letter_list, name="dead_letters"),
    path(
        "dead-letters/<int:pk>/<str:action>/", views.dead_letter_action, name="dead_letter_action"
    ),
]
