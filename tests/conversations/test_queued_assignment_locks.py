"""On PostgreSQL the beat and the ingest of a queued conversation do not deadlock.

Were ``_queued_assign_page`` to lock ``FOR UPDATE OF queuedassignment, conversation SKIP LOCKED``,
PostgreSQL would lock the queue row first; when the conversation row is then found locked (the
ingest holds it), the joined row is skipped but the queue row's lock is kept until the page's
transaction ends. The beat then waits for the team's memberships (``auto_assign``); the ingest,
holding those, queues the conversation again (``_queue``: INSERT ... ON CONFLICT DO UPDATE on
that very queue row) and waits for the beat: a deadlock, one of the two is aborted. The
beat therefore locks only the conversations."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection

from channels_ingest.pipeline import ingest
from conversations import presence, routing
from conversations.models import Conversation, QueuedAssignment
from tests.conversations.test_queued_assignment import T0, _auto_rule, _team
from tests.factories import UserFactory, post


@pytest.mark.django_db(transaction=True)
def test_the_beat_and_the_ingest_of_a_queued_conversation_do_not_deadlock(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL only")
    ann = UserFactory(role="agent")
    _, channel = _team(ann)
    _auto_rule()
    # Ann is away: two conversations of her team wait.
    ingest(channel=channel, posts=[post("c1", author="a1", at=T0)])
    ingest(channel=channel, posts=[post("d1", author="a2", at=T0 + timedelta(minutes=1))])
    assert QueuedAssignment.objects.count() == 2

    ingest_holds_memberships = threading.Event()
    ingest_may_go_on = threading.Event()
    real_online = presence.agents_online

    def online(*, user_ids):
        # Called by auto_assign just after it locked the team's memberships.
        if threading.current_thread().name == "ingest":
            ingest_holds_memberships.set()
            ingest_may_go_on.wait(10)
        return real_online(user_ids=user_ids)

    monkeypatch.setattr(presence, "agents_online", online)
    errors: dict[str, BaseException] = {}

    def run(name, work):
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors[name] = exc
        finally:
            connection.close()

    # The customer of c1 writes again: the ingest locks c1, then the memberships.
    ingest_thread = threading.Thread(
        name="ingest",
        target=run,
        args=(
            "ingest",
            lambda: ingest(
                channel=channel,
                posts=[post("c2", author="a1", reply_to="c1", at=T0 + timedelta(minutes=2))],
            ),
        ),
    )
    ingest_thread.start()
    assert ingest_holds_memberships.wait(10)
    # The beat: locks c1's queue row (skipping c1 itself), d1's rows, then waits for the
    # memberships.
    beat_thread = threading.Thread(
        name="beat", target=run, args=("beat", lambda: routing.queued_assign())
    )
    beat_thread.start()
    time.sleep(1.0)
    ingest_may_go_on.set()  # Ann is still away: the ingest queues c1 again
    ingest_thread.join(30)
    beat_thread.join(30)
    assert not ingest_thread.is_alive() and not beat_thread.is_alive()
    assert errors == {}, f"deadlock: {errors!r}"
    assert Conversation.objects.filter(messages__external_id="c2").exists()
