"""Who else has a conversation open, and who is typing in it: collision detection.

Kept in the cache (Redis in production, shared by every web process), as a small map per
conversation of user id -> name, typing flag and when they were last seen. Entries older
than a few polls are ignored, so someone who closed the page disappears on their own. Two
reports at the same instant may drop one of them until its next report, 5 seconds later;
for a hint to colleagues that is good enough, and it needs no lock.
"""

import time
from dataclasses import dataclass

from django.core.cache import cache

# The page reports every 5 seconds; someone silent for longer than this has left.
STALE_AFTER = 15.0


@dataclass(frozen=True)
class Presence:
    user_id: int
    name: str
    typing: bool


def _key(conversation_id: int) -> str:
    return f"presence:conversation:{conversation_id}"


def presence_report(
    *, conversation_id: int, user_id: int, name: str, typing: bool
) -> list[Presence]:
    """Record that the user has the conversation open, and return the others who do."""
    now = time.time()
    seen: dict[int, tuple[str, bool, float]] = cache.get(_key(conversation_id)) or {}
    seen = {uid: entry for uid, entry in seen.items() if now - entry[2] < STALE_AFTER}
    seen[user_id] = (name, typing, now)
    cache.set(_key(conversation_id), seen, timeout=int(STALE_AFTER * 4))
    return [
        Presence(user_id=uid, name=entry[0], typing=entry[1])
        for uid, entry in sorted(seen.items())
        if uid != user_id
    ]
