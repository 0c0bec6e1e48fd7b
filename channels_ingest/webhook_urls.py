from django.urls import path

from channels_ingest import webhook_views

app_name = "webhooks"

urlpatterns = [
    path("x/<int:channel_id>/", webhook_views.x_webhook, name="x"),
    path("facebook/<int:channel_id>/", webhook_views.facebook_webhook, name="facebook"),
]
