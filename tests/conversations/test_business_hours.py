from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from conversations.business_hours import (
    MAX_CLOSED_DAYS,
    BusinessCalendar,
    CalendarError,
    add_business_time,
    business_time_between,
)

BERLIN = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
WEEKDAYS = range(5)
MIDNIGHT = time(0)


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def calendar(weekly, *, time_zone="Europe/Berlin", holidays=()) -> BusinessCalendar:
    return BusinessCalendar(time_zone=time_zone, weekly=weekly, holidays=frozenset(holidays))


OFFICE = calendar({day: [(time(9), time(17))] for day in WEEKDAYS})
WITH_LUNCH = calendar({day: [(time(9), time(12)), (time(13), time(17))] for day in WEEKDAYS})
SUNDAYS_ONLY_ALL_DAY = calendar({6: [(MIDNIGHT, MIDNIGHT)]})

# 2026 dates: Monday 5 January; Berlin springs forward on Sunday 29 March and falls back on
# Sunday 25 October; New York springs forward on Sunday 8 March.


# --- DST -------------------------------------------------------------------------------------


def test_a_whole_day_on_the_spring_forward_day_is_23_hours():
    assert SUNDAYS_ONLY_ALL_DAY.between(berlin(2026, 3, 29), berlin(2026, 3, 30)) == 23 * H
    assert SUNDAYS_ONLY_ALL_DAY.add(berlin(2026, 3, 29), 23 * H) == berlin(2026, 3, 30)


def test_a_whole_day_on_the_fall_back_day_is_25_hours():
    assert SUNDAYS_ONLY_ALL_DAY.between(berlin(2026, 10, 25), berlin(2026, 10, 26)) == 25 * H


def test_an_interval_across_the_spring_forward_gap_is_one_hour_shorter():
    early = calendar({6: [(time(1), time(4))]})
    assert early.between(berlin(2026, 3, 29), berlin(2026, 3, 30)) == 2 * H
    assert early.between(berlin(2026, 3, 22), berlin(2026, 3, 23)) == 3 * H


def test_an_interval_across_the_fall_back_overlap_is_one_hour_longer():
    early = calendar({6: [(time(1), time(4))]})
    assert early.between(berlin(2026, 10, 25), berlin(2026, 10, 26)) == 4 * H


def test_a_wall_clock_time_in_the_spring_gap_uses_the_offset_before_the_change():
    opens_in_gap = calendar({6: [(time(2, 30), time(5))]})
    # 02:30 read as CET is 01:30 UTC, i.e. 03:30 CEST.
    assert opens_in_gap.next_opening(berlin(2026, 3, 29)) == utc(2026, 3, 29, 1, 30)
    assert opens_in_gap.between(berlin(2026, 3, 29), berlin(2026, 3, 30)) == 1.5 * H


def test_a_repeated_wall_clock_time_on_the_fall_back_day_is_its_first_occurrence():
    opens_in_overlap = calendar({6: [(time(2, 30), time(5))]})
    # The first 02:30 is CEST (00:30 UTC); 05:00 is CET (04:00 UTC).
    assert opens_in_overlap.next_opening(berlin(2026, 10, 25)) == utc(2026, 10, 25, 0, 30)
    assert opens_in_overlap.between(berlin(2026, 10, 25), berlin(2026, 10, 26)) == 3.5 * H


def test_intervals_that_overlap_only_because_of_the_gap_are_not_counted_twice():
    # 02:30 becomes 01:30 UTC while 03:00 CEST is 01:00 UTC: the real times overlap.
    split = calendar({6: [(time(1), time(2, 30)), (time(3), time(5))]})
    assert split.between(berlin(2026, 3, 29), berlin(2026, 3, 30)) == 3 * H
    assert split.add(berlin(2026, 3, 29), 3 * H) == berlin(2026, 3, 29, 5)


