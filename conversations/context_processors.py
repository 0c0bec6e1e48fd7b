from django.http import HttpRequest

from conversations.models import Notification
from conversations.selectors import conversations_visible_to


def unread_notifications(request: HttpRequest) -> dict[str, object]:
    """The count shown beside Mentions in the navigation; one query, only when logged in."""
    if not request.user.is_authenticated:
        return {}
    return {
        "unread_notifications": Notification.objects.filter(
            recipient_id=request.user.pk,
            read_at__isnull=True,
            conversation__in=conversations_visible_to(user=request.user),
        ).count()
    }
