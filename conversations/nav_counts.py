"""Counts shown on every page (unread mentions beside "Mentions", approvals waiting beside
"Approvals"), kept per user for ``SCRM_INBOX_COUNTS_SECONDS`` as the inbox's view counts are.
The unread count is dropped as soon as it changes (a notification created for the user or
marked read); both are dropped after any write of the user's own, and neither is reused once
what the user may see changes."""

from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.cache import cache

UNREAD, APPROVALS = "unread-notifications", "approvals-waiting"


def count_key(name: str, user_id: int) -> str:
    return f"{name}:{user_id}"


def counted(*, name: str, user_id: int, scope: str, count: Callable[[], int]) -> int:
    """``count()``, or what it gave within ``SCRM_INBOX_COUNTS_SECONDS`` for the same user and
    ``scope`` (what the user may see: a count made before they lost or gained a channel is
    not reused)."""
    seconds = settings.SCRM_INBOX_COUNTS_SECONDS
    if seconds <= 0:
        return count()
    key = count_key(name, user_id)
    found = cache.get(key)
    if isinstance(found, tuple) and found[0] == scope:
        return int(found[1])
    value = count()
    cache.set(key, (scope, value), seconds)
    return value


def unread_forget(user_ids: Iterable[int | None]) -> None:
    keys = [count_key(UNREAD, pk) for pk in set(user_ids) if pk is not None]
    if keys:
        cache.delete_many(keys)


def forget_all(user_id: int) -> list[str]:
    """The keys of every count kept for the user (for ``cache.delete_many``)."""
    return [count_key(UNREAD, user_id), count_key(APPROVALS, user_id)]