def test_an_interval_wholly_inside_the_spring_gap_is_closed_that_day():
    vanishing = calendar({6: [(time(2, 30), time(3))]})
    assert vanishing.between(berlin(2026, 3, 29), berlin(2026, 3, 30)) == timedelta(0)
    assert vanishing.next_opening(berlin(2026, 3, 29)) == berlin(2026, 4, 5, 2, 30)


def test_a_closing_time_in_a_gap_before_midnight_runs_into_the_next_day():
    # Nuuk springs forward from Saturday 23:00 to Sunday 00:00 on 2026-03-28, so 23:30 on
    # Saturday, read with the old offset, is 00:30 on Sunday.
    nuuk = ZoneInfo("America/Nuuk")
    saturday_late = calendar({5: [(time(22), time(23, 30))]}, time_zone="America/Nuuk")
    sunday_early = datetime(2026, 3, 29, 0, 15, tzinfo=nuuk)
    assert saturday_late.is_open(sunday_early) is True
    assert saturday_late.add(sunday_early, 15 * MINUTE) == datetime(2026, 3, 29, 0, 30, tzinfo=nuuk)
    assert saturday_late.between(sunday_early, datetime(2026, 3, 30, tzinfo=nuuk)) == 15 * MINUTE


def test_a_skipped_calendar_day_is_not_counted_twice():
    # Samoa skipped Friday 2011-12-30. Read with the old offset, Friday's hours are the same
    # instants as Saturday's, and count once.
    apia = ZoneInfo("Pacific/Apia")
    every_day = calendar({day: [(time(9), time(17))] for day in range(7)}, time_zone="Pacific/Apia")
    thursday, monday = datetime(2011, 12, 29, tzinfo=apia), datetime(2012, 1, 2, tzinfo=apia)
    assert every_day.between(thursday, monday) == 3 * 8 * H


def test_a_weekend_with_a_dst_change_keeps_office_wall_clock_hours():
    due = OFFICE.add(berlin(2026, 3, 27, 16), 2 * H)
    assert due == berlin(2026, 3, 30, 10)
    assert due == utc(2026, 3, 30, 8)


def test_business_time_around_the_clock_is_real_elapsed_time_across_dst():
    always = calendar({day: [(MIDNIGHT, MIDNIGHT)] for day in range(7)})
    assert always.add(berlin(2026, 3, 28, 12), 24 * H) == berlin(2026, 3, 29, 13)
    assert always.add(berlin(2026, 10, 24, 12), 24 * H) == berlin(2026, 10, 25, 11)


def test_new_york_office_hours_follow_its_own_dst_change():
    new_york = calendar(
        {day: [(time(9), time(17))] for day in WEEKDAYS}, time_zone="America/New_York"
    )
    friday_afternoon = datetime(2026, 3, 6, 16, tzinfo=ZoneInfo("America/New_York"))
    # Friday 16:00 EST (21:00 UTC) plus two hours is Monday 10:00 EDT (14:00 UTC).
    assert new_york.add(friday_afternoon, 2 * H) == utc(2026, 3, 9, 14)
    assert new_york.between(friday_afternoon, utc(2026, 3, 9, 14)) == 2 * H


def test_kolkata_half_hour_offset_is_respected():
    kolkata = calendar(
        {day: [(time(9, 30), time(18))] for day in WEEKDAYS}, time_zone="Asia/Kolkata"
    )
    monday_evening = datetime(2026, 1, 5, 17, tzinfo=ZoneInfo("Asia/Kolkata"))
    # Tuesday 10:30 IST is 05:00 UTC.
    assert kolkata.add(monday_evening, 2 * H) == utc(2026, 1, 6, 5)
    assert kolkata.is_open(utc(2026, 1, 6, 4)) is True
    assert kolkata.is_open(utc(2026, 1, 6, 3, 59)) is False


# --- Week structure --------------------------------------------------------------------------


