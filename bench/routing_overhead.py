"""What routing rules and SLA timers add to the ingest benchmark's time.

Runs ``bench/run.py`` as subprocesses without routing, with the rules only (``--routing
rules``), with the SLA policies only (``--routing sla``) and with both (same posts, seed and
batch size), rotating which goes first in each round, and compares the medians of the full
pipeline phase with those of the runs without: posts per second and queries per batch. On
SQLite always; on PostgreSQL too when ``DATABASE_URL`` is given (loopback only). The
PostgreSQL runs use Django's throwaway test database of a name unique to this process
(``test_<name>_routing_<pid>``), so a benchmark running at the same time on the same server
is not clobbered. The schema is migrated once per database, and each run starts from a copy of
it (``run.py --schema-from``): migrating took 20 of a run's 25 seconds on SQLite, so the same
time now buys about four times the rounds, and the runs of a round follow closer in time.

    python bench/routing_overhead.py --posts 10000 --batch 500 [--rounds 3] [--json out.json] \
        [--sections] [--variants rules]

The issue's target: rule evaluation adds at most 10% to the benchmark's time, i.e. the row
"rules only"; the SLA clocks' cost is shown beside it. Figures only: the exit status is 0
whatever the overhead, 1 when a run fails.
"""

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RUN = BENCH_DIR / "run.py"
PHASE = "full pipeline"

sys.path.insert(0, str(REPO_ROOT))
from bench.support import (  # noqa: E402
    POSTGRES_SCHEMES,
    loopback,
    postgres_target,
    throwaway_postgres,
)


def private_database_url(database_url: str) -> str:
    """The same server, a database name of this process's own."""
    parts = urlsplit(database_url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise SystemExit(f"A PostgreSQL URL is needed ({parts.scheme}:// given).")
    if not loopback(parts.hostname):
        raise SystemExit(f"Refusing a database server on {parts.hostname}: loopback only.")
    name = parts.path.lstrip("/") or "scrm"
    return urlunsplit(
        (parts.scheme, parts.netloc, f"/{name}_routing_{os.getpid()}", parts.query, "")
    )


# What each run sets up: nothing, the rules only (the figure: what rule evaluation
# adds), the SLA policies only, and both.
VARIANTS: dict[str, str | None] = {"off": None, "rules": "rules", "sla": "sla", "all": "all"}


def _run(command: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``subprocess.run``, except that a run this process stops (Ctrl-C, ``kill``) is asked to
    stop with SIGTERM, on which it drops its database, rather than killed outright."""
    with subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate()
        except BaseException:
            process.terminate()
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@contextmanager
def migrated_schema(database_url: str | None, folder: Path) -> Iterator[str]:
    """A database migrated once, which every run copies instead of migrating its own (20 s
    of a 25 s run on SQLite): a SQLite file in ``folder``, or a PostgreSQL database on the
    server of ``database_url``, dropped at the end. Yields what ``run.py --schema-from``
    takes."""
    environ = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_URL_FILE")
    }
    environ |= {"SCRM_DATA_DIR": str(folder / "schema"), "DEBUG": "false"}
    command = [sys.executable, str(REPO_ROOT / "manage.py"), "migrate", "--verbosity", "0"]
    with ExitStack() as stack:
        if database_url:
            name = urlsplit(database_url).path.lstrip("/")
            target = postgres_target(database_url, prefix=f"{name}_schema")
            stack.enter_context(throwaway_postgres(target))
            environ["DATABASE_URL"] = target.url
            schema = target.name
        else:
            schema = str(folder / "schema" / "scrm.sqlite3")
        completed = _run(command, environ)
        if completed.returncode != 0:
            raise RuntimeError(f"migrate failed ({completed.returncode}):\n{completed.stderr}")
        yield schema


def run_once(
    *,
    database_url: str | None,
    routing: str | None,
    args: argparse.Namespace,
    folder: Path,
    tag: str,
    schema: str | None = None,
) -> dict[str, Any]:
    output = folder / f"{tag}.json"
    command = [
        sys.executable,
        str(RUN),
        "--posts",
        str(args.posts),
        "--batch",
        str(args.batch),
        "--seed",
        str(args.seed),
        "--json",
        str(output),
    ]
    if routing:
        command += ["--routing", routing]
    if schema:
        command += ["--schema-from", schema]
    if args.sections:
        command.append("--sections")
    environ = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_URL_FILE")
    }
    if database_url:
        environ["DATABASE_URL"] = database_url
    completed = _run(command, environ)
    (folder / f"{tag}.txt").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0 or not output.exists():
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n{tail}")
    figures = json.loads(output.read_text())
    phase = next(p for p in figures["phases"] if p["name"] == PHASE)
    return {
        "posts_per_second": phase["posts_per_second"],
        "seconds": phase["seconds"],
        "cpu_seconds": phase["cpu_seconds"],
        "work_seconds": work_seconds(figures["database"]["vendor"], phase),
        "db_seconds": phase["db_seconds"],
        "queries_per_batch": phase["queries_per_batch_mean"],
        "sample_batch_queries": phase["sample_batch_queries"],
        "vendor": figures["database"]["vendor"],
        "server_version": figures["database"]["server_version"],
        "machine": figures["database"]["machine"],
        "routing": figures["routing"],
        "sections": {part["label"]: part["seconds"] for part in phase.get("sections") or []},
        "deciding": [part["label"] for part in phase.get("sections") or [] if part["deciding"]],
    }


def work_seconds(vendor: str, phase: dict[str, Any]) -> float | None:
    """The CPU time the phase cost the machine: on SQLite this process's, which holds the
    database's work; on PostgreSQL this process's and the server's for its connection, when
    the server runs here. Unlike wall time it leaves out waiting for other processes, but it
    still moves with the machine's speed."""
    if vendor == "sqlite":
        return float(phase["cpu_seconds"])
    server = phase.get("server_cpu_seconds")
    return None if server is None else float(phase["cpu_seconds"]) + float(server)


def paired_overhead(
    without: Sequence[dict[str, Any]], with_: Sequence[dict[str, Any]], key: str
) -> float | None:
    """The median over rounds of each round's ratio, minus one: the runs of one round follow
    each other, so a machine that slows for minutes moves both sides of a ratio alike. None
    when a run lacks the figure."""
    pairs = list(zip(without, with_, strict=True))
    if not pairs or any(off.get(key) is None or run.get(key) is None for off, run in pairs):
        return None
    return statistics.median(run[key] / off[key] for off, run in pairs) - 1


def median_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float] | None:
    """A distribution-free interval for the median of ``values``: the k-th smallest and k-th
    largest, k the largest order such that the median lies outside with probability at most
    ``1 - confidence`` (each value falls on either side of the median with probability one
    half, so the count below it is binomial). Returns the two ends and the interval's exact
    coverage; None when there are too few values for that confidence (fewer than 6 for 95%)."""
    n = len(values)
    tail = (1 - confidence) / 2
    below = 0.0  # P(at most k - 1 of the n values lie below the median)
    k = 0
    while k < n // 2:
        nxt = below + math.comb(n, k) / 2**n
        if nxt > tail:
            break
        below = nxt
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k], 1 - 2 * below


