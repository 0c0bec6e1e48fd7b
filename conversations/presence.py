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
from django.db import transaction

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


# --- Who is online: auto-assignment only gives work to agents who are there ---------------

# The inbox and conversation pages poll every few seconds; two minutes of silence is away.
ONLINE_FOR = 120


# Whether some conversation may wait for an agent (``routing.queued_assign``): True while
# some do, False once a hand-out found the queue empty. While some wait, an agent coming online
# starts a hand-out at once rather than at the next beat, and a new conversation goes behind
# them. Only a hint: the beat looks at the queue whatever it says.
QUEUE_WAITING_KEY = "routing:queued-assignments"


def queue_may_wait() -> bool:
    """Whether some conversation may wait for an agent: the hint says so, or the hint is gone
    (a cache emptied by a restart or an eviction, or not yet set), and then only the queue can
    tell. Missing is not "none wait": taken so, new conversations would go ahead of those
    waiting until the beat's next run set the hint again."""
    return cache.get(QUEUE_WAITING_KEY) is not False


def _agent_key(user_id: int) -> str:
    return f"presence:agent:{user_id}"


def agent_seen(*, user_id: int) -> None:
    """Note the agent as online; one who was not gets the conversations waiting for an
    agent handed out at once, when some wait (else the beat's next run would)."""
    key = _agent_key(user_id)
    if not cache.add(key, time.time(), timeout=ONLINE_FOR):
        cache.set(key, time.time(), timeout=ONLINE_FOR)
    elif queue_may_wait():
        from conversations.tasks import assign_queued_conversations

        transaction.on_commit(assign_queued_conversations.delay)


def agent_away(*, user_id: int) -> None:
    cache.delete(_agent_key(user_id))


def agent_logged_out(sender: object, request: object, user: object, **kwargs: object) -> None:
    """Someone who logs out is away at once, not two minutes later: no more work for them."""
    user_id = getattr(user, "pk", None)
    if user_id is not None:
        agent_away(user_id=user_id)


def agents_online(*, user_ids: "set[int] | list[int]") -> set[int]:
    """The users among these seen in the last two minutes: one cache round trip."""
    if not user_ids:
        return set()
    keys = {_agent_key(uid): uid for uid in user_ids}
    now = time.time()
    return {
        keys[key] for key, seen in cache.get_many(list(keys)).items() if now - seen < ONLINE_FOR
    }