def test_forty_business_hours_is_one_working_week():
    monday_morning = berlin(2026, 1, 5, 9)
    assert OFFICE.add(monday_morning, 40 * H) == berlin(2026, 1, 9, 17)
    assert OFFICE.between(monday_morning, berlin(2026, 1, 12, 9)) == 40 * H


def test_one_hour_past_a_working_week_lands_on_the_next_monday():
    assert OFFICE.add(berlin(2026, 1, 5, 9), 41 * H) == berlin(2026, 1, 12, 10)


def test_several_weeks_span_a_dst_change_in_whole_working_weeks():
    assert OFFICE.add(berlin(2026, 3, 18, 12), 3 * 40 * H) == berlin(2026, 4, 8, 12)


def test_friday_afternoon_rolls_over_the_weekend():
    assert OFFICE.add(berlin(2026, 1, 9, 16), 2 * H) == berlin(2026, 1, 12, 10)


def test_counting_starts_inside_an_interval_from_the_start():
    assert OFFICE.add(berlin(2026, 1, 5, 10, 15), 3 * H) == berlin(2026, 1, 5, 13, 15)


def test_counting_before_opening_starts_at_opening():
    assert OFFICE.add(berlin(2026, 1, 5, 7), H) == berlin(2026, 1, 5, 10)


def test_counting_after_closing_starts_at_the_next_opening():
    assert OFFICE.add(berlin(2026, 1, 5, 18), H) == berlin(2026, 1, 6, 10)


def test_counting_on_a_weekend_starts_on_monday():
    assert OFFICE.add(berlin(2026, 1, 10, 11), H) == berlin(2026, 1, 12, 10)


def test_a_duration_ending_at_closing_time_is_due_at_closing_time():
    assert OFFICE.add(berlin(2026, 1, 5, 16), H) == berlin(2026, 1, 5, 17)


def test_holidays_are_closed_all_day():
    christmas = calendar(
        {day: [(time(9), time(17))] for day in WEEKDAYS}, holidays={date(2026, 12, 25)}
    )
    assert christmas.is_open(berlin(2026, 12, 25, 10)) is False
    assert christmas.add(berlin(2026, 12, 24, 16), 2 * H) == berlin(2026, 12, 28, 10)
    assert christmas.add(berlin(2026, 12, 25, 10), H) == berlin(2026, 12, 28, 10)
    assert christmas.between(berlin(2026, 12, 24), berlin(2026, 12, 29)) == 16 * H


def test_a_lunch_break_is_not_counted():
    assert WITH_LUNCH.add(berlin(2026, 1, 5, 11), 2 * H) == berlin(2026, 1, 5, 14)
    assert WITH_LUNCH.is_open(berlin(2026, 1, 5, 12, 30)) is False
    assert WITH_LUNCH.next_opening(berlin(2026, 1, 5, 12, 30)) == berlin(2026, 1, 5, 13)
    assert WITH_LUNCH.between(berlin(2026, 1, 5), berlin(2026, 1, 6)) == 7 * H


def test_unsorted_and_overlapping_intervals_are_merged():
    messy = calendar({0: [(time(13), time(17)), (time(9), time(12)), (time(11), time(14))]})
    assert messy.between(berlin(2026, 1, 5), berlin(2026, 1, 6)) == 8 * H
    assert messy.is_open(berlin(2026, 1, 5, 12, 30)) is True


def test_touching_intervals_are_continuous():
    touching = calendar({0: [(time(12), time(17)), (time(9), time(12))]})
    assert touching.add(berlin(2026, 1, 5, 11), 2 * H) == berlin(2026, 1, 5, 13)


def test_an_interval_may_end_at_midnight():
    late = calendar({0: [(time(18), MIDNIGHT)]})
    assert late.is_open(berlin(2026, 1, 5, 23, 59)) is True
    assert late.is_open(berlin(2026, 1, 6)) is False
    assert late.add(berlin(2026, 1, 5, 23), 2 * H) == berlin(2026, 1, 12, 19)


