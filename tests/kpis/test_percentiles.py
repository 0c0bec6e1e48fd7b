"""Medians, 90th percentiles and means equal those of ``percentile_cont`` and ``AVG`` over
every row (on SQLite: of the sorted values), with ties and fractions, per group too."""

import pytest
from django.db import connection
from django.db.models import Q

from kpis.facts import facts_compute
from kpis.metrics import figures, grouped_spread, interpolated, spread
from kpis.models import ConversationFact, ResponseFact
from tests.kpis.test_facts_reference import varied  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


def reference(table: str, column: str, where: str, group: str = "NULL") -> dict:
    """(n, median, p90, mean) per group, the plain way."""
    if connection.vendor == "postgresql":
        sql = f"""
            SELECT {group}, COUNT({column}), percentile_cont(0.5) WITHIN GROUP (ORDER BY {column}),
                percentile_cont(0.9) WITHIN GROUP (ORDER BY {column}), AVG({column})
            FROM {table} WHERE {where} AND {column} IS NOT NULL GROUP BY 1"""
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return {row[0]: row[1:] for row in cursor.fetchall()}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {group}, {column} FROM {table} WHERE {where} AND {column} IS NOT NULL"
        )
        grouped: dict = {}
        for key, value in cursor.fetchall():
            grouped.setdefault(key, []).append(value)
    found = {}
    for key, values in grouped.items():
        values.sort()
        found[key] = (
            len(values),
            interpolated(values, 0.5),
            interpolated(values, 0.9),
            sum(values) / len(values),
        )
    return found


def same(found, expected) -> None:
    n, median, p90, mean = expected
    assert (found.n, found.median, found.p90) == (n, median, p90)
    assert found.mean == pytest.approx(mean, rel=1e-12)


def test_spreads_equal_those_over_every_row(varied):  # noqa: F811
    facts_compute(varied)
    responses = ResponseFact.objects.all()
    assert responses.filter(seconds=0).count() > 1  # ties
    _, found = figures(
        responses,
        spreads={
            "first": (Q(is_first=True), "seconds"),
            "next_business": (Q(is_first=False), "business_seconds"),
        },
    )
    same(found["first"], reference("kpis_responsefact", "seconds", "is_first")[None])
    expected = reference("kpis_responsefact", "business_seconds", "NOT is_first")
    if expected:
        same(found["next_business"], expected[None])
    same(
        spread(ConversationFact.objects.all(), "resolution_seconds"),
        reference("kpis_conversationfact", "resolution_seconds", "1 = 1")[None],
    )
    per_agent = grouped_spread(responses, "agent", "seconds")
    expected = reference("kpis_responsefact", "seconds", "1 = 1", group="agent_id")
    assert set(per_agent) == set(expected)
    for agent, found_spread in per_agent.items():
        same(found_spread, expected[agent])


def test_no_rows_no_spread(varied):  # noqa: F811
    assert spread(ResponseFact.objects.none(), "seconds").n == 0
    empty = spread(ResponseFact.objects.filter(seconds__lt=0), "seconds")
    assert (empty.n, empty.median, empty.p90, empty.mean) == (0, None, None, None)
