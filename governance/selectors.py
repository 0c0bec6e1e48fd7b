"""Reads that decide what a user may see. Every page and endpoint scopes through here."""

from typing import Any

from django.db.models import QuerySet

from channels_ingest.models import ChannelAccount
from governance.access import access_of
from governance.models import ChannelAccess
from governance.roles import is_admin
from scrm.types import AnyUser, user_id


def visible_channel_ids(*, user: AnyUser) -> QuerySet[ChannelAccess, Any] | None:
    """A subquery of channel ids the user's teams may see, or None when they see every channel.

    Returned lazily so callers embed it in their own query: scoping costs no extra round trip.
    """
    if is_admin(user):
        return None
    return ChannelAccess.objects.filter(team__memberships__user_id=user_id(user)).values(
        "channel_id"
    )


def channels_visible_to(*, user: AnyUser) -> QuerySet[ChannelAccount]:
    channels = ChannelAccount.objects.all()
    if not user.is_authenticated:
        return channels.none()
    ids = seen_channel_ids(user=user)
    return channels if ids is None else channels.filter(id__in=ids)


def replyable_channel_ids(*, user: AnyUser) -> frozenset[int] | None:
    """Channels the user's teams may reply on; None when every channel."""
    return access_of(user).replyable_channel_ids


def seen_channel_ids(*, user: AnyUser) -> list[int] | None:
    """The channels the user's teams may see, as a list (read with the user's access, once per
    request); None when every channel. For filters of the user's own pages."""
    ids = access_of(user).visible_channel_ids
    return None if ids is None else sorted(ids)
