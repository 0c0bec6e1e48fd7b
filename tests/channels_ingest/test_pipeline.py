import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from channels_ingest.connectors import connector_for
from channels_ingest.models import ChannelMode, DeadLetter, DeadLetterStatus
from channels_ingest.pipeline import ingest
from channels_ingest.services import dead_letter_retry
from channels_ingest.types import (
    InboundAuthor,
    InboundPost,
    RejectedPayload,
    post_as_json,
    post_from_json,
)
from contacts.models import Contact, SocialIdentity
from conversations.models import (
    Conversation,
    ConversationEvent,
    EventKind,
    Message,
    Status,
)
from conversations.services import inbound_posts_store
from tests.factories import ChannelFactory, ContactFactory, post

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_demo_connector_posts_flow_through_the_pipeline_into_conversations():
    channel = ChannelFactory(settings={"flavour": "x", "population": 30})
    connector = connector_for(channel.platform)
    stored = 0
    for _ in range(15):
        fetched = connector.fetch(channel, channel.cursor)
        stored += ingest(channel=channel, posts=fetched.posts, cursor=fetched.cursor).stored
    channel.refresh_from_db()
    assert stored > 0
    assert Message.objects.filter(channel=channel).count() == stored
    assert channel.cursor["seq"] == stored
    assert Conversation.objects.filter(channel=channel).exists()
    assert all(m.author_identity_id for m in Message.objects.filter(channel=channel))


def test_a_retried_demo_poll_yields_the_same_posts_and_stores_nothing_new():
    channel = ChannelFactory()
    connector = connector_for(channel.platform)
    cursor = {"seq": 40}
    first = connector.fetch(channel, cursor)
    second = connector.fetch(channel, cursor)
    assert [p.external_id for p in first.posts] == [p.external_id for p in second.posts]
    ingest(channel=channel, posts=first.posts)
    again = ingest(channel=channel, posts=second.posts)
    assert again.stored == 0
    assert again.duplicates == len(second.posts)


def test_the_same_post_ingested_twice_is_stored_once():
    channel = ChannelFactory()
    batch = [post("1"), post("2", author="u2")]
    assert ingest(channel=channel, posts=batch).stored == 2
    result = ingest(channel=channel, posts=[*batch, post("1")])
    assert (result.stored, result.duplicates) == (0, 3)
    assert Message.objects.count() == 2
    assert Conversation.objects.count() == 2


def test_a_post_repeated_within_one_batch_is_stored_once():
    channel = ChannelFactory()
    result = ingest(channel=channel, posts=[post("1"), post("1"), post("1")])
    assert result.stored == 1
    assert Message.objects.count() == 1


def test_the_same_external_id_on_two_channels_is_two_messages():
    a, b = ChannelFactory(), ChannelFactory()
    ingest(channel=a, posts=[post("1")])
    ingest(channel=b, posts=[post("1")])
    assert Message.objects.count() == 2


# --- Identity resolution ----------------------------------------------------------------


def test_a_new_author_gets_an_identity_and_a_contact():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1", author="u9", handle="dana", followers=1200, at=at(3))])
    identity = SocialIdentity.objects.get(platform_user_id="u9")
    assert identity.handle == "dana"
    assert identity.followers_count == 1200
    assert identity.contact.name == "Name u9"
    assert identity.contact.first_seen_at == at(3)


def test_a_known_author_keeps_their_contact_and_profile_changes_are_stored():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1", author="u1", handle="old", followers=10)])
    contact_id = SocialIdentity.objects.get().contact_id
    ingest(channel=channel, posts=[post("2", author="u1", handle="new", followers=99, at=at(5))])
    identity = SocialIdentity.objects.get()
    assert identity.contact_id == contact_id
    assert (identity.handle, identity.followers_count) == ("new", 99)
    assert Contact.objects.count() == 1
    assert Contact.objects.get().last_seen_at == at(5)


def test_last_seen_never_moves_backwards_when_an_older_post_arrives_late():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("2", at=at(60))])
    ingest(channel=channel, posts=[post("1", at=at(1))])
    assert Contact.objects.get().last_seen_at == at(60)


