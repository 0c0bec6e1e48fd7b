"""A range's contacts, and those with two or more conversations, read from the contact counts
equal those counted from the facts, for every scope the counts serve, and stay so when
conversations are deleted, moved to another contact or started before others."""

import importlib
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.db import connection

from conversations.models import Conversation
from governance.models import ChannelAccess, Role, TeamMembership
from kpis import metrics
from kpis.facts import counts_rebuild, facts_compute, facts_rebuild, facts_refresh
from kpis.metrics import DateRange, Filters
from kpis.models import ContactCounts, ConversationFact, StaleConversation
from tests.factories import (
    ChannelFactory,
    ContactFactory,
    ConversationFactory,
    TeamFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

DAYS = DateRange(date(2026, 3, 2), date(2026, 3, 8))


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


@pytest.fixture
def world(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    x, facebook, other = (
        ChannelFactory(platform="x"),
        ChannelFactory(platform="facebook"),
        ChannelFactory(platform="x"),
    )
    ann, bob, cid = ContactFactory(), ContactFactory(), ContactFactory()
    conversations = [
        # Ann: before the range on X, then twice on X and once on Facebook in it.
        ConversationFactory(contact=ann, channel=x, created_at=at(1)),
        ConversationFactory(contact=ann, channel=facebook, created_at=at(3)),
        ConversationFactory(contact=ann, channel=x, created_at=at(4)),
        ConversationFactory(contact=ann, channel=x, created_at=at(4)),  # the same moment
        # Bob: once on Facebook, once on the other X channel, the second after the range.
        ConversationFactory(contact=bob, channel=facebook, created_at=at(5)),
        ConversationFactory(contact=bob, channel=other, created_at=at(9)),
        # Cid: twice the same day on Facebook, at midnight Berlin time.
        ConversationFactory(contact=cid, channel=facebook, created_at=at(6, 23)),
        ConversationFactory(contact=cid, channel=facebook, created_at=at(7, 0)),
    ]
    facts_compute([c.pk for c in conversations])
    StaleConversation.objects.all().delete()
    return {"x": x, "facebook": facebook, "other": other, "ann": ann, "bob": bob, "cid": cid}


def loyalty(user: Any, filters: Filters, range_: DateRange = DAYS) -> tuple[int, int, int]:
    found = metrics._summary(user=user, range_=range_, filters=filters).loyalty
    return found.conversations, found.contacts, found.repeat_contacts


def from_facts(user: Any, filters: Filters, range_: DateRange = DAYS) -> tuple[int, int, int]:
    started = metrics.conversation_facts(user, filters).filter(metrics._in(range_))
    contacts, repeat = metrics._contacts(started)
    return started.count(), contacts, repeat


def ranges() -> list[DateRange]:
    return [
        DAYS,
        DateRange(date(2026, 3, 1), date(2026, 3, 31)),
        DateRange(date(2026, 3, 4), date(2026, 3, 4)),
        DateRange(date(2026, 3, 7), date(2026, 3, 9)),
        DateRange(date(2026, 3, 8), date(2026, 3, 8)),
    ]


def test_a_contact_on_two_channels_counts_once_everywhere_and_once_per_channel(world):
    admin = UserFactory(role=Role.ADMIN)
    # Ann (three conversations), Bob and Cid (two, on one day); Ann and Cid came back.
    assert loyalty(admin, Filters()) == (6, 3, 2)
    assert loyalty(admin, Filters(channel=world["x"].pk)) == (2, 1, 1)
    assert loyalty(admin, Filters(channel=world["facebook"].pk)) == (4, 3, 1)
    assert loyalty(admin, Filters(channel=world["other"].pk)) == (0, 0, 0)
    for range_ in ranges():
        for filters in (
            Filters(),
            Filters(channel=world["x"].pk),
            Filters(channel=world["facebook"].pk),
            Filters(channel=world["other"].pk),
            Filters(platform="facebook"),
            Filters(platform="x"),  # two channels
            Filters(team=TeamFactory().pk),
        ):
            assert loyalty(admin, filters, range_) == from_facts(admin, filters, range_), (
                range_,
                filters,
            )


def test_which_scopes_the_counts_serve(world):
    admin = UserFactory(role=Role.ADMIN)

    def served(filters: Filters) -> tuple[str, bool] | None:
        found = metrics.contact_counts(admin, filters)
        return None if found is None else found[1:]

    assert served(Filters()) == ("", False)
    assert served(Filters(channel=world["x"].pk)) == ("channel_", False)
    assert served(Filters(platform="x")) == ("channel_", True)
    assert served(Filters(priority=2)) is None


@pytest.mark.parametrize(
    "channels", [["facebook"], ["x", "facebook"], ["x", "other"], ["facebook", "other"]]
)
def test_a_manager_of_some_channels(world, channels):
    team = TeamFactory()
    manager = UserFactory(role=Role.MANAGER)
    TeamMembership.objects.create(team=team, user=manager)
    for name in channels:
        ChannelAccess.objects.create(team=team, channel=world[name])
    # Several channels are counted per channel, then the contacts on more than one again.
    assert metrics.contact_counts(manager, Filters())[2] == (len(channels) > 1)
    for range_ in ranges():
        for filters in (Filters(), Filters(channel=world["x"].pk), Filters(platform="x")):
            assert loyalty(manager, filters, range_) == from_facts(manager, filters, range_)
    if channels == ["facebook"]:
        assert loyalty(manager, Filters()) == (4, 3, 1)
    if channels == ["x", "facebook"]:
        # Ann counts once, with three conversations: two on X, one on Facebook.
        assert loyalty(manager, Filters()) == (6, 3, 2)


def counts() -> dict[tuple[Any, ...], tuple[int, ...]]:
    names = ["previous", "second_previous", "channel_previous", "channel_second_previous"]
    return {
        row[:4]: row[4:]
        for row in ContactCounts.objects.values_list(
            "day", "earlier_day", "channel_id", "platform", *names
        )
        if any(row[4:])
    }


def facts() -> list[tuple[Any, ...]]:
    return sorted(
        ConversationFact.objects.values_list(
            "conversation_id",
            "previous_day",
            "second_previous_day",
            "channel_previous_day",
            "channel_second_previous_day",
            "days_since_previous",
            "new_contact",
        )
    )


def refreshed_equals_rebuilt() -> None:
    """Refresh until nothing is stale; the facts and counts then equal a rebuild's."""
    while facts_refresh():
        pass
    kept_facts, kept_counts = facts(), counts()
    counts_rebuild()
    assert counts() == kept_counts
    facts_rebuild()
    assert facts() == kept_facts
    assert counts() == kept_counts


def test_a_deleted_conversation_changes_the_next_ones(world):
    first = Conversation.objects.filter(contact=world["ann"]).order_by("created_at", "pk")
    first[1].delete()  # on Facebook, between X conversations
    assert StaleConversation.objects.count() == 2  # Ann's next two
    refreshed_equals_rebuilt()
    admin = UserFactory(role=Role.ADMIN)
    assert loyalty(admin, Filters()) == (5, 3, 2)
    first[0].delete()  # before the range: Ann's two in it are her first now
    refreshed_equals_rebuilt()
    assert ConversationFact.objects.filter(contact_id=world["ann"].pk).count() == 2
    assert loyalty(admin, Filters(channel=world["x"].pk)) == (2, 1, 1)


def test_a_conversation_moved_to_another_contact_or_started_earlier(world):
    bobs = Conversation.objects.filter(contact=world["bob"]).order_by("created_at")
    # Bob's first conversation becomes Ann's (as merging contacts moves them).
    Conversation.objects.filter(pk=bobs[0].pk).update(contact=world["ann"])
    refreshed_equals_rebuilt()
    # A conversation of Cid's stored late, started before his two.
    late = ConversationFactory(contact=world["cid"], channel=world["facebook"], created_at=at(2))
    assert StaleConversation.objects.filter(conversation_id=late.pk).exists()
    refreshed_equals_rebuilt()
    admin = UserFactory(role=Role.ADMIN)
    for range_ in ranges():
        for filters in (Filters(), Filters(channel=world["facebook"].pk)):
            assert loyalty(admin, filters, range_) == from_facts(admin, filters, range_)
    # Cid's conversations on the 6th and 7th now come after one on the 2nd.
    assert ConversationFact.objects.get(
        contact_id=world["cid"].pk, started_at=at(7, 0)
    ).second_previous_day == date(2026, 3, 2)


def test_facts_without_their_earlier_days_are_filled_by_the_migration(world):
    migration = importlib.import_module("kpis.migrations.0012_contact_counts")
    kept_facts, kept_counts = facts(), counts()
    ConversationFact.objects.update(
        previous_day=None,
        second_previous_day=None,
        channel_previous_day=None,
        channel_second_previous_day=None,
    )
    assert counts() == {}
    with connection.cursor() as cursor:
        cursor.execute(migration.FACT_DAYS_SQL)
    assert facts() == kept_facts
    assert counts() == kept_counts
