"""Which runs the routing comparison makes."""

import pytest

from bench.routing_overhead import (
    intervals,
    median_interval,
    paired_interval,
    paired_overhead,
    parse_args,
    sections_table,
    work_seconds,
)


def test_every_variant_is_compared_unless_told_otherwise():
    assert parse_args([]).variants == ["rules", "sla", "all"]


def test_the_variants_can_be_narrowed_to_the_rules_alone():
    assert parse_args(["--variants", "rules"]).variants == ["rules"]
    assert parse_args(["--variants", "all, rules,rules"]).variants == ["all", "rules"]


@pytest.mark.parametrize("given", ["off", "rules,bogus", ",", ""])
def test_an_unknown_or_empty_variant_is_refused(given, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--variants", given])
    assert "choose among rules, sla and all" in capsys.readouterr().err


def test_the_work_of_a_sqlite_run_is_this_process_cpu_time():
    assert work_seconds("sqlite", {"cpu_seconds": 1.5, "server_cpu_seconds": None}) == 1.5


def test_the_work_of_a_postgresql_run_adds_the_server_cpu_time_when_known():
    assert work_seconds("postgresql", {"cpu_seconds": 1.5, "server_cpu_seconds": 0.75}) == 2.25
    assert work_seconds("postgresql", {"cpu_seconds": 1.5, "server_cpu_seconds": None}) is None
    # Figures written before the server's time was read.
    assert work_seconds("postgresql", {"cpu_seconds": 1.5}) is None


def test_the_paired_overhead_compares_the_runs_of_each_round():
    # The machine slowed down in the second round: the ratios of medians would see +20%
    # (1.2 / 1.0), each round's own ratio +10%.
    without = [{"seconds": 1.0}, {"seconds": 2.0}, {"seconds": 1.0}]
    with_rules = [{"seconds": 1.1}, {"seconds": 2.2}, {"seconds": 1.2}]
    assert paired_overhead(without, with_rules, "seconds") == pytest.approx(0.10)


def test_no_paired_overhead_without_the_figure_in_every_run():
    assert paired_overhead([{"w": 1.0}], [{"w": None}], "w") is None
    assert paired_overhead([], [], "w") is None


def test_the_parts_that_decide_are_marked_and_summed_apart_from_the_writing():
    row = {
        "database": "sqlite",
        "variant": "rules",
        "seconds_without": 2.0,
        "seconds_with": 2.2,
        "deciding": ["rules evaluated", "rule decisions taken"],
        "sections": {
            "rules evaluated": {"seconds_without": 0.0, "seconds_with": 0.03},
            "rule decisions taken": {"seconds_without": 0.0, "seconds_with": 0.05},
            "tags written": {"seconds_without": 0.0, "seconds_with": 0.04},
            "of which timeline rows (PostgreSQL)": {"seconds_without": 0, "seconds_with": 0},
        },
    }
    lines = sections_table(row).splitlines()
    # The part not called on this database is left out.
    assert [line.split() for line in lines[2:-1]] == [
        ["rules", "evaluated", "*", "0.0", "30.0", "+30.0", "+1.5%"],
        ["rule", "decisions", "taken", "*", "0.0", "50.0", "+50.0", "+2.5%"],
        ["tags", "written", "0.0", "40.0", "+40.0", "+2.0%"],
    ]
    assert lines[-1] == (
        "  * deciding what the rules do: +80.0 ms, +4.0% of the phase; the rest of the +200.0 ms"
        " the rules add (+6.0%): writing what they decided, the commit, noise"
    )


def test_fewer_than_six_values_give_no_95_percent_interval_for_the_median():
    # Five values: all five on one side of the median has probability 2 / 32 > 5%.
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    low, high, coverage = median_interval([6.0, 1.0, 5.0, 2.0, 4.0, 3.0])
    assert (low, high) == (1.0, 6.0)
    assert coverage == pytest.approx(1 - 2 / 64)


def test_fifteen_values_give_the_fourth_smallest_to_the_fourth_largest():
    # P(at most 3 of 15 below the median) = 576 / 32768 <= 2.5% < P(at most 4) = 1941 / 32768.
    low, high, coverage = median_interval([float(v) for v in range(15, 0, -1)])
    assert (low, high) == (4.0, 12.0)
    assert coverage == pytest.approx(1 - 2 * 576 / 32768)


def test_the_paired_interval_is_over_each_round_s_ratio():
    without = [{"s": 1.0}] * 6 + [{"s": 2.0}]
    with_rules = [{"s": 1.0 + share} for share in (0.05, 0.06, 0.07, 0.08, 0.09, 0.12)]
    with_rules.append({"s": 2.0 * 1.07})
    low, high, _ = paired_interval(without, with_rules, "s")
    assert low == pytest.approx(0.05) and high == pytest.approx(0.12)
    assert paired_interval(without[:5], with_rules[:5], "s") is None
    assert paired_interval([{"s": 1.0}] * 6, [{"s": None}] * 6, "s") is None


def test_the_intervals_line_says_when_the_rounds_are_too_few():
    row = {
        "database": "sqlite",
        "variant": "rules",
        "overhead_paired_interval": (0.051, 0.093, 0.965),
        "work_overhead_paired_interval": None,
    }
    assert "at least 6 rounds" in intervals([row], rounds=5)
    assert intervals([row], rounds=15) == (
        "sqlite rules: paired overhead +5.1% to +9.3% (96.5%), CPU with server -"
    )


@pytest.mark.django_db
def test_a_copied_schema_that_lacks_a_migration_stops_the_run():
    from django.db.migrations.recorder import MigrationRecorder

    from bench.run import schema_check

    schema_check("schema-copy")  # the test database holds every migration
    # Rolled back with the test's transaction.
    MigrationRecorder.Migration.objects.filter(app="conversations").latest("id").delete()
    with pytest.raises(SystemExit, match="schema-copy lacks migrations"):
        schema_check("schema-copy")


def test_a_sqlite_copy_holds_what_the_source_s_write_ahead_log_holds(tmp_path):
    import sqlite3

    from bench.run import sqlite_copy

    source = tmp_path / "schema.sqlite3"
    writer = sqlite3.connect(source)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY)")
    writer.commit()  # in the write-ahead log only, while the connection stays open
    try:
        sqlite_copy(str(source), tmp_path / "copy.sqlite3")
    finally:
        writer.close()
    copy = sqlite3.connect(tmp_path / "copy.sqlite3")
    try:
        tables = copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        copy.close()
    assert tables == [("kept",)]


def test_the_run_s_own_database_is_refused_as_its_template():
    from django.db import connection

    from bench.run import template_copy

    copy = template_copy(connection.settings_dict["NAME"])
    with pytest.raises(SystemExit, match="it is the run's own database"):
        copy.__enter__()
