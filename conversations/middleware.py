from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from conversations.selectors import inbox_counts_forget

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class InboxCountsMiddleware:
    """A user who has just changed something (claimed, resolved, escalated, ...) sees inbox
    counts that include the change: their cached counts are dropped after each write."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # The user as the view knew it: the API authenticates its tokens in the view.
        user = getattr(request, "user", None)
        if request.method in _WRITES and user is not None and user.is_authenticated:
            inbox_counts_forget(user_id=user.pk)
        return response
