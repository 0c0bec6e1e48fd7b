from django.http import HttpRequest

from conversations.selectors import notifications_for


def unread_notifications(request: HttpRequest) -> dict[str, object]:
    """The count shown beside Mentions in the navigation; one query, only when logged in."""
    if not request.user.is_authenticated:
        return {}
    return {
        "unread_notifications": notifications_for(user=request.user)
        .filter(read_at__isnull=True)
        .count()
    }
