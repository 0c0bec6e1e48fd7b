"""Spreads read from the duration counts (the bucket of a rank, then that bucket's facts) equal
those of sorting every fact, on random durations that sit on bucket edges, just below them,
tie, fall under a second or past the last edge; and the counts the triggers keep equal a
rebuild's."""

import importlib
import math
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from governance.models import Role
from kpis import metrics
from kpis.facts import counts_rebuild, facts_compute, facts_refresh
from kpis.metrics import DateRange, Filters, duration_spreads, interpolated
from kpis.models import (
    DURATION_BUCKETS,
    DURATION_EDGES,
    ConversationFact,
    DurationCounts,
    DurationMeasure,
    ResponseFact,
    StaleConversation,
)
from tests.factories import ChannelFactory, UserFactory
from tests.kpis.test_facts_reference import varied  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

FIRST_DAY = date(2026, 3, 2)  # a Monday
DAYS = 20
KEY = ("day", "channel_id", "platform", "measure")
COUNTERS = ("n", "total", *(f"b{i}" for i in range(DURATION_BUCKETS)))


def test_the_edges_are_those_the_triggers_count_by():
    migration = importlib.import_module("kpis.migrations.0008_duration_counts")
    assert migration.EDGES == DURATION_EDGES
    assert list(DURATION_EDGES) == sorted(set(DURATION_EDGES))
    assert all(isinstance(edge, int) for edge in DURATION_EDGES)


def test_the_triggers_find_the_buckets_the_reports_read():
    rng = random.Random(3)
    _facts(rng, [ChannelFactory(platform="x")], conversations=0, responses=600)
    expected = [0] * DURATION_BUCKETS
    for seconds in ResponseFact.objects.filter(is_first=True).values_list("seconds", flat=True):
        expected[metrics.bucket_of(seconds)] += 1
    kept = [0] * DURATION_BUCKETS
    for row in DurationCounts.objects.filter(measure=DurationMeasure.FIRST_RESPONSE):
        for i in range(DURATION_BUCKETS):
            kept[i] += getattr(row, f"b{i}")
    assert kept == expected
    assert expected[0] and expected[metrics.ZERO_BUCKET] and expected[2]  # below, at, above 0
    for bucket in range(DURATION_BUCKETS):
        lower, upper, above = metrics.bucket_bounds(bucket)
        if bucket != metrics.ZERO_BUCKET:
            if lower is not None:
                assert metrics.bucket_of(math.nextafter(lower, math.inf)) == bucket
                assert metrics.bucket_of(lower) == (bucket if not above else bucket - 1)
            if upper is not None:
                assert metrics.bucket_of(math.nextafter(upper, -math.inf)) == bucket
                assert metrics.bucket_of(upper) == bucket + 1


def test_ranks_are_found_in_the_bucket_that_holds_them():
    counts = [2, 0, 3, 1]
    # Ranks 1 and 2 straddle buckets 0 and 2 (bucket 1 is empty); 4 and 5 buckets 2 and 3.
    assert metrics._bands(counts, [1, 2]) == [(0, 1, 1, 1), (2, 0, 1, 2)]
    assert metrics._bands(counts, [0, 1]) == [(0, 0, 2, 0)]
    assert metrics._bands(counts, [4, 5, 5]) == [(2, 2, 1, 4), (3, 0, 1, 5)]
    assert metrics._bands(counts, [2, 3, 4]) == [(2, 0, 3, 2)]


def _duration(rng: random.Random) -> float:
    edge = float(rng.choice(DURATION_EDGES))
    return rng.choice(
        [
            lambda: edge,  # on an edge: the bucket above holds it
            lambda: math.nextafter(edge, 0.0),  # just below: the bucket below
            lambda: float(rng.randint(0, 40)),  # whole seconds, with ties
            lambda: 0.0,
            lambda: -float(rng.randint(1, 100)),  # under every edge
            lambda: rng.uniform(0, 1),
            lambda: DURATION_EDGES[-1] + rng.uniform(0, 1e7),  # past the last edge
            lambda: rng.lognormvariate(math.log(1800), 1.5),
            lambda: rng.lognormvariate(math.log(1800), 1.5),
        ]
    )()