def test_a_new_identity_joins_the_contact_with_the_same_email():
    channel = ChannelFactory()
    existing = ContactFactory(email="dana@example.com")
    ingest(channel=channel, posts=[post("1", author="u5", email="Dana@Example.com ")])
    assert SocialIdentity.objects.get(platform_user_id="u5").contact_id == existing.pk
    assert Contact.objects.count() == 1


def test_two_authors_in_one_batch_get_two_contacts():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1", author="a"), post("2", author="b")])
    assert Contact.objects.count() == 2


# --- Threading --------------------------------------------------------------------------


def test_a_reply_joins_the_conversation_of_the_post_it_answers():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("root", author="a")])
    ingest(channel=channel, posts=[post("r1", author="b", kind="reply", reply_to="root", at=at(1))])
    assert Conversation.objects.count() == 1
    assert Conversation.objects.get().message_count == 2


def test_a_reply_to_a_post_in_the_same_batch_joins_its_conversation():
    channel = ChannelFactory()
    ingest(
        channel=channel,
        posts=[
            post("r1", author="b", kind="reply", reply_to="root", at=at(1)),
            post("root", author="a", at=at(0)),
        ],
    )
    assert Conversation.objects.count() == 1


def test_a_reply_reopens_a_resolved_conversation_and_records_it():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("root")])
    Conversation.objects.update(status=Status.RESOLVED, resolved_at=at(2))
    ingest(channel=channel, posts=[post("r1", kind="reply", reply_to="root", at=at(10))])
    conversation = Conversation.objects.get()
    assert conversation.status == Status.OPEN
    assert conversation.resolved_at is None
    assert conversation.events.filter(kind=EventKind.REOPENED).count() == 1


def test_a_reply_to_a_closed_conversation_starts_a_new_one():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("root")])
    Conversation.objects.update(status=Status.CLOSED)
    ingest(channel=channel, posts=[post("r1", kind="reply", reply_to="root", at=at(10))])
    assert Conversation.objects.count() == 2


def test_direct_messages_join_the_open_conversation_of_their_thread():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("d1", kind="dm", thread="dm-1")])
    ingest(channel=channel, posts=[post("d2", kind="dm", thread="dm-1", at=at(1))])
    conversation = Conversation.objects.get()
    assert conversation.thread_key == "dm:dm-1"
    assert conversation.message_count == 2


def test_a_direct_message_does_not_join_the_contacts_public_conversation():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("p1")])
    ingest(channel=channel, posts=[post("d1", kind="dm", thread="dm-1", at=at(1))])
    assert Conversation.objects.count() == 2


def test_customers_answering_the_brands_own_post_each_get_a_conversation_of_their_own():
    # The brand's post ("brand-1") is not stored: every answer to it shares its thread.
    channel = ChannelFactory()
    answers = [
        post(f"c{n}", author=a, kind="reply", reply_to="brand-1", thread="brand-1", at=at(n))
        for n, a in enumerate(["a", "b", "a", "c", "b"])
    ]
    ingest(channel=channel, posts=answers[:2])
    ingest(channel=channel, posts=answers[2:])
    conversations = Conversation.objects.order_by("pk")
    assert [c.contact.name for c in conversations] == ["Name a", "Name b", "Name c"]
    assert [c.message_count for c in conversations] == [2, 2, 1]
    for conversation in conversations:
        authors = {m.author_identity.contact_id for m in conversation.messages.all()}
        assert authors == {conversation.contact_id}


def test_a_customers_later_answer_in_a_shared_thread_joins_their_own_conversation():
    # Someone else's conversation in the thread is newer; the customer's own is still theirs.
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("a1", author="a", kind="reply", thread="t", reply_to="x")])
    ingest(
        channel=channel,
        posts=[post("b1", author="b", kind="reply", thread="t", reply_to="x", at=at(5))],
    )
    ingest(
        channel=channel,
        posts=[post("a2", author="a", kind="reply", thread="t", reply_to="y", at=at(9))],
    )
    own = Message.objects.get(external_id="a2").conversation
    assert own == Message.objects.get(external_id="a1").conversation
    assert own != Message.objects.get(external_id="b1").conversation


def test_an_answer_to_another_customers_stored_post_joins_that_conversation():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("a1", author="a", thread="t")])
    ingest(
        channel=channel,
        posts=[post("b1", author="b", kind="reply", thread="t", reply_to="a1", at=at(5))],
    )
    assert Conversation.objects.count() == 1


