"""What routing and SLA clocks are built from (rules, SLA policies, business calendars, and
the publishing policy acknowledgements are checked against), built once per process and
reused while the rows behind it stay the same.

Each load still reads those rows, with plain SQL and no model instances (a fraction of a
millisecond for a typical setup), and compares them with the rows of the cached build; any
difference rebuilds. The cache is keyed by the rows themselves, so an edit through a form, the
admin, a bulk update or a restored backup is seen by the very next load: there is no version
counter or signal to forget, and nothing to invalidate by hand.

Business calendars cached this way also keep the days they have worked out, which SLA clocks
and business-hours conditions ask about thousands of times per ingest batch.
"""

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connection
from django.db.models import Model

from conversations import business_hours

if TYPE_CHECKING:
    from channels_ingest.models import ChannelAccount
    from governance.models import PublishingPolicy

logger = logging.getLogger(__name__)

T = TypeVar("T")
Rows = tuple[tuple[Any, ...], ...]

_built: dict[str, tuple[Any, Any]] = {}


def rows(sql: str, params: Sequence[Any] = ()) -> Rows:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return tuple(tuple(row) for row in cursor.fetchall())


def built(name: str, key: Any, build: Callable[[], T]) -> T:
    """``build()``, or what it returned last time for an equal ``key``."""
    # The database itself is part of the key: tests and tools may switch databases.
    key = (connection.vendor, connection.settings_dict.get("NAME"), key)
    hit = _built.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = build()
    _built[name] = (key, value)
    return value


def clear() -> None:
    _built.clear()
    _statements.clear()


_statements: dict[tuple[str, Any], str] = {}


def statement(key: Any, build: Callable[[], str]) -> str:
    """SQL text that depends on nothing but the database's kind: ``build()`` once per kind,
    since quoting names through ``connection`` costs more than reading a few rows."""
    full_key = (connection.vendor, key)
    text = _statements.get(full_key)
    if text is None:
        text = _statements[full_key] = build()
    return text


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def columns(model: type[Model], names: Sequence[str], *, qualified: bool = False) -> str:
    """The columns' quoted names; ``qualified``: each with its table's, for a join."""
    meta = model._meta
    quote = connection.ops.quote_name  # each read of ``connection`` goes through a proxy
    prefix = f"{table(model)}." if qualified else ""
    return ", ".join(
        prefix + quote(str(meta.get_field(name).column))  # type: ignore[union-attr]
        for name in names
    )


def json_value(value: Any) -> Any:
    """A JSON column read without Django: text on SQLite and (as Django configures psycopg2)
    on PostgreSQL; already decoded by other drivers."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def date_value(value: Any) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class CalendarSet:
    by_id: dict[int, business_hours.BusinessCalendar]
    default_id: int | None
    # Every calendar stored, those that cannot be read included.
    stored: frozenset[int] = frozenset()

    def get(self, calendar_id: int | None) -> business_hours.BusinessCalendar | None:
        """The calendar named, else the organisation's default; None means always open."""
        return self.by_id.get(calendar_id if calendar_id is not None else self.default_id or 0)

    def named(self, calendar_id: int | None) -> business_hours.BusinessCalendar | None:
        """``get`` for what a rule names: a calendar deleted since the rule was saved gives the
        organisation's default hours, as a rule naming none does."""
        return self.get(calendar_id if calendar_id in self.stored else None)


_CALENDAR_COLUMNS = ("id", "time_zone", "weekly_hours", "is_default")


def business_calendars() -> CalendarSet:
    """Every business calendar with its holidays. One that cannot be read (only hours written
    around the form get here) is left out, so its clocks run around the clock, and logged."""
    from conversations.models import BusinessCalendar, Holiday

    # One read for both: each calendar's row once per holiday it has (once if it has none).
    calendar_rows = rows(
        statement(
            "calendars",
            lambda: (
                f"SELECT {columns(BusinessCalendar, _CALENDAR_COLUMNS, qualified=True)}, "
                f"{columns(Holiday, ('date',), qualified=True)} FROM {table(BusinessCalendar)} "
                f"LEFT JOIN {table(Holiday)} ON {columns(Holiday, ('calendar',), qualified=True)}"
                f" = {columns(BusinessCalendar, ('id',), qualified=True)} ORDER BY 1, 5"
            ),
        )
    )
    return built("calendars", calendar_rows, lambda: _calendars_build(calendar_rows))


def _calendars_build(calendar_rows: Rows) -> CalendarSet:
    days: dict[int, set[date]] = defaultdict(set)
    calendars: dict[int, tuple[str, Any, bool]] = {}
    for pk, time_zone, weekly_hours, is_default, day in calendar_rows:
        calendars[pk] = (time_zone, weekly_hours, bool(is_default))
        if day is not None:
            days[pk].add(date_value(day))
    by_id = {}
    default_id = None
    for pk, (time_zone, weekly_hours, is_default) in calendars.items():
        if is_default:
            default_id = pk
        try:
            by_id[pk] = business_hours.BusinessCalendar.from_config(
                time_zone=time_zone, weekly_hours=json_value(weekly_hours), holidays=days[pk]
            )
        except (business_hours.CalendarError, ValueError, TypeError, AttributeError):
            logger.exception("Business hours %s cannot be read", pk)
    return CalendarSet(by_id=by_id, default_id=default_id, stored=frozenset(calendars))


def publishing_policy(channel: "ChannelAccount") -> "PublishingPolicy":
    """``governance.policy.policy_for(channel)``, built once per process and reused while the
    rows it is chosen from (the channel's own policy and the default) are unchanged: what
    the acknowledgements of every ingest batch are checked against. The instance is shared:
    callers must not change it."""
    from governance.models import PublishingPolicy
    from governance.policy import policy_for

    def build() -> str:
        names = [f.name for f in PublishingPolicy._meta.concrete_fields]
        channel_column = columns(PublishingPolicy, ("channel",))
        return (
            f"SELECT {columns(PublishingPolicy, names)} FROM {table(PublishingPolicy)}"
            f" WHERE {channel_column} = %s OR {channel_column} IS NULL ORDER BY 1"
        )

    policy_rows = rows(statement("publishing-policy", build), [channel.pk])
    return built(f"publishing-policy:{channel.pk}", policy_rows, lambda: policy_for(channel))