def test_an_interval_to_midnight_continues_into_one_from_midnight():
    overnight = calendar({0: [(time(18), MIDNIGHT)], 1: [(MIDNIGHT, time(2))]})
    assert overnight.is_open(berlin(2026, 1, 6)) is True
    assert overnight.add(berlin(2026, 1, 5, 23), 2 * H) == berlin(2026, 1, 6, 1)
    assert overnight.between(berlin(2026, 1, 5, 22), berlin(2026, 1, 6, 2)) == 4 * H


# --- add, between, next_opening, is_open -----------------------------------------------------


def test_results_are_in_utc():
    assert OFFICE.add(berlin(2026, 1, 5, 10), H).tzinfo is UTC
    assert OFFICE.next_opening(berlin(2026, 1, 5, 10)).tzinfo is UTC
    assert add_business_time(None, berlin(2026, 1, 5, 10), H).tzinfo is UTC


def test_adding_nothing_while_open_is_the_start():
    assert OFFICE.add(berlin(2026, 1, 5, 10), timedelta(0)) == berlin(2026, 1, 5, 10)


def test_adding_nothing_while_closed_is_the_next_opening():
    assert OFFICE.add(berlin(2026, 1, 5, 17), timedelta(0)) == berlin(2026, 1, 6, 9)


def test_the_next_opening_of_an_open_moment_is_that_moment():
    assert OFFICE.next_opening(berlin(2026, 1, 5, 9)) == berlin(2026, 1, 5, 9)
    assert OFFICE.next_opening(berlin(2026, 1, 5, 17)) == berlin(2026, 1, 6, 9)


def test_opening_time_is_open_and_closing_time_is_not():
    assert OFFICE.is_open(berlin(2026, 1, 5, 9)) is True
    assert OFFICE.is_open(berlin(2026, 1, 5, 16, 59)) is True
    assert OFFICE.is_open(berlin(2026, 1, 5, 17)) is False


def test_open_until_is_the_end_of_the_hours_a_moment_falls_in():
    assert OFFICE.open_until(berlin(2026, 1, 5, 9)) == berlin(2026, 1, 5, 17)
    assert OFFICE.open_until(berlin(2026, 1, 5, 16, 59)) == berlin(2026, 1, 5, 17)
    assert OFFICE.open_until(berlin(2026, 1, 5, 17)) is None
    assert OFFICE.open_until(berlin(2026, 1, 5, 8, 59)) is None
    assert OFFICE.open_until(berlin(2026, 1, 10, 12)) is None  # Saturday
    assert WITH_LUNCH.open_until(berlin(2026, 1, 5, 10)) == berlin(2026, 1, 5, 12)
    assert WITH_LUNCH.open_until(berlin(2026, 1, 5, 12, 30)) is None
    assert OFFICE.open_until(berlin(2026, 1, 5, 10)).tzinfo is UTC
    # On a holiday, and on the spring-forward Sunday whose day is 23 hours long.
    assert (
        calendar(OFFICE.weekly, holidays=[date(2026, 1, 5)]).open_until(berlin(2026, 1, 5, 10))
        is None
    )
    assert SUNDAYS_ONLY_ALL_DAY.open_until(berlin(2026, 3, 29, 1)) == berlin(2026, 3, 30)


def test_between_counts_only_the_open_part_of_the_range():
    assert OFFICE.between(berlin(2026, 1, 5, 8), berlin(2026, 1, 5, 10)) == H
    assert OFFICE.between(berlin(2026, 1, 5, 16), berlin(2026, 1, 6, 10)) == 2 * H


def test_between_is_zero_when_the_end_is_not_after_the_start():
    assert OFFICE.between(berlin(2026, 1, 5, 12), berlin(2026, 1, 5, 12)) == timedelta(0)
    assert OFFICE.between(berlin(2026, 1, 5, 12), berlin(2026, 1, 5, 10)) == timedelta(0)