def test_a_new_post_by_a_contact_with_an_open_conversation_joins_it():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1")])
    ingest(channel=channel, posts=[post("2", at=at(30))])
    assert Conversation.objects.count() == 1


def test_a_new_post_after_resolution_starts_a_new_conversation():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1")])
    Conversation.objects.update(status=Status.RESOLVED)
    ingest(channel=channel, posts=[post("2", at=at(30))])
    assert Conversation.objects.count() == 2


def test_conversation_rollups_follow_the_messages():
    channel = ChannelFactory()
    ingest(
        channel=channel,
        posts=[
            post("1", body="I love this, thank you!", at=at(0)),
            post("2", body="Actually it is broken and awful.", at=at(5)),
        ],
    )
    conversation = Conversation.objects.get()
    sentiments = list(Message.objects.order_by("created_at").values_list("sentiment", flat=True))
    assert sentiments[0] > 0.05 and sentiments[1] < -0.05
    assert conversation.sentiment == pytest.approx(sum(sentiments) / 2)
    assert conversation.last_message_at == at(5)
    assert conversation.waiting_since == at(0)
    assert conversation.last_message_preview == "Actually it is broken and awful."
    assert conversation.subject == "I love this, thank you!"
    assert list(conversation.events.values_list("kind", flat=True)) == [EventKind.CREATED]
    assert conversation.inbound_count == 2


def test_new_conversations_go_to_the_channels_default_team(world):
    ingest(channel=world.channel_a, posts=[post("new-1", author="zz")])
    assert Conversation.objects.get(messages__external_id="new-1").team == world.team_a


def test_posts_on_a_listen_only_channel_are_kept_for_monitoring():
    channel = ChannelFactory(mode=ChannelMode.LISTEN)
    ingest(channel=channel, posts=[post("1")])
    assert Conversation.objects.get().is_monitoring


# --- Batches, cursor and dead letters ---------------------------------------------------


def _batch(size: int, offset: int) -> list:
    posts = []
    for n in range(size):
        number = offset + n
        if n % 3 == 2:
            posts.append(
                post(
                    f"p{number}",
                    author=f"a{number % 7}",
                    kind="reply",
                    reply_to=f"p{number - 1}",
                    at=at(number),
                )
            )
        elif n % 5 == 4:
            posts.append(
                post(
                    f"p{number}",
                    author=f"a{number}",
                    kind="dm",
                    thread=f"t{number % 4}",
                    at=at(number),
                )
            )
        else:
            posts.append(post(f"p{number}", author=f"a{number % 11}", at=at(number)))
    return posts


def _statement_kinds(captured) -> set[str]:
    """Statements without their values; an executemany is logged once as "N times: SQL"."""
    return {
        re.sub(r"^\d+ times: ", "", q["sql"]).split("(")[0].split(" WHERE ")[0].split('"s')[0][:60]
        for q in captured.captured_queries
    }


def test_a_batch_costs_the_same_number_of_queries_whatever_its_size():
    channel = ChannelFactory()
    ingest(channel=channel, posts=_batch(20, 0))  # some known contacts and open conversations
    with CaptureQueriesContext(connection) as small:
        ingest(channel=channel, posts=[*_batch(10, 1000), post("solo", author="newcomer")])
    with CaptureQueriesContext(connection) as large:
        ingest(channel=channel, posts=[*_batch(400, 2000), post("solo2", author="newcomer2")])
    assert _statement_kinds(large) == _statement_kinds(small)
    if connection.vendor == "postgresql":
        assert len(large.captured_queries) == len(small.captured_queries)
    else:
        # SQLite caps bound parameters per statement, so bulk inserts go in a few chunks.
        assert len(large.captured_queries) <= len(small.captured_queries) + 12
    assert len(large.captured_queries) < 30