def paired_interval(
    without: Sequence[dict[str, Any]], with_: Sequence[dict[str, Any]], key: str
) -> tuple[float, float, float] | None:
    """The 95% interval of the paired overhead (``paired_overhead``): the ends minus one and
    the coverage. None when a run lacks the figure or the rounds are too few."""
    pairs = list(zip(without, with_, strict=True))
    if not pairs or any(off.get(key) is None or run.get(key) is None for off, run in pairs):
        return None
    interval = median_interval([run[key] / off[key] for off, run in pairs])
    if interval is None:
        return None
    low, high, coverage = interval
    return low - 1, high - 1, coverage


def compare(
    *, label: str, database_url: str | None, args: argparse.Namespace, folder: Path
) -> list[dict[str, Any]]:
    """One row per variant with routing, each against the runs without any."""
    names = ["off", *args.variants]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with migrated_schema(database_url, folder) as schema:
        for round_number in range(args.rounds):
            # Rotate which variant goes first, so a slow start or a warming disk favours none.
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                tag = f"{label}-{name}-{round_number + 1}"
                result = run_once(
                    database_url=database_url,
                    routing=VARIANTS[name],
                    args=args,
                    folder=folder,
                    tag=tag,
                    schema=schema,
                )
                runs[name].append(result)
                print(
                    f"  {label} round {round_number + 1} {name:>5}: "
                    f"{result['posts_per_second']:,.0f} posts/s, "
                    f"{result['queries_per_batch']:.1f} queries/batch",
                    flush=True,
                )

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    def best(name: str, key: str) -> float:
        return min(r[key] for r in runs[name])

    def work(name: str) -> float | None:
        values = [r["work_seconds"] for r in runs[name]]
        return None if None in values else statistics.median(values)

    def paired(name: str, key: str) -> float | None:
        return paired_overhead(runs["off"], runs[name], key)

    rows = []
    for name in names[1:]:
        work_without, work_with = work("off"), work(name)
        rows.append(
            {
                "database": label,
                "variant": name,
                "vendor": runs["off"][0]["vendor"],
                "server_version": runs["off"][0]["server_version"],
                "machine": runs["off"][0]["machine"],
                "posts_per_second_without": median("off", "posts_per_second"),
                "posts_per_second_with": median(name, "posts_per_second"),
                "seconds_without": median("off", "seconds"),
                "seconds_with": median(name, "seconds"),
                "overhead": median(name, "seconds") / median("off", "seconds") - 1,
                "overhead_best": best(name, "seconds") / best("off", "seconds") - 1,
                "overhead_paired": paired(name, "seconds"),
                "overhead_paired_interval": paired_interval(runs["off"], runs[name], "seconds"),
                "cpu_seconds_without": median("off", "cpu_seconds"),
                "cpu_seconds_with": median(name, "cpu_seconds"),
                "cpu_overhead": median(name, "cpu_seconds") / median("off", "cpu_seconds") - 1,
                "work_seconds_without": work_without,
                "work_seconds_with": work_with,
                "work_overhead": (
                    work_with / work_without - 1 if work_with and work_without else None
                ),
                "work_overhead_paired": paired(name, "work_seconds"),
                "work_overhead_paired_interval": paired_interval(
                    runs["off"], runs[name], "work_seconds"
                ),
                "sql_seconds_without": median("off", "db_seconds"),
                "sql_seconds_with": median(name, "db_seconds"),
                "queries_per_batch_without": median("off", "queries_per_batch"),
                "queries_per_batch_with": median(name, "queries_per_batch"),
                "sample_batch_queries_without": median("off", "sample_batch_queries"),
                "sample_batch_queries_with": median(name, "sample_batch_queries"),
                "posts_per_second_runs_without": [r["posts_per_second"] for r in runs["off"]],
                "posts_per_second_runs_with": [r["posts_per_second"] for r in runs[name]],
                "routing": runs[name][0]["routing"],
                "sections": {
                    part: {
                        "seconds_without": statistics.median(
                            r["sections"][part] for r in runs["off"]
                        ),
                        "seconds_with": statistics.median(r["sections"][part] for r in runs[name]),
                    }
                    for part in runs[name][0]["sections"]
                },
                "deciding": runs[name][0]["deciding"],
            }
        )
    return rows


