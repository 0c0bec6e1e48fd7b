"""The social platforms the product knows, and the limits each imposes on what we send."""

from django.db import models


class Platform(models.TextChoices):
    X = "x", "X"
    FACEBOOK = "facebook", "Facebook"
    DEMO = "demo", "Demo"
    # Messages posted to our inbound API by the company's own systems (a community site, a
    # blog, an in-app feedback form).
    API = "api", "Inbound API"


# Longest reply each platform accepts, in characters.
REPLY_MAX_LENGTH: dict[str, int] = {
    Platform.X: 280,
    Platform.FACEBOOK: 8000,
    Platform.DEMO: 280,
    Platform.API: 8000,
}
