"""Types shared by views, services and selectors."""

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

# Whoever is asking: selectors scope by it and answer nothing for the anonymous.
AnyUser = User | AnonymousUser


class AuthedRequest(HttpRequest):
    """A request past the login middleware, with htmx details."""

    user: User
    htmx: HtmxDetails


def user_id(user: AnyUser) -> int:
    """The user's id, or 0 (matching no row) for the anonymous."""
    return int(user.pk) if user.is_authenticated else 0