def _facts(rng: random.Random, channels: list[Any], conversations: int, responses: int) -> None:
    def day() -> date:
        return FIRST_DAY + timedelta(days=rng.randrange(DAYS))

    def business() -> float | None:
        return None if rng.random() < 0.2 else _duration(rng)

    ResponseFact.objects.bulk_create(
        ResponseFact(
            conversation_id=rng.randint(1, 50),
            at=datetime(2026, 3, 2, tzinfo=UTC),
            day=day(),
            is_first=rng.random() < 0.3,
            seconds=_duration(rng),
            business_seconds=business(),
            channel=(channel := rng.choice(channels)),
            platform=channel.platform,
            priority=rng.randint(1, 4),
        )
        for _ in range(responses)
    )
    facts = []
    for pk in range(1, conversations + 1):
        resolved = rng.random() < 0.8
        channel = rng.choice(channels)
        facts.append(
            ConversationFact(
                conversation_id=pk,
                channel=channel,
                platform=channel.platform,
                priority=1,
                contact_id=pk,
                status="resolved" if resolved else "open",
                started_at=datetime(2026, 3, 1, tzinfo=UTC),
                day=FIRST_DAY,
                resolved_day=day() if resolved else None,
                resolution_seconds=_duration(rng) if resolved else None,
                resolution_business_seconds=business() if resolved else None,
            )
        )
    ConversationFact.objects.bulk_create(facts)


_READ: dict[int, tuple[Any, str, str, dict[str, bool]]] = {
    DurationMeasure.FIRST_RESPONSE: (ResponseFact, "seconds", "day", {"is_first": True}),
    DurationMeasure.FIRST_RESPONSE_BUSINESS: (
        ResponseFact,
        "business_seconds",
        "day",
        {"is_first": True},
    ),
    DurationMeasure.NEXT_RESPONSE: (ResponseFact, "seconds", "day", {"is_first": False}),
    DurationMeasure.NEXT_RESPONSE_BUSINESS: (
        ResponseFact,
        "business_seconds",
        "day",
        {"is_first": False},
    ),
    DurationMeasure.RESOLUTION: (ConversationFact, "resolution_seconds", "resolved_day", {}),
    DurationMeasure.RESOLUTION_BUSINESS: (
        ConversationFact,
        "resolution_business_seconds",
        "resolved_day",
        {},
    ),
}


def _sorted_values(measure: int, days: list[date], filters: Filters) -> list[float]:
    """The plain way: every fact of the days and scope, sorted."""
    model, column, day_field, subset = _READ[measure]
    qs = model.objects.filter(**subset, **{f"{day_field}__in": days, f"{column}__isnull": False})
    if filters.channel is not None:
        qs = qs.filter(channel_id=filters.channel)
    if filters.platform:
        qs = qs.filter(platform=filters.platform)
    return sorted(qs.values_list(column, flat=True))


@pytest.mark.parametrize("seed", range(12))
def test_spreads_from_the_counts_equal_those_of_sorting_every_fact(seed):
    rng = random.Random(seed)
    admin = UserFactory(role=Role.ADMIN)
    channels = [ChannelFactory(platform="x"), ChannelFactory(platform="x")]
    channels.append(ChannelFactory(platform="facebook"))
    # Few durations as well as many: one, two and three values are where ranks go wrong.
    size = rng.choice([1, 2, 3, 5, 40, 400])
    _facts(rng, channels, conversations=size, responses=size * 3)
    for _ in range(6):
        start = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        range_ = DateRange(start, start + timedelta(days=rng.randrange(DAYS)))
        filters = rng.choice(
            [Filters(), Filters(channel=rng.choice(channels).pk), Filters(platform="x")]
        )
        grain = rng.choice([None, "day", "week"])
        found = duration_spreads(admin, filters, range_, list(DurationMeasure), grain=grain)
        assert found is not None  # the counts agreed with the facts: no fall-back
        groups: dict[Any, list[date]] = {}
        for i in range(range_.days):
            day = range_.start + timedelta(days=i)
            groups.setdefault(metrics._bucket(day, grain) if grain else None, []).append(day)
        expected_keys = set()
        for group, days in groups.items():
            for measure in DurationMeasure:
                values = _sorted_values(measure, days, filters)
                if not values:
                    continue
                expected_keys.add((group, measure))
                spread = found[(group, measure)]
                assert (spread.n, spread.median, spread.p90) == (
                    len(values),
                    interpolated(values, 0.5),
                    interpolated(values, 0.9),
                ), (group, measure)
                assert spread.mean == pytest.approx(sum(values) / len(values), rel=1e-9, abs=1e-6)
        assert set(found) == expected_keys