def sections_table(row: dict[str, Any]) -> str:
    """The pipeline's parts (``run.py --sections``), median wall time without and with a
    variant, and what the variant adds to each, against the phase's median time without."""
    base = row["seconds_without"]
    lines = [
        f"{row['database']} {row['variant']}: parts of the pipeline, median ms "
        "(inclusive; indented parts are within the one above)",
        f"  {'part':<40} {'without':>8} {'with':>8} {'added':>8} {'of phase':>9}",
    ]
    deciding = 0.0
    for label, part in row["sections"].items():
        if not part["seconds_without"] and not part["seconds_with"]:
            continue  # not called on this database
        added = part["seconds_with"] - part["seconds_without"]
        mark = "*" if label in row["deciding"] else " "
        if mark == "*":
            deciding += added
        lines.append(
            f"  {label:<39}{mark} {part['seconds_without'] * 1000:>8.1f} "
            f"{part['seconds_with'] * 1000:>8.1f} {added * 1000:>+8.1f} {added / base:>+9.1%}"
        )
    added_in_all = row["seconds_with"] - base
    lines.append(
        f"  * deciding what the rules do: {deciding * 1000:+.1f} ms, {deciding / base:+.1%} of the "
        f"phase; the rest of the {added_in_all * 1000:+.1f} ms the rules add "
        f"({(added_in_all - deciding) / base:+.1%}): writing what they decided, the commit, noise"
    )
    return "\n".join(lines)


def table(rows: Sequence[dict[str, Any]]) -> str:
    headers = [
        "database",
        "with",
        "posts/s without",
        "posts/s with",
        "overhead",
        "best runs",
        "paired",
        "CPU s without",
        "with",
        "CPU overhead",
        "CPU with server s without",
        "with",
        "overhead",
        "paired",
        "queries/batch without",
        "with",
        "SQL s without",
        "with",
    ]
    cells = [
        [
            f"{r['database']} {r['server_version'].split()[0]}",
            {"rules": "rules only", "sla": "SLAs only", "all": "rules + SLAs"}[r["variant"]],
            f"{r['posts_per_second_without']:,.0f}",
            f"{r['posts_per_second_with']:,.0f}",
            f"{r['overhead']:+.1%}",
            f"{r['overhead_best']:+.1%}",
            f"{r['overhead_paired']:+.1%}",
            f"{r['cpu_seconds_without']:.2f}",
            f"{r['cpu_seconds_with']:.2f}",
            f"{r['cpu_overhead']:+.1%}",
            *(
                (
                    f"{r['work_seconds_without']:.2f}",
                    f"{r['work_seconds_with']:.2f}",
                    f"{r['work_overhead']:+.1%}",
                    f"{r['work_overhead_paired']:+.1%}",
                )
                if r["work_overhead"] is not None and r["work_overhead_paired"] is not None
                else ("-", "-", "-", "-")
            ),
            f"{r['queries_per_batch_without']:.1f}",
            f"{r['queries_per_batch_with']:.1f}",
            f"{r['sql_seconds_without']:.2f}",
            f"{r['sql_seconds_with']:.2f}",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in pairs)

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, cells)])