def test_follow_ups_changing_different_columns_share_statements_and_keep_their_values():
    from conversations.models import Priority, RoutingRule
    from tests.factories import TeamFactory

    team = TeamFactory()
    RoutingRule.objects.create(
        name="Refunds",
        events=["message_received"],
        conditions=[{"field": "text", "op": "contains_any", "value": ["refund"]}],
        actions=[{"type": "set_priority", "value": Priority.URGENT}],
        position=0,
    )
    RoutingRule.objects.create(
        name="Breakage",
        events=["message_received"],
        conditions=[{"field": "text", "op": "contains_any", "value": ["broken"]}],
        actions=[{"type": "set_team", "value": team.pk}],
        position=1,
    )
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post(f"root{n}", author=f"a{n}", at=at(n)) for n in range(6)])
    Conversation.objects.filter(messages__external_id="root1").update(
        status=Status.RESOLVED, resolved_at=at(7)
    )
    with CaptureQueriesContext(connection) as captured:
        ingest(
            channel=channel,
            posts=[
                post("f1", author="a1", kind="reply", reply_to="root1", at=at(20)),  # reopens
                post("f2", author="a2", body="thanks", at=at(21)),
                post("f3", author="a3", body="a refund please", at=at(22)),  # priority
                post("f4", author="a4", body="it is broken", at=at(23)),  # team
                post("f5", author="a5", body="sent earlier", at=at(-30)),  # arrives late
            ],
        )
    updates = [
        q["sql"]
        for q in captured.captured_queries
        if 'UPDATE "conversations_conversation"' in q["sql"]
    ]
    # SQLite: one statement per set of changed indexed columns (the status, the last
    # message's time, the team, none), the rest of each group's changes set on all its rows.
    # PostgreSQL: one for all, the routing columns set on every row as soon as a rule moved
    # one (each statement runs the KPI triggers once).
    assert len(updates) == (4 if connection.vendor == "sqlite" else 1)
    # No SLA policy: the rules moved routing columns only, so no SLA column is sent.
    assert not any('"sla_due_at"' in sql for sql in updates)

    def stored(n):
        c = Conversation.objects.get(messages__external_id=f"root{n}")
        return (
            c.status,
            c.priority,
            c.team_id,
            c.message_count,
            c.inbound_count,
            c.last_message_at,
            c.last_message_preview,
            c.resolved_at,
        )

    body = "Where is my order?"
    assert stored(1) == (Status.OPEN, Priority.NORMAL, None, 2, 2, at(20), body, None)
    assert stored(2) == (Status.NEW, Priority.NORMAL, None, 2, 2, at(21), "thanks", None)
    assert stored(3) == (Status.NEW, Priority.URGENT, None, 2, 2, at(22), "a refund please", None)
    assert stored(4) == (Status.NEW, Priority.NORMAL, team.pk, 2, 2, at(23), "it is broken", None)
    assert stored(5) == (Status.NEW, Priority.NORMAL, None, 2, 2, at(5), body, None)
    assert stored(0) == (Status.NEW, Priority.NORMAL, None, 1, 1, at(0), body, None)


def test_the_cursor_is_saved_with_the_batch():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1")], cursor={"since_id": "1"})
    channel.refresh_from_db()
    assert channel.cursor == {"since_id": "1"}