def test_counts_that_disagree_with_the_facts_are_not_trusted():
    rng = random.Random(7)
    admin = UserFactory(role=Role.ADMIN)
    _facts(rng, [ChannelFactory(platform="x")], conversations=30, responses=90)
    range_ = DateRange(FIRST_DAY, FIRST_DAY + timedelta(days=DAYS))
    days = [range_.start + timedelta(days=i) for i in range(range_.days)]
    next_response = DurationMeasure.NEXT_RESPONSE
    assert duration_spreads(admin, Filters(), range_, [next_response]) is not None
    # A bucket holds one more duration than its facts have: the band comes back short.
    values = _sorted_values(next_response, days, Filters())
    low, _, _ = metrics._ranks(len(values), 0.5)
    bucket = metrics.bucket_of(values[low])
    row = DurationCounts.objects.filter(measure=next_response, **{f"b{bucket}__gt": 0}).first()
    assert row is not None
    DurationCounts.objects.filter(pk=row.pk).update(
        **{f"b{bucket}": getattr(row, f"b{bucket}") + len(values), "n": row.n + len(values)}
    )
    assert duration_spreads(admin, Filters(), range_, [next_response]) is None
    # The summary then reads the facts.
    summary = metrics._summary(user=admin, range_=range_, filters=Filters())
    assert summary.speed.next_response.median == interpolated(values, 0.5)


def _kept() -> dict[tuple[Any, ...], tuple[int, ...]]:
    return {
        row[:4]: row[4:]
        for row in DurationCounts.objects.values_list(*KEY, *COUNTERS)
        if any(row[4:])
    }


def test_counts_kept_by_the_triggers_equal_a_rebuild(varied):  # noqa: F811
    facts_compute(varied)
    assert DurationCounts.objects.exists()
    from conversations.models import Conversation

    Conversation.objects.filter(pk__in=varied[::4]).update(priority=3)
    ResponseFact.objects.filter(conversation_id__in=varied[1::4]).update(seconds=60.0)
    ConversationFact.objects.filter(conversation_id__in=varied[2::4]).update(
        resolution_seconds=59.5
    )
    facts_refresh(limit=len(varied))
    Conversation.objects.get(pk=varied[3]).delete()
    StaleConversation.objects.all().delete()
    kept_by_triggers = _kept()
    counts_rebuild()
    assert _kept() == kept_by_triggers
    n = sum(counts[0] for key, counts in kept_by_triggers.items() if key[3] == 4)
    assert n == ConversationFact.objects.filter(resolution_seconds__isnull=False).count()


def test_a_version_the_cache_dropped_brings_back_no_figure_cached_before():
    from django.core.cache import cache

    admin = UserFactory(role=Role.ADMIN)
    computed: list[int] = []

    def compute() -> int:
        computed.append(1)
        return len(computed)

    cache.clear()
    assert metrics._cached("figure", admin, compute) == 1
    metrics.facts_changed()
    cache.delete(metrics._VERSION_KEY)  # culled or evicted
    metrics.facts_changed()
    assert metrics._cached("figure", admin, compute) == 2
    assert metrics._cached("figure", admin, compute) == 2  # and cached again
