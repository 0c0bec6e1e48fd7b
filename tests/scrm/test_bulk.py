"""The raw bulk helpers read and write values as the ORM would."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from contacts.models import Contact, SocialIdentity
from scrm.bulk import rows_insert_returning, rows_select, rows_set, sql_in, where_in
from tests.factories import ContactFactory, IdentityFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
_IDENTITY_FIELDS = (
    "contact",
    "platform",
    "platform_user_id",
    "handle",
    "display_name",
    "profile_url",
    "followers_count",
    "verified",
    "created_at",
    "updated_at",
)


def test_inserted_rows_come_back_in_order_with_their_ids_and_values_as_read():
    contact = ContactFactory()
    rows = [
        (contact.pk, "demo", f"u{n}", f"h{n}", "", "", None, n % 2 == 0, T0, T0) for n in range(5)
    ]
    returned = rows_insert_returning(
        SocialIdentity,
        _IDENTITY_FIELDS,
        rows,
        returning=("pk", "platform_user_id", "verified", "created_at"),
    )
    assert [user_id for _, user_id, _, _ in returned] == [f"u{n}" for n in range(5)]
    for pk, user_id, verified, created_at in returned:
        identity = SocialIdentity.objects.get(pk=pk)
        assert (identity.platform_user_id, identity.verified) == (user_id, verified)
        assert verified is (user_id in {"u0", "u2", "u4"})
        assert created_at == identity.created_at == T0


def test_rows_that_break_a_unique_constraint_are_skipped_when_asked():
    existing = IdentityFactory(platform="demo", platform_user_id="taken")
    rows = [
        (existing.contact_id, "demo", "taken", "h1", "", "", None, False, T0, T0),
        (existing.contact_id, "demo", "free", "h2", "", "", None, False, T0, T0),
    ]
    returned = rows_insert_returning(
        SocialIdentity,
        _IDENTITY_FIELDS,
        rows,
        returning=("platform_user_id",),
        ignore_conflicts=True,
    )
    assert returned == [("free",)]
    assert SocialIdentity.objects.get(platform_user_id="taken").handle == existing.handle


def test_selected_values_are_converted_like_the_orms():
    contact = ContactFactory(last_seen_at=T0, is_vip=True, attributes={"tier": "gold"})
    [row] = rows_select(
        Contact,
        ["pk", "last_seen_at", "is_vip", "attributes"],
        where=sql_in(connection.ops.quote_name("id"), 1),
        params=[contact.pk],
        extra=["1 + 1"],
    )
    assert row == (contact.pk, T0, True, {"tier": "gold"}, 2)


def test_greatest_values_are_kept():
    older = ContactFactory(last_seen_at=T0)
    newer = ContactFactory(last_seen_at=T0 + timedelta(hours=2))
    rows = [(older.pk, T0 + timedelta(hours=1)), (newer.pk, T0 + timedelta(hours=1))]
    assert rows_set(Contact, ["last_seen_at"], rows, combine={"last_seen_at": "greatest"}) == 2
    older.refresh_from_db()
    newer.refresh_from_db()
    assert older.last_seen_at == T0 + timedelta(hours=1)
    assert newer.last_seen_at == T0 + timedelta(hours=2)


def test_set_values_replace_the_stored_ones():
    first, second = ContactFactory(name="A", is_vip=False), ContactFactory(name="B", is_vip=True)
    rows_set(
        Contact,
        ["name", "is_vip", "updated_at"],
        [(first.pk, "A2", True, T0), (second.pk, "B2", False, T0)],
    )
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.name, first.is_vip, first.updated_at) == ("A2", True, T0)
    assert (second.name, second.is_vip, second.updated_at) == ("B2", False, T0)


def test_times_in_any_zone_are_stored_as_the_same_instant():
    rome = T0.astimezone(ZoneInfo("Europe/Rome"))
    later = T0 + timedelta(microseconds=1)
    fields = ["name", "email", "phone", "company", "is_vip", "attributes", "external_crm_id"]
    fields += ["external_crm_url", "first_seen_at", "last_seen_at", "created_at", "updated_at"]
    row = ("Dana", "", "", "", False, {}, "", "", rome, later, T0, T0)
    [(pk,)] = rows_insert_returning(Contact, fields, [row])
    contact = Contact.objects.get(pk=pk)
    assert (contact.first_seen_at, contact.last_seen_at) == (T0, later)
    assert Contact.objects.filter(first_seen_at=rome, last_seen_at__gt=T0).exists()


def test_where_in_selects_the_rows_of_any_list_with_one_statement_text():
    contacts = [ContactFactory(name=name) for name in ("Ann", "Bo", "Zoë ✓", "O'Hara")]
    column = connection.ops.quote_name("id")
    name = connection.ops.quote_name("name")

    def selected(column_sql, values):
        condition, params = where_in(column_sql, values)
        rows = rows_select(Contact, ["name"], where=condition, params=params)
        return condition, sorted(n for (n,) in rows)

    first, names = selected(column, [contacts[0].pk, contacts[2].pk, 10**9])
    assert names == ["Ann", "Zoë ✓"]
    second, names = selected(column, {c.pk for c in contacts})
    assert names == sorted(c.name for c in contacts)
    assert second == first  # a longer list is the same statement: prepared once
    assert selected(column, [])[1] == []
    assert selected(name, ["Bo", "O'Hara", "nobody"])[1] == ["Bo", "O'Hara"]


def test_id_rows_go_in_one_statement_for_any_number_of_rows():
    from django.test.utils import CaptureQueriesContext

    from conversations.models import Conversation
    from scrm.bulk import id_rows_insert
    from tests.factories import ConversationFactory, TagFactory

    through = Conversation.tags.through
    conversations = [ConversationFactory() for _ in range(3)]
    tags = [TagFactory() for _ in range(400)]
    few = [(conversations[0].pk, tags[0].pk), (conversations[1].pk, tags[1].pk)]
    # More values than SQLite takes as parameters of one statement.
    many = [(c.pk, t.pk) for c in conversations for t in tags]
    with CaptureQueriesContext(connection) as first:
        assert id_rows_insert(through, ("conversation", "tag"), few) == 2
    with CaptureQueriesContext(connection) as second:
        # Pairs stored already are skipped when asked, the others written.
        id_rows_insert(through, ("conversation", "tag"), many, ignore_conflicts=True)
    assert len(first.captured_queries) == len(second.captured_queries) == 1
    stored = set(through.objects.values_list("conversation_id", "tag_id"))
    assert stored == set(many)


def test_id_rows_that_cannot_be_there_yet_go_in_by_copy_on_postgresql():
    from django.test.utils import CaptureQueriesContext

    from conversations.models import Conversation
    from scrm.bulk import id_rows_copy
    from tests.factories import ConversationFactory, TagFactory

    through = Conversation.tags.through
    conversation = ConversationFactory()
    tags = [TagFactory() for _ in range(3)]
    rows = [(conversation.pk, t.pk) for t in tags]
    with CaptureQueriesContext(connection) as captured:
        assert id_rows_copy(through, ("conversation", "tag"), rows) == 3
        assert id_rows_copy(through, ("conversation", "tag"), []) == 0
    [statement] = [q["sql"] for q in captured.captured_queries]
    assert statement.startswith("COPY" if connection.vendor == "postgresql" else "INSERT")
    assert "ON CONFLICT" not in statement
    assert set(conversation.tags.all()) == set(tags)


def test_rows_go_in_as_few_statements_as_the_parameter_cap_allows(monkeypatch):
    from django.test.utils import CaptureQueriesContext

    from conversations.models import ConversationEvent
    from scrm import bulk
    from tests.factories import ConversationFactory

    conversation = ConversationFactory()
    fields = ("conversation", "kind", "data", "created_at")
    rows = [(conversation.pk, "created", {"n": n}, T0 + timedelta(seconds=n)) for n in range(300)]
    with CaptureQueriesContext(connection) as whole:
        bulk.rows_insert(ConversationEvent, fields, rows[:250])
    # 250 rows of 4 values: over the 999 Django assumes for SQLite, under any real cap.
    assert len(whole.captured_queries) == 1
    monkeypatch.setattr(bulk, "_max_params", lambda: 4 * 20)
    with CaptureQueriesContext(connection) as chunked:
        bulk.rows_insert(ConversationEvent, fields, rows[250:])
    assert len(chunked.captured_queries) == 3  # 20, 20 and 10 rows
    stored = ConversationEvent.objects.filter(conversation=conversation)
    assert sorted(stored.values_list("data__n", flat=True)) == list(range(300))