def intervals(rows: Sequence[dict[str, Any]], rounds: int) -> str:
    """A line per row: the paired overheads' 95% intervals, or why there are none."""
    if not rows:
        return ""
    if median_interval([0.0] * rounds) is None:
        return "paired 95% intervals: need at least 6 rounds (--rounds)."

    def shown(interval: tuple[float, float, float] | None) -> str:
        if interval is None:
            return "-"
        low, high, coverage = interval
        return f"{low:+.1%} to {high:+.1%} ({coverage:.1%})"

    return "\n".join(
        f"{r['database']} {r['variant']}: paired overhead {shown(r['overhead_paired_interval'])}"
        f", CPU with server {shown(r['work_overhead_paired_interval'])}"
        for r in rows
    )


def _variants(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS or name == "off"]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"choose among rules, sla and all (got {text!r}); runs without routing always run"
        )
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare the ingest benchmark without and with routing rules and SLAs."
    )
    parser.add_argument("--posts", type=int, default=10000, help="posts per run (10000)")
    parser.add_argument("--batch", type=int, default=500, help="posts per ingest call (500)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the posts (1)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each kind (3)")
    parser.add_argument(
        "--skip-sqlite", action="store_true", help="only PostgreSQL (needs DATABASE_URL)"
    )
    parser.add_argument(
        "--variants",
        type=_variants,
        default=[name for name in VARIANTS if name != "off"],
        metavar="NAMES",
        help="which runs with routing to compare with those without, comma-separated: "
        "rules, sla, all (all three); 'rules' alone halves the time the comparison takes",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures here")
    parser.add_argument(
        "--sections",
        action="store_true",
        help="also time the pipeline's parts in every run (run.py --sections) and compare them",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    if args.skip_sqlite and not os.environ.get("DATABASE_URL"):
        parser.error("--skip-sqlite needs DATABASE_URL")
    return args


LEGEND = "\n".join(
    (
        "overhead: median time of the phase with the rules, the SLA policies or both over the "
        "median without any, minus one;",
        "the issue's target is on 'rules only': rule evaluation adds at most +10%;",
        "best runs: the same from the fastest run of each kind, the least disturbed by other "
        "work on the machine;",
        "paired: the median over rounds of each round's ratio, runs close in time compared with "
        "each other;",
        "CPU: this process's CPU time in the phase (on PostgreSQL the server's is not in it);",
        "CPU with server: that and, on PostgreSQL, the CPU time of the server's process for the "
        "connection (when the server",
        "runs on this machine): the work, without the time spent waiting for other processes;",
        "queries/batch: mean over all batches, transaction control left out; SQL s: time spent "
        "executing SQL;",
        "paired 95% interval: where the median of the rounds' ratios lies, distribution-free "
        "(order statistics of the ratios),",
        "with its exact coverage in brackets: the target is met with that confidence when the "
        "whole interval lies under +10%.",
    )
)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain `kill` unwinds like Ctrl-C does, so the migrated template database is dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    targets: list[tuple[str, str | None]] = []
    if not args.skip_sqlite:
        targets.append(("sqlite", None))
    if database_url := os.environ.get("DATABASE_URL"):
        targets.append(("postgresql", private_database_url(database_url)))

    rows = []
    with tempfile.TemporaryDirectory(prefix="scrm-routing-overhead-") as folder:
        try:
            for label, url in targets:
                rows += compare(label=label, database_url=url, args=args, folder=Path(folder))
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1

    print()
    print(
        f"Full pipeline phase of bench/run.py, {args.posts} posts in batches of {args.batch}, "
        f"seed {args.seed}; median of {args.rounds} runs each, alternating which goes first."
    )
    if rows:
        print(f"Machine: {rows[-1]['machine']}")
        print(f"Routing: {rows[-1]['routing']['setup']}")
        print(f"Not exercised: {rows[-1]['routing']['left_out']}")
    print()
    print(table(rows))
    print(intervals(rows, args.rounds))
    print(LEGEND)
    for row in rows:
        print(
            f"{row['database']} {row['variant']} posts/s per run: without "
            + ", ".join(f"{v:,.0f}" for v in row["posts_per_second_runs_without"])
            + "; with "
            + ", ".join(f"{v:,.0f}" for v in row["posts_per_second_runs_with"])
        )
    if args.sections:
        for row in rows:
            print()
            print(sections_table(row))
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": rows}, indent=2)
            + "\n"
        )
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
