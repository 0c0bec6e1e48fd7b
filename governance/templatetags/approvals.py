"""The approvals count beside "Approvals" in the navigation."""

from typing import Any

from django import template

from conversations.nav_counts import APPROVALS, counted
from governance.access import access_of
from governance.approvals import approvals_pending_for, is_approver

register = template.Library()


@register.simple_tag(takes_context=True)
def approvals_waiting(context: dict[str, Any]) -> int | None:
    """How many messages wait for this user's decision; None for those who approve nothing
    (no link). Kept as the inbox's counts are (see ``conversations.nav_counts``)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not is_approver(user):
        return None
    return counted(
        name=APPROVALS,
        user_id=user.pk,
        scope=access_of(user).scope,
        count=lambda: approvals_pending_for(user=user).count(),
    )