def test_the_cursor_does_not_move_when_the_database_is_unavailable(monkeypatch):
    channel = ChannelFactory(cursor={"since_id": "0"})

    def unavailable(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("channels_ingest.pipeline.inbound_posts_store", unavailable)
    with pytest.raises(OperationalError):
        ingest(channel=channel, posts=[post("1"), post("2")], cursor={"since_id": "2"})
    channel.refresh_from_db()
    assert channel.cursor == {"since_id": "0"}
    assert not Contact.objects.exists()


def test_a_post_that_cannot_be_stored_is_dead_lettered_and_the_rest_go_through(monkeypatch):
    channel = ChannelFactory(cursor={"since_id": "0"})
    real_store = inbound_posts_store

    def fails_on_poison(**kwargs):
        if any(item.post.external_id == "poison" for item in kwargs["posts"]):
            raise ValueError("cannot store this one")
        return real_store(**kwargs)

    monkeypatch.setattr("channels_ingest.pipeline.inbound_posts_store", fails_on_poison)
    batch = [post("1", at=at(1)), post("poison", at=at(2)), post("3", author="u3", at=at(3))]
    result = ingest(channel=channel, posts=batch, cursor={"since_id": "3"})
    assert result.stored == 2
    assert sorted(Message.objects.values_list("external_id", flat=True)) == ["1", "3"]
    letter = DeadLetter.objects.get()
    assert "cannot store this one" in letter.error
    assert '"poison"' in letter.raw
    channel.refresh_from_db()
    assert channel.cursor == {"since_id": "3"}

    # The post was read: kept as it was read, a retry stores it once the fault is gone.
    assert letter.post["external_id"] == "poison"
    still = dead_letter_retry(letter=letter)
    assert still.status == DeadLetterStatus.NEW
    monkeypatch.setattr("channels_ingest.pipeline.inbound_posts_store", real_store)
    done = dead_letter_retry(letter=letter)
    assert done.status == DeadLetterStatus.RETRIED
    stored = Message.objects.get(external_id="poison")
    assert (stored.body, stored.created_at) == (batch[1].body, batch[1].created_at)
    assert stored.author_identity.platform_user_id == batch[1].author.platform_user_id


def test_a_post_kept_with_a_dead_letter_reads_back_as_it_was():
    original = InboundPost(
        external_id="k1",
        kind="reply",
        author=InboundAuthor(
            platform_user_id="77",
            handle="grete",
            display_name="Grete Müller",
            followers_count=12,
            verified=True,
            email="g@example.com",
        ),
        body="Wo ist mein Paket?",
        created_at=datetime(2026, 1, 5, 12, 0, 7, tzinfo=UTC),
        in_reply_to_id="k0",
        thread_id="k0",
        language="de",
        raw={"id": "k1", "nested": {"n": [1, 2]}},
    )
    assert post_from_json(post_as_json(original)) == original
    with pytest.raises((KeyError, TypeError, ValueError)):
        post_from_json({"external_id": "k1"})


def test_nul_characters_are_dropped_rather_than_failing_the_post():
    channel = ChannelFactory()
    nul = "\x00"
    bad = InboundPost(
        external_id="n1",
        kind="mention",
        author=post("x").author,
        body=f"broken{nul}text",
        created_at=at(0),
        raw={"text": f"broken{nul}text", "nested": [f"a{nul}b"]},
    )
    assert ingest(channel=channel, posts=[bad]).stored == 1
    message = Message.objects.get()
    assert message.body == "brokentext"
    assert message.raw == {"text": "brokentext", "nested": ["ab"]}


def test_rejected_payloads_become_dead_letters_and_the_batch_goes_on():
    channel = ChannelFactory()
    result = ingest(
        channel=channel,
        posts=[post("1")],
        rejected=[RejectedPayload(raw='{"broken": ', error="Unterminated JSON")],
        source="webhook",
    )
    assert result.stored == 1
    letter = DeadLetter.objects.get()
    assert (letter.raw, letter.error, letter.source) == (
        '{"broken": ',
        "Unterminated JSON",
        "webhook",
    )


def test_the_timeline_records_changes_of_state_and_messages_keep_their_own_times():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1", at=at(7))])
    Conversation.objects.update(status=Status.RESOLVED)
    ingest(channel=channel, posts=[post("2", kind="reply", reply_to="1", at=at(9))])
    events = list(
        ConversationEvent.objects.order_by("created_at").values_list("kind", "created_at")
    )
    assert events == [(EventKind.CREATED, at(7)), (EventKind.REOPENED, at(9))]
    assert list(Message.objects.order_by("created_at").values_list("created_at", flat=True)) == [
        at(7),
        at(9),
    ]


def test_a_public_post_does_not_join_the_contacts_open_direct_message_thread():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("d1", kind="dm", thread="dm-1")])
    ingest(channel=channel, posts=[post("p1", at=at(1))])
    assert Conversation.objects.count() == 2
    public = Conversation.objects.get(messages__external_id="p1")
    assert public.thread_key == "thread:p1"


def test_a_dm_and_a_public_post_in_one_batch_get_separate_conversations():
    channel = ChannelFactory()
    ingest(
        channel=channel,
        posts=[post("d1", kind="dm", thread="dm-1"), post("p1", at=at(1)), post("p2", at=at(2))],
    )
    assert Conversation.objects.count() == 2
    assert Conversation.objects.get(thread_key="thread:p1").message_count == 2


