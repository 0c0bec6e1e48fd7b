"""Business-hours arithmetic for SLA due times.

Opening hours are wall-clock intervals in the calendar's time zone. Each local date's intervals
are turned into real (UTC) instants separately, so a day's length follows DST: in Europe/Berlin
00:00-24:00 is 23 hours on the spring-forward day and 25 hours on the fall-back day.

A wall-clock time that does not exist (in a spring-forward gap) or exists twice (in a fall-back
overlap) is read with ``fold=0``, i.e. with the UTC offset in force before the change, and then
normalised through UTC. So 02:30 on Berlin's spring-forward day is 03:30 CEST, and 02:30 on its
fall-back day is the first 02:30 (CEST).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "MAX_CLOSED_DAYS",
    "WEEKDAY_NAMES",
    "BusinessCalendar",
    "CalendarError",
    "add_business_time",
    "business_time_between",
]

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Ten years of closed days in a row means the calendar can never open; stop instead of looping.
MAX_CLOSED_DAYS = 3700
_DAY = timedelta(days=1)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")

Interval = tuple[datetime, datetime]


class CalendarError(ValueError):
    """A business calendar that is malformed or can never open."""


@dataclass(frozen=True)
class BusinessCalendar:
    time_zone: str
    # weekday (0 = Monday) -> local [start, end) intervals; an end of time(0) means midnight.
    weekly: Mapping[int, Sequence[tuple[time, time]]]
    holidays: frozenset[date] = frozenset()
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    # Per weekday, sorted intervals as offsets from local midnight (end may be 24 hours).
    _hours: tuple[tuple[tuple[timedelta, timedelta], ...], ...] = field(
        init=False, repr=False, compare=False
    )
    # Each day's sorted UTC intervals once computed: SLA clocks and rules ask about the same
    # few days thousands of times per ingest batch.
    _days: dict[date, list[Interval]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise CalendarError(f"Unknown time zone {self.time_zone!r}.") from None
        for weekday in self.weekly:
            if type(weekday) is not int or not 0 <= weekday <= 6:
                raise CalendarError(f"Weekday {weekday!r} must be 0 (Monday) to 6 (Sunday).")
        hours = tuple(_day_hours(weekday, self.weekly.get(weekday, ())) for weekday in range(7))
        if not any(hours):
            raise CalendarError("The calendar has no open hours on any day of the week.")
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_hours", hours)

    @classmethod
    def from_config(
        cls,
        *,
        time_zone: str,
        weekly_hours: Mapping[str | int, Sequence[Sequence[str]]],
        holidays: Iterable[date],
    ) -> BusinessCalendar:
        """Build a calendar from JSON-style settings: ``{"0": [["09:00", "17:00"]], ...}``."""
        weekly: dict[int, list[tuple[time, time]]] = {}
        for key, intervals in weekly_hours.items():
            weekday = _parse_weekday(key)
            name = WEEKDAY_NAMES[weekday]
            if not _is_list(intervals):
                raise CalendarError(f"{name}: {intervals!r} must be a list of [opens, closes].")
            parsed = weekly.setdefault(weekday, [])
            for interval in intervals:
                if not _is_list(interval) or len(interval) != 2:
                    raise CalendarError(f"{name}: {interval!r} must be a pair [opens, closes].")
                opens, closes = interval
                parsed.append((_parse_clock(name, opens), _parse_clock(name, closes, end=True)))
        return cls(time_zone=time_zone, weekly=weekly, holidays=frozenset(holidays))

    def is_open(self, moment: datetime) -> bool:
        moment = _as_utc(moment)
        return any(opens == moment for opens, _ in self._intervals_from(moment, until=moment))

    def next_opening(self, moment: datetime) -> datetime:
        """The moment itself (in UTC) if open, else the next time the calendar opens."""
        start, _ = next(self._intervals_from(_as_utc(moment)))
        return start

    def open_until(self, moment: datetime) -> datetime | None:
        """When the open hours ``moment`` falls in end (in UTC), or None if it is closed then.
        Hours that follow on at once (12:00-20:00 after 08:00-12:00, or past midnight) may
        extend the stretch beyond that: the calendar is open at least until then."""
        moment = _as_utc(moment)
        for opens, closes in self._intervals_from(moment, until=moment):
            return closes if opens == moment else None
        return None

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """When ``duration`` of business time has elapsed after ``start``, in UTC."""
        if duration < timedelta(0):
            raise ValueError("A business-time duration cannot be negative.")
        remaining = duration
        for opens, closes in self._intervals_from(_as_utc(start)):
            if remaining <= closes - opens:
                return opens + remaining
            remaining -= closes - opens
        raise AssertionError("unreachable: _intervals_from never ends without an error")

    def between(self, start: datetime, end: datetime) -> timedelta:
        """Business time elapsed in ``[start, end)``; zero if ``end`` is not after ``start``."""
        start, end = _as_utc(start), _as_utc(end)
        elapsed = timedelta(0)
        if end <= start:
            return elapsed
        for opens, closes in self._intervals_from(start, until=end):
            if opens >= end:
                break
            elapsed += min(closes, end) - opens
        return elapsed

    def _day_intervals(self, day: date) -> list[Interval]:
        cached = self._days.get(day)
        if cached is not None:
            return cached
        if day in self.holidays:
            intervals: list[Interval] = []
        else:
            midnight = datetime.combine(day, time(0), tzinfo=self._zone)
            intervals = sorted(
                (_wall_clock_to_utc(midnight, opens), _wall_clock_to_utc(midnight, closes))
                for opens, closes in self._hours[day.weekday()]
            )
        if len(self._days) > 4096:
            self._days.clear()
        self._days[day] = intervals
        return intervals

    def _intervals_from(
        self, moment: datetime, until: datetime | None = None
    ) -> Iterator[Interval]:
        """Open UTC intervals after ``moment`` in order, clipped so none start before it.

        Clipping to the end of the previous interval also merges overlapping intervals,
        whether configured or created by DST, so no instant is counted twice.
        """
        cursor = moment
        # Start a day early: a wall-clock time in a DST gap just before midnight is read with
        # the old offset, so the previous day's last interval can end after midnight.
        day = moment.astimezone(self._zone).date() - _DAY
        last_day = until.astimezone(self._zone).date() + _DAY if until else date.max
        closed_days = 0
        while day <= last_day:
            closed_days += 1
            for opens, closes in self._day_intervals(day):
                opens = max(opens, cursor)
                if closes > opens:
                    closed_days = 0
                    cursor = closes
                    yield opens, closes
            if closed_days > MAX_CLOSED_DAYS:
                raise CalendarError(f"The calendar does not open within {MAX_CLOSED_DAYS} days.")
            day += _DAY


def add_business_time(
    calendar: BusinessCalendar | None, start: datetime, duration: timedelta
) -> datetime:
    """``calendar.add``, where no calendar means open around the clock."""
    if calendar is not None:
        return calendar.add(start, duration)
    if duration < timedelta(0):
        raise ValueError("A business-time duration cannot be negative.")
    return _as_utc(start) + duration


def business_time_between(
    calendar: BusinessCalendar | None, start: datetime, end: datetime
) -> timedelta:
    """``calendar.between``, where no calendar means open around the clock."""
    if calendar is not None:
        return calendar.between(start, end)
    return max(_as_utc(end) - _as_utc(start), timedelta(0))


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is naive; business-hours arithmetic needs an aware datetime.")
    return moment.astimezone(UTC)


def _wall_clock_to_utc(midnight: datetime, offset: timedelta) -> datetime:
    # Adding to an aware datetime is wall-clock arithmetic (fold=0); astimezone then resolves
    # the actual instant, DST gaps and overlaps included.
    return (midnight + offset).astimezone(UTC)


def _day_hours(
    weekday: int, intervals: Sequence[tuple[time, time]]
) -> tuple[tuple[timedelta, timedelta], ...]:
    name = WEEKDAY_NAMES[weekday]
    spans: list[tuple[timedelta, timedelta]] = []
    for interval in intervals:
        if len(interval) != 2 or not all(
            isinstance(t, time) and t.tzinfo is None for t in interval
        ):
            raise CalendarError(f"{name}: {interval!r} must be two times without a time zone.")
        opens, closes = interval
        start, end = _since_midnight(opens), _since_midnight(closes) or _DAY
        if start >= end:
            raise CalendarError(f"{name}: {opens:%H:%M}-{closes:%H:%M} must close after it opens.")
        spans.append((start, end))
    # Overlaps need no merging here: _intervals_from clips each interval to the previous one.
    return tuple(sorted(spans))


def _since_midnight(t: time) -> timedelta:
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _parse_weekday(key: str | int) -> int:
    is_number = isinstance(key, int) and not isinstance(key, bool)
    is_digits = isinstance(key, str) and key.isascii() and key.isdigit()
    if not (is_number or is_digits) or not 0 <= int(key) <= 6:
        raise CalendarError(f"Weekday {key!r} must be 0 (Monday) to 6 (Sunday).")
    return int(key)


def _parse_clock(weekday_name: str, text: str, *, end: bool = False) -> time:
    match = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    hour, minute = (int(match[1]), int(match[2])) if match else (-1, -1)
    if end and (hour, minute) == (24, 0):
        return time(0)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise CalendarError(f"{weekday_name}: {text!r} is not a time of day in HH:MM form.")
    return time(hour, minute)
