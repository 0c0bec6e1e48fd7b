from django.http import HttpRequest

from conversations.nav_counts import UNREAD, counted
from conversations.selectors import notifications_for
from governance.access import access_of


def unread_notifications(request: HttpRequest) -> dict[str, object]:
    """The count shown beside Mentions in the navigation, when logged in (see ``nav_counts``)."""
    if not request.user.is_authenticated:
        return {}
    user = request.user
    return {
        "unread_notifications": counted(
            name=UNREAD,
            user_id=user.pk,
            scope=access_of(user).scope,
            count=lambda: notifications_for(user=user).filter(read_at__isnull=True).count(),
        )
    }