def test_an_agent_acting_on_a_stale_page_keeps_what_ingest_stored_meanwhile():
    from conversations.services import conversation_reply_create, conversation_status_set
    from tests.factories import UserFactory

    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("1", at=at(0))])
    seen_by_agent = Conversation.objects.get()  # the agent's page loads here
    ingest(channel=channel, posts=[post("2", at=at(5))])
    conversation_reply_create(
        conversation=seen_by_agent, author=UserFactory(), body="On it", at=at(10)
    )
    conversation = Conversation.objects.get()
    assert (conversation.inbound_count, conversation.message_count) == (2, 3)
    assert conversation.last_inbound_at == at(5)

    ingest(channel=channel, posts=[post("3", at=at(20))])
    conversation_status_set(conversation=seen_by_agent, status=Status.PENDING, actor=None)
    conversation = Conversation.objects.get()
    assert conversation.inbound_count == 3
    assert conversation.waiting_since == at(20)


def test_an_email_stored_in_capitals_still_matches():
    existing = ContactFactory(email="Dana.Rossi@Example.com")
    ingest(channel=ChannelFactory(), posts=[post("1", author="u8", email="dana.rossi@example.com")])
    assert SocialIdentity.objects.get(platform_user_id="u8").contact_id == existing.pk


def test_each_reply_records_how_long_the_customer_waited():
    from conversations.services import conversation_reply_create
    from tests.factories import UserFactory

    channel = ChannelFactory()
    agent = UserFactory()
    ingest(channel=channel, posts=[post("1", at=at(0))])
    conversation = Conversation.objects.get()
    conversation_reply_create(conversation=conversation, author=agent, body="Hi", at=at(12))
    ingest(channel=channel, posts=[post("2", at=at(30)), post("3", at=at(31))])
    conversation_reply_create(conversation=conversation, author=agent, body="Done", at=at(40))
    conversation_reply_create(conversation=conversation, author=agent, body="Also", at=at(41))
    replies = ConversationEvent.objects.filter(kind=EventKind.REPLY_SENT).order_by("created_at")
    assert [(e.data["first_response"], e.data["response_seconds"]) for e in replies] == [
        (True, 12 * 60.0),
        (False, 10 * 60.0),
        (False, None),
    ]


# --- Classification beside identity resolution --------------------------------------------


def test_a_large_batch_is_classified_in_a_thread_with_the_same_results(monkeypatch):
    from channels_ingest import pipeline
    from channels_ingest.classify import sentiment_score

    threads: list[str] = []
    real_classify = pipeline._classify

    def recording(item, matcher):
        threads.append(threading.current_thread().name)
        return real_classify(item, matcher)

    monkeypatch.setattr(pipeline, "_classify", recording)
    channel = ChannelFactory()
    moods = ["I love this, thank you!", "This is awful and broken", "Where is my order?"]
    big = [
        post(f"b{n}", author=f"b{n}", body=moods[n % 3], at=at(n))
        for n in range(pipeline.OVERLAP_FROM)
    ]
    assert ingest(channel=channel, posts=big).stored == len(big)
    assert len(threads) == len(big)
    assert all(name.startswith("classify") for name in threads)
    stored = dict(Message.objects.values_list("external_id", "sentiment"))
    assert stored == {p.external_id: sentiment_score(p.body) for p in big}

    threads.clear()
    small = [post(f"s{n}", author=f"s{n}", at=at(100 + n)) for n in range(3)]
    assert ingest(channel=channel, posts=small).stored == 3
    assert threads == [threading.current_thread().name] * 3


def test_a_post_that_fails_classification_in_the_thread_becomes_a_dead_letter(monkeypatch):
    from channels_ingest import pipeline

    real_score = pipeline.sentiment_score

    def fails_on_poison(text):
        if "poison" in text:
            raise ValueError("cannot judge this one")
        return real_score(text)

    monkeypatch.setattr(pipeline, "sentiment_score", fails_on_poison)
    channel = ChannelFactory()
    batch = [
        post(f"p{n}", author=f"a{n}", body="poison" if n == 7 else "Hello?", at=at(n))
        for n in range(pipeline.OVERLAP_FROM + 1)
    ]
    result = ingest(channel=channel, posts=batch)
    assert result.stored == len(batch) - 1
    assert not Message.objects.filter(external_id="p7").exists()
    letter = DeadLetter.objects.get()
    assert "cannot judge this one" in letter.error
    assert '"p7"' in letter.raw