def test_a_negative_duration_is_rejected():
    with pytest.raises(ValueError, match="negative"):
        OFFICE.add(berlin(2026, 1, 5, 12), -H)


@pytest.mark.parametrize(
    "call",
    [
        lambda naive: OFFICE.is_open(naive),
        lambda naive: OFFICE.next_opening(naive),
        lambda naive: OFFICE.add(naive, H),
        lambda naive: OFFICE.between(naive, berlin(2026, 1, 6)),
        lambda naive: OFFICE.between(berlin(2026, 1, 4), naive),
        lambda naive: add_business_time(None, naive, H),
        lambda naive: business_time_between(None, naive, berlin(2026, 1, 6)),
    ],
)
def test_naive_datetimes_are_rejected(call):
    with pytest.raises(ValueError, match="naive"):
        call(datetime(2026, 1, 5, 12))


@pytest.mark.parametrize(
    "duration",
    [timedelta(0), MINUTE, 59 * MINUTE, 3 * H, 7 * H + 59 * MINUTE, 8 * H, 40 * H, 123 * H],
)
def test_between_undoes_add(duration):
    # Two weeks every 97 minutes, across Berlin's spring-forward weekend, open or not.
    starts = [berlin(2026, 3, 21) + step * 97 * MINUTE for step in range(14 * 24 * 60 // 97)]
    assert any(WITH_LUNCH.is_open(start) for start in starts)
    mismatches = [
        start
        for start in starts
        if WITH_LUNCH.between(start, WITH_LUNCH.add(start, duration)) != duration
    ]
    assert mismatches == []


def test_adding_weeks_walks_day_by_day_not_minute_by_minute(monkeypatch):
    days_looked_at = []
    day_intervals = BusinessCalendar._day_intervals

    def counting(self, day):
        days_looked_at.append(day)
        return day_intervals(self, day)

    monkeypatch.setattr(BusinessCalendar, "_day_intervals", counting)
    assert OFFICE.add(berlin(2026, 1, 5, 9), 4 * 40 * H) == berlin(2026, 1, 30, 17)
    assert len(days_looked_at) <= 28


# --- Calendars that never open ---------------------------------------------------------------


def _every_day(first: date, count: int) -> set[date]:
    return {first + timedelta(days=n) for n in range(count)}


def test_a_calendar_closed_for_ten_years_raises_instead_of_looping():
    closed = calendar(
        {day: [(time(9), time(17))] for day in WEEKDAYS},
        holidays=_every_day(date(2026, 1, 1), MAX_CLOSED_DAYS + 10),
    )
    with pytest.raises(CalendarError, match="does not open"):
        closed.add(berlin(2026, 1, 5, 9), H)
    with pytest.raises(CalendarError, match="does not open"):
        closed.next_opening(berlin(2026, 1, 5, 9))
    assert closed.between(berlin(2026, 1, 5), berlin(2026, 2, 5)) == timedelta(0)


def test_a_long_run_of_holidays_shorter_than_the_bound_is_walked_through():
    first = date(2026, 1, 1)
    closed_a_while = calendar(
        {day: [(time(9), time(17))] for day in WEEKDAYS},
        holidays=_every_day(first, MAX_CLOSED_DAYS - 10),
    )
    opening = closed_a_while.next_opening(berlin(2026, 1, 5, 9))
    assert opening.astimezone(BERLIN).date() >= first + timedelta(days=MAX_CLOSED_DAYS - 10)
    assert opening.astimezone(BERLIN).time() == time(9)


# --- 24/7 (no calendar) ----------------------------------------------------------------------


def test_no_calendar_means_plain_arithmetic():
    start = berlin(2026, 3, 28, 12)
    assert add_business_time(None, start, 24 * H) == berlin(2026, 3, 29, 13)
    assert business_time_between(None, start, berlin(2026, 3, 29, 13)) == 24 * H
    assert business_time_between(None, berlin(2026, 3, 29, 13), start) == timedelta(0)
    with pytest.raises(ValueError, match="negative"):
        add_business_time(None, start, -H)


def test_a_calendar_passed_to_the_helpers_is_used():
    friday = berlin(2026, 1, 9, 16)
    assert add_business_time(OFFICE, friday, 2 * H) == berlin(2026, 1, 12, 10)
    assert business_time_between(OFFICE, friday, berlin(2026, 1, 12, 10)) == 2 * H


# --- Configuration ---------------------------------------------------------------------------


def test_from_config_reads_json_style_weekly_hours():
    configured = BusinessCalendar.from_config(
        time_zone="Europe/Berlin",
        weekly_hours={
            "0": [["13:00", "17:00"], ["09:00", "12:00"]],
            1: [["22:00", "24:00"]],
            "2": [["00:00", "00:00"]],
            "5": [],
        },
        holidays=[date(2026, 1, 12)],
    )
    assert configured.between(berlin(2026, 1, 5), berlin(2026, 1, 6)) == 7 * H
    assert configured.between(berlin(2026, 1, 6), berlin(2026, 1, 8)) == 26 * H
    assert configured.is_open(berlin(2026, 1, 12, 10)) is False
    assert configured.is_open(berlin(2026, 1, 10, 10)) is False


def test_calendar_errors_are_value_errors():
    assert issubclass(CalendarError, ValueError)


@pytest.mark.parametrize(
    ("time_zone", "weekly_hours", "message"),
    [
        ("Mars/Olympus_Mons", {"0": [["09:00", "17:00"]]}, "Unknown time zone"),
        ("", {"0": [["09:00", "17:00"]]}, "Unknown time zone"),
        ("Europe/Berlin", {"7": [["09:00", "17:00"]]}, "Weekday '7'"),
        ("Europe/Berlin", {-1: [["09:00", "17:00"]]}, "Weekday -1"),
        ("Europe/Berlin", {"mon": [["09:00", "17:00"]]}, "Weekday 'mon'"),
        ("Europe/Berlin", {"0": [["9am", "17:00"]]}, "'9am' is not a time"),
        ("Europe/Berlin", {"0": [["09:00", "25:00"]]}, "'25:00' is not a time"),
        ("Europe/Berlin", {"0": [["09:00", "12:60"]]}, "'12:60' is not a time"),
        ("Europe/Berlin", {"0": [["24:00", "24:00"]]}, "'24:00' is not a time"),
        ("Europe/Berlin", {"0": [[900, "17:00"]]}, "900 is not a time"),
        ("Europe/Berlin", {"0": [["09:00"]]}, "must be a pair"),
        ("Europe/Berlin", {"0": ["09:00-17:00"]}, "must be a pair"),
        ("Europe/Berlin", {"0": "09:00-17:00"}, "must be a list"),
        ("Europe/Berlin", {"0": [["17:00", "09:00"]]}, "Monday: 17:00-09:00 must close after"),
        ("Europe/Berlin", {"4": [["09:00", "09:00"]]}, "Friday: 09:00-09:00 must close after"),
        ("Europe/Berlin", {"0": [], "6": []}, "no open hours"),
        ("Europe/Berlin", {}, "no open hours"),
    ],
)
def test_from_config_rejects_bad_settings_with_a_clear_message(time_zone, weekly_hours, message):
    with pytest.raises(CalendarError, match=message):
        BusinessCalendar.from_config(time_zone=time_zone, weekly_hours=weekly_hours, holidays=[])


def test_the_constructor_validates_too():
    with pytest.raises(CalendarError, match="Weekday 7"):
        calendar({7: [(time(9), time(17))]})
    with pytest.raises(CalendarError, match="must close after"):
        calendar({0: [(time(17), time(9))]})
