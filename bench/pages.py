"""Server-side latency of the inbox and conversation pages on a large generated data set.

The issue's target: with 10^6 conversations and 10^7 messages, the inbox (first page and a deep
page, with two filters) and the page of a 500-message conversation render in p95 <= 50 ms with
a fixed number of queries.

The data is generated inside PostgreSQL with set-based ``INSERT ... SELECT ... FROM
generate_series(...)`` into a freshly migrated throwaway database: four channels (two visible to
the measured agent's team), two teams of agents, an admin, contacts, conversations over a year
(mostly resolved or closed, ``--active-share`` still active), messages in time order, tags on
some conversations, timeline events, and one conversation of 500 messages. The secondary
indexes are dropped for the load and rebuilt from their own definitions afterwards; then
``VACUUM (ANALYZE)``.

Pages are requested in-process through Django's test client, logged in as the agent and as the
admin, with DEBUG off: a few warm-up requests, then ``--repeat`` timed ones (p50/p95/max), and
one more under ``CaptureQueriesContext`` for the number of queries and their database time. The
deep page is reached by following the keyset cursor ``--depth`` pages, then requested
repeatedly. ``EXPLAIN (ANALYZE, BUFFERS)`` of the main inbox query of the deep page and of the
counts query follows the table.

The database ``scrm_pages_<pid>`` is created on the PostgreSQL server of ``DATABASE_URL``
(loopback only; default ``postgres://postgres@127.0.0.1:5432/postgres``; the database the URL
names is never opened, only the server's ``postgres`` database to create and drop the
throwaway one) and dropped at the end, with the temporary ``SCRM_DATA_DIR``, on every exit
path: normal end, error, Ctrl-C, ``kill``, or the time budget (``--budget``) running out.

    python bench/pages.py --conversations 100000 --messages-per-conversation 10 [--json out.json]
"""

import argparse
import cProfile
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

# Run as a file (python bench/x.py), the repository root is not on the path yet.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import (
    RunOverdue,
    overdue,
    postgres_target,
    restore_environ,
    shield_teardown,
    terminated,
    throwaway_postgres,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# Settings read from the environment that could point this process at real data or change
# what is measured: each is set here or removed, with its ``<NAME>_FILE`` variant.
CONTROLLED_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SCRM_DATA_DIR",
    "SECRET_KEY",
    "SCRM_ENCRYPTION_KEYS",
    "DJANGO_ENV",
    "DEBUG",
    "ALLOWED_HOSTS",
    "LOG_LEVEL",
    "DB_CONN_MAX_AGE",
    "SCRM_INBOX_PAGE_SIZE",
)
TARGET_P95_MS = 50.0
BIG_CONVERSATION_MESSAGES = 500
MIN_CONVERSATIONS = 1000
MESSAGE_ROWS_PER_STATEMENT = 250_000

# Channels: name, platform, mode, share of the conversations, index of the team that sees it.
# The measured agent is on team 0, which sees the first two.
CHANNELS = (
    ("Bench X support", "x", "engage", 0.50, 0),
    ("Bench Facebook page", "facebook", "engage", 0.20, 0),
    ("Bench X brand", "x", "engage", 0.20, 1),
    ("Bench Facebook listening", "facebook", "listen", 0.10, 1),
)
TEAMS = ("Bench support", "Bench brand")
AGENTS_PER_TEAM = 8
ACTIVE_STATUSES = (("new", 0.20), ("open", 0.45), ("pending", 0.25), ("escalated", 0.10))
DONE_STATUSES = (("resolved", 0.75), ("closed", 0.25))
PRIORITY_SHARES = (0.10, 0.70, 0.15, 0.05)  # low, normal, high, urgent
ACTIVE_WINDOW_DAYS = 30  # active conversations had activity in the last month
MONITORING_SHARE = 0.03
UNASSIGNED_ACTIVE_SHARE = 0.5
TAGGED_ONE_IN = 5  # about one conversation in five carries tags, a third of those two
TAGS = (
    ("billing", "#0ea5e9"),
    ("delivery", "#f59e0b"),
    ("refund", "#ef4444"),
    ("bug", "#8b5cf6"),
    ("praise", "#22c55e"),
    ("vip", "#eab308"),
    ("lead", "#14b8a6"),
    ("spam", "#64748b"),
)
SUBJECTS = ("Order", "Refund", "Delivery", "Account", "Feedback", "Invoice", "Login", "Size")
INBOUND_TEXTS = (
    "Hi, my order has not arrived yet, can you check what is going on?",
    "I was charged twice this month, please refund one of the payments.",
    "Is the blue jacket back in stock in size M?",
    "The app keeps logging me out since the last update.",
    "Still waiting for an answer about my refund, it has been a week.",
    "Do you ship to Belgium, and how long does it take?",
    "Love the new collection, great work!",
    "My discount code does not work at checkout.",
)
OUTBOUND_TEXTS = (
    "Thanks for reaching out! Could you send us your order number in a DM?",
    "Sorry about that. We have refunded the duplicate payment, it shows in 3-5 days.",
    "It is back next week; we can let you know as soon as it is in.",
    "Thanks for the report, our team is on it. Updating the app should help meanwhile.",
    "We ship to Belgium, delivery takes 2 to 4 working days.",
    "Thank you so much, we are glad you like it!",
)
FIRST_NAMES = ("Alex", "Sam", "Maria", "Jonas", "Lea", "Omar", "Yuki", "Ines", "Tom", "Nora")
LAST_NAMES = ("Martin", "Schmidt", "Rossi", "Dubois", "Novak", "Silva", "Berg", "Kowalski")


# --- Throwaway environment ---------------------------------------------------------------


def _switch_environment(data_dir: Path, database_url: str) -> None:
    """This process's settings point at the throwaway folder and database only. Must run
    before Django reads its settings."""
    for key in list(os.environ):
        base = key[: -len("_FILE")] if key.endswith("_FILE") else key
        if base in CONTROLLED_VARIABLES:
            del os.environ[key]
    os.environ.update(
        {
            "SCRM_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "scrm.settings",
            "DJANGO_ENV": "development",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            # One connection for the whole run, as a busy server keeps it: no reconnect
            # in the middle of the timed requests.
            "DB_CONN_MAX_AGE": "3600",
        }
    )
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def _close_django_connections() -> None:
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        with suppress(Exception):  # a connection cut short mid-statement may refuse to close
            conn.close()


@contextmanager
def throwaway_environment(server_url: str) -> Iterator[str]:
    """Temporary data folder and database, both removed at the end; yields a description."""
    caller = dict(os.environ)
    target = postgres_target(server_url, prefix="scrm_pages")
    data_dir = Path(tempfile.mkdtemp(prefix="scrm-pages-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        version = stack.enter_context(throwaway_postgres(target))
        stack.callback(restore_environ, caller)
        stack.callback(_close_django_connections)
        stack.callback(shield_teardown)  # runs first on the way out
        _switch_environment(data_dir, target.url)
        yield f"PostgreSQL {version}, throwaway database '{target.name}'"


# --- Generation --------------------------------------------------------------------------


@dataclass
class World:
    admin_id: int
    agent_id: int
    channel_ids: list[int]
    team_ids: list[int]
    agent_ids: list[int]  # AGENTS_PER_TEAM per team, team by team; the agent is the first
    tag_ids: list[int]


@dataclass
class Generated:
    conversations: int
    messages: int
    contacts: int
    tagged_links: int
    events: int
    big_conversation_id: int
    big_conversation_messages: int
    status_counts: dict[str, int]
    steps_seconds: dict[str, float]
    sizes_mb: dict[str, float]
    fk_checks_during_load: bool


def _thresholds(shares: Sequence[float]) -> list[float]:
    """Inner bucket bounds for ``width_bucket``: 1 + width_bucket(r, bounds) picks item i with
    probability shares[i]."""
    total = sum(shares)
    bounds, running = [], 0.0
    for share in shares[:-1]:
        running += share / total
        bounds.append(running)
    return bounds


def create_world() -> World:
    """The few rows best made through the models: groups, users, teams, channels, access."""
    from django.contrib.auth.models import Group, User

    from channels_ingest.models import ChannelAccount
    from conversations.models import Tag
    from governance.models import ChannelAccess, Role, Team, TeamMembership

    teams = [Team.objects.create(name=name, slug=name.lower().replace(" ", "-")) for name in TEAMS]
    agent_group = Group.objects.get(name=Role.AGENT)
    admin = User(username="pages-admin", first_name="Ada", last_name="Admin", is_staff=True)
    admin.set_unusable_password()
    admin.save()
    admin.groups.add(Group.objects.get(name=Role.ADMIN))
    agent_ids: list[int] = []
    for team_index, team in enumerate(teams):
        for number in range(AGENTS_PER_TEAM):
            name = "pages-agent" if not agent_ids else f"agent-{team_index}-{number}"
            user = User(username=name, first_name=f"Agent {team_index}.{number}")
            user.set_unusable_password()
            user.save()
            user.groups.add(agent_group)
            TeamMembership.objects.create(team=team, user=user)
            agent_ids.append(user.pk)
    channel_ids = []
    for name, platform_name, mode, _share, team_index in CHANNELS:
        channel = ChannelAccount.objects.create(
            platform=platform_name,
            name=name,
            handle=name.lower().replace(" ", "_"),
            mode=mode,
            default_team=teams[team_index],
            is_active=False,  # nothing polls here, but keep it that way
        )
        ChannelAccess.objects.create(channel=channel, team=teams[team_index])
        channel_ids.append(channel.pk)
    tags = [Tag.objects.create(name=name, color=color) for name, color in TAGS]
    return World(
        admin_id=admin.pk,
        agent_id=agent_ids[0],
        channel_ids=channel_ids,
        team_ids=[t.pk for t in teams],
        agent_ids=agent_ids,
        tag_ids=[t.pk for t in tags],
    )


CONVERSATION_COLUMNS = (
    "id",
    "status",
    "priority",
    "subject",
    "thread_key",
    "is_monitoring",
    "sentiment",
    "message_count",
    "inbound_count",
    "last_message_preview",
    "last_message_direction",
    "created_at",
    "updated_at",
    "last_message_at",
    "last_inbound_at",
    "waiting_since",
    "first_response_at",
    "resolved_at",
    "assignee_id",
    "channel_id",
    "contact_id",
    "team_id",
)
MESSAGE_COLUMNS = (
    "direction",
    "kind",
    "external_id",
    "in_reply_to_external_id",
    "body",
    "language",
    "sentiment",
    "created_at",
    "received_at",
    "sent_at",
    "delivery_status",
    "error",
    "raw",
    "keywords",
    "author_identity_id",
    "author_user_id",
    "channel_id",
    "conversation_id",
)
CONTACT_COLUMNS = (
    "id",
    "name",
    "email",
    "phone",
    "company",
    "is_vip",
    "attributes",
    "external_crm_id",
    "external_crm_url",
    "first_seen_at",
    "last_seen_at",
    "created_at",
    "updated_at",
)
IDENTITY_COLUMNS = (
    "id",
    "platform",
    "platform_user_id",
    "handle",
    "display_name",
    "profile_url",
    "followers_count",
    "verified",
    "created_at",
    "updated_at",
    "contact_id",
)
TAG_LINK_COLUMNS = ("conversation_id", "tag_id")
EVENT_COLUMNS = ("conversation_id", "kind", "actor_id", "data", "created_at")
LOADED_TABLES = {
    "conversations_conversation": CONVERSATION_COLUMNS,
    "conversations_message": MESSAGE_COLUMNS,
    "contacts_contact": CONTACT_COLUMNS,
    "contacts_socialidentity": IDENTITY_COLUMNS,
    "conversations_conversation_tags": TAG_LINK_COLUMNS,
    "conversations_conversationevent": EVENT_COLUMNS,
}

# The text of message k (1-based; odd ones inbound) of conversation n.
MESSAGE_BODY_SQL = """CASE WHEN mod({k}, 2) = 1
    THEN (%(inbound_texts)s::text[])[1 + mod({n} + {k}, {inbound_count})]
    ELSE (%(outbound_texts)s::text[])[1 + mod({n} * 7 + {k}, {outbound_count})] END"""


def _body_sql(n: str, k: str) -> str:
    return MESSAGE_BODY_SQL.format(
        n=n, k=k, inbound_count=len(INBOUND_TEXTS), outbound_count=len(OUTBOUND_TEXTS)
    )


# Layer 1 draws the random numbers once per row of generate_series, n (OFFSET 0 keeps the
# planner from inlining the subquery, which would draw again for each use); layer 2 decides
# status, channel, times and size; layer 3 derives the columns that depend on those; the last
# numbers the rows in the order they were created, as ids are given in production, so the
# conversations still active are the recent ones, near the end of the table (or, with
# ``--id-order random``, in the order drawn: active rows spread over the whole table).
CONVERSATIONS_SQL = """
INSERT INTO conversations_conversation ({columns})
SELECT id, status, priority,
       (%(subjects)s::text[])[1 + mod(id, {subject_count})] || ' #' || id,
       'bench-thread-' || n,
       is_monitoring, sentiment, mc, (mc + 1) / 2,
       left({preview}, 280),
       CASE WHEN mod(mc, 2) = 1 THEN 'in' ELSE 'out' END,
       lma - span, lma, lma,
       CASE WHEN mod(mc, 2) = 1 THEN lma ELSE lma - step END,
       CASE WHEN active AND status <> 'pending' AND mod(mc, 2) = 1 THEN lma END,
       CASE WHEN mc > 1 THEN lma - span + step END,
       CASE WHEN NOT active THEN lma END,
       assignee_id, channel_id, contact_id, team_id
FROM (
  SELECT row_number() OVER (ORDER BY {id_order}) AS id, *
  FROM (
    SELECT *, span / greatest(mc - 1, 1) AS step
    FROM (
        SELECT n, active, is_monitoring, sentiment, contact_id,
               CASE WHEN n = %(big_draw)s THEN 'open'
                    WHEN active THEN (%(active_statuses)s::text[])
                                     [1 + width_bucket(r3, %(active_bounds)s::float8[])]
                    ELSE (%(done_statuses)s::text[])
                         [1 + width_bucket(r3, %(done_bounds)s::float8[])] END AS status,
               (1 + width_bucket(r8, %(priority_bounds)s::float8[]))::smallint AS priority,
               CASE WHEN n = %(big_draw)s THEN %(now)s - interval '2 hours'
                    WHEN active THEN %(now)s - r4 * r4 * interval '{active_days} days'
                    ELSE %(now)s - r4 * interval '365 days' END AS lma,
               CASE WHEN n = %(big_draw)s THEN interval '60 days'
                    ELSE r6 * interval '3 days' END AS span,
               CASE WHEN n = %(big_draw)s THEN {big_messages}
                    ELSE 1 + floor(r5 * (2 * %(per_conversation)s - 1))::int END AS mc,
               (%(channel_ids)s::bigint[])[channel_slot] AS channel_id,
               (%(channel_team_ids)s::bigint[])[channel_slot] AS team_id,
               CASE WHEN active AND r12 < %(unassigned_share)s THEN NULL
                    ELSE (%(agent_ids)s::int[])[
                        (%(channel_team_slots)s::int[])[channel_slot] * {agents_per_team}
                        + 1 + floor(r13 * {agents_per_team})::int] END AS assignee_id
        FROM (
            SELECT n, r3, r4, r5, r6, r8, r12, r13,
                   n <> %(big_draw)s AND r2 < %(active_share)s OR n = %(big_draw)s AS active,
                   CASE WHEN n = %(big_draw)s THEN 1
                        ELSE 1 + width_bucket(r1, %(channel_bounds)s::float8[]) END
                       AS channel_slot,
                   n <> %(big_draw)s AND r11 < %(monitoring_share)s AS is_monitoring,
                   CASE WHEN r9 < 0.2 THEN NULL ELSE round((r10 * 2 - 1)::numeric, 3)::float8 END
                       AS sentiment,
                   1 + floor(r7 * %(contacts)s)::bigint AS contact_id
            FROM (
                SELECT n, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                       random() AS r5, random() AS r6, random() AS r7, random() AS r8,
                       random() AS r9, random() AS r10, random() AS r11, random() AS r12,
                       random() AS r13
                FROM generate_series(1, %(conversations)s) AS n
                OFFSET 0
            ) AS draws
            OFFSET 0
        ) AS picks
        OFFSET 0
    ) AS shaped
    OFFSET 0
  ) AS derived
) AS numbered
"""

# Message k of a conversation is at created_at + (last_message_at - created_at) * (k-1)/(mc-1),
# so the last one is at last_message_at; odd ones come from the customer, even ones are our
# replies. Each statement takes a range of conversations and stores its messages in time
# order, so one conversation's messages lie apart on disk, as arrival order puts them.
MESSAGES_SQL = """
INSERT INTO conversations_message ({columns})
SELECT CASE WHEN m.inbound THEN 'in' ELSE 'out' END,
       CASE WHEN NOT m.inbound THEN 'reply' WHEN mod(c.id, 3) = 0 THEN 'dm' ELSE 'comment' END,
       'bench-' || c.id || '-' || k,
       CASE WHEN k > 1 THEN 'bench-' || c.id || '-' || (k - 1) ELSE '' END,
       {body},
       'en',
       CASE WHEN m.inbound THEN round((random() * 2 - 1)::numeric, 3)::float8 END,
       m.at, m.at,
       CASE WHEN NOT m.inbound THEN m.at END,
       CASE WHEN m.inbound THEN 'received' ELSE 'sent' END,
       '', '{{}}'::jsonb, '[]'::jsonb,
       CASE WHEN m.inbound THEN c.contact_id END,
       CASE WHEN m.inbound THEN NULL
            WHEN c.assignee_id IS NOT NULL THEN c.assignee_id
            WHEN c.team_id = %(first_team_id)s THEN %(first_team_agent)s
            ELSE %(second_team_agent)s END,
       c.channel_id, c.id
FROM conversations_conversation AS c
CROSS JOIN LATERAL generate_series(1, c.message_count) AS k
CROSS JOIN LATERAL (
    SELECT mod(k, 2) = 1 AS inbound,
           c.created_at + (c.last_message_at - c.created_at)
               * ((k - 1)::float8 / greatest(c.message_count - 1, 1)) AS at
) AS m
WHERE c.id BETWEEN %(low)s AND %(high)s
ORDER BY m.at
"""

# One contact per three conversations; each with one social identity of the same id. Seen
# times come from their conversations.
CONTACTS_SQL = """
INSERT INTO contacts_contact ({columns})
SELECT g,
       (%(first_names)s::text[])[1 + mod(g, {first_count})] || ' '
           || (%(last_names)s::text[])[1 + mod(g / {first_count}, {last_count})] || ' ' || g,
       CASE WHEN mod(g, 4) = 0 THEN 'customer' || g || '@example.com' ELSE '' END,
       '',
       CASE WHEN mod(g, 10) = 0 THEN 'Company ' || mod(g, 997) ELSE '' END,
       mod(g, 50) = 0,
       '{{}}'::jsonb, '', '',
       coalesce(s.first_at, %(now)s - interval '365 days'),
       coalesce(s.last_at, %(now)s - interval '365 days'),
       coalesce(s.first_at, %(now)s - interval '365 days'),
       coalesce(s.last_at, %(now)s - interval '365 days')
FROM generate_series(1, %(contacts)s) AS g
LEFT JOIN (
    SELECT contact_id, min(created_at) AS first_at, max(last_message_at) AS last_at
    FROM conversations_conversation GROUP BY contact_id
) AS s ON s.contact_id = g
ORDER BY g
"""

IDENTITIES_SQL = """
INSERT INTO contacts_socialidentity ({columns})
SELECT id,
       CASE WHEN mod(id, 3) = 0 THEN 'facebook' ELSE 'x' END,
       'bench-user-' || id,
       'customer_' || id,
       name,
       '',
       floor(random() * 5000)::int,
       mod(id, 200) = 0,
       first_seen_at, first_seen_at,
       id
FROM contacts_contact
ORDER BY id
"""

TAG_LINKS_SQL = """
INSERT INTO conversations_conversation_tags ({columns})
SELECT id, (%(tag_ids)s::bigint[])[1 + mod(id, {tag_count})]
FROM conversations_conversation WHERE mod(hashint8(id), {tagged_one_in}) = 0
UNION ALL
SELECT id, (%(tag_ids)s::bigint[])[1 + mod(id + 1 + mod(id / {tag_count}, {tag_count} - 1),
                                          {tag_count})]
FROM conversations_conversation WHERE mod(hashint8(id), {tagged_one_in}) = 0 AND mod(id, 3) = 0
"""


# The timeline, as the services record it: created; assigned (when someone is); one event per
# reply written (the even messages); and the status change that ended the finished ones.
EVENTS_SQL = """
INSERT INTO conversations_conversationevent ({columns})
SELECT id, 'created', NULL, '{{}}'::jsonb, created_at
FROM conversations_conversation
UNION ALL
SELECT id, 'assigned', assignee_id,
       jsonb_build_object('previous', NULL, 'assignee', assignee_id),
       created_at + (last_message_at - created_at) * 0.1
FROM conversations_conversation WHERE assignee_id IS NOT NULL
UNION ALL
SELECT conversation_id, 'reply_sent', author_user_id,
       jsonb_build_object('message_id', id,
                          'first_response', split_part(external_id, '-', 3) = '2'),
       created_at
FROM conversations_message WHERE direction = 'out'
UNION ALL
SELECT id, 'status_changed', assignee_id,
       jsonb_build_object('previous', 'open', 'status', status),
       last_message_at
FROM conversations_conversation WHERE status IN ('resolved', 'closed')
"""


def _check_columns(cursor: Any) -> None:
    """Every NOT NULL column without a default must be among those written, or the load
    would fail halfway: say which, before anything is loaded."""
    missing = []
    for table, columns in LOADED_TABLES.items():
        cursor.execute(
            """SELECT column_name FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = %s
                 AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'""",
            [table],
        )
        missing += [f"{table}.{name}" for (name,) in cursor.fetchall() if name not in columns]
    if missing:
        raise SystemExit(
            "The schema has NOT NULL columns this generator does not fill: "
            + ", ".join(missing)
            + ". Add them to bench/pages.py."
        )


def _secondary_indexes(cursor: Any, table: str) -> list[tuple[str, str]]:
    """(name, definition) of the table's indexes that back no constraint."""
    cursor.execute(
        """SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
           FROM pg_index AS i
           WHERE i.indrelid = %s::regclass
             AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
           ORDER BY 1""",
        [table],
    )
    return [(str(name), str(definition)) for name, definition in cursor.fetchall()]


def _progress(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def generate(
    world: World,
    *,
    conversations: int,
    per_conversation: int,
    active_share: float,
    id_order: str,
    seed: float,
) -> Generated:
    from django.db import DatabaseError, connection

    contacts = max(1, conversations // 3)
    big_draw = conversations // 2  # the row of generate_series that becomes the big one
    steps: dict[str, float] = {}
    common: dict[str, Any] = {
        "now": datetime.now(UTC),
        "seed": seed,
        "conversations": conversations,
        "contacts": contacts,
        "per_conversation": per_conversation,
        "big_draw": big_draw,
        "active_share": active_share,
        "monitoring_share": MONITORING_SHARE,
        "unassigned_share": UNASSIGNED_ACTIVE_SHARE,
        "subjects": list(SUBJECTS),
        "inbound_texts": list(INBOUND_TEXTS),
        "outbound_texts": list(OUTBOUND_TEXTS),
        "first_names": list(FIRST_NAMES),
        "last_names": list(LAST_NAMES),
        "active_statuses": [s for s, _ in ACTIVE_STATUSES],
        "active_bounds": _thresholds([w for _, w in ACTIVE_STATUSES]),
        "done_statuses": [s for s, _ in DONE_STATUSES],
        "done_bounds": _thresholds([w for _, w in DONE_STATUSES]),
        "priority_bounds": _thresholds(PRIORITY_SHARES),
        "channel_bounds": _thresholds([c[3] for c in CHANNELS]),
        "channel_ids": world.channel_ids,
        "channel_team_ids": [world.team_ids[c[4]] for c in CHANNELS],
        "channel_team_slots": [c[4] for c in CHANNELS],
        "agent_ids": world.agent_ids,
        "tag_ids": world.tag_ids,
        "first_team_id": world.team_ids[0],
        "first_team_agent": world.agent_ids[0],
        "second_team_agent": world.agent_ids[AGENTS_PER_TEAM],
    }

    @contextmanager
    def step(name: str) -> Iterator[None]:
        _progress(f"{name} ...")
        started = time.perf_counter()
        yield
        steps[name] = time.perf_counter() - started
        _progress(f"{name}: {steps[name]:.1f} s")

    with connection.cursor() as cursor:
        _check_columns(cursor)
        cursor.execute("SET work_mem = '256MB'")
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET synchronous_commit = off")
        # Foreign keys: the rows are consistent by construction; skipping the per-row checks
        # (superusers only) makes the load several times faster. Without, they still run.
        try:
            cursor.execute("SET session_replication_role = replica")
            fk_checks = False
        except DatabaseError:  # not a superuser: keep the checks
            fk_checks = True
        cursor.execute("SELECT setseed(%s)", [seed])

        dropped: list[tuple[str, str]] = []
        with step("drop secondary indexes"):
            for table in LOADED_TABLES:
                for name, definition in _secondary_indexes(cursor, table):
                    cursor.execute(f"DROP INDEX {name}")
                    dropped.append((name, definition))

        with step(f"conversations ({conversations:,})"):
            cursor.execute(
                CONVERSATIONS_SQL.format(
                    columns=", ".join(CONVERSATION_COLUMNS),
                    subject_count=len(SUBJECTS),
                    preview=_body_sql("id", "mc"),
                    id_order="n" if id_order == "random" else "lma - span, n",
                    active_days=ACTIVE_WINDOW_DAYS,
                    big_messages=BIG_CONVERSATION_MESSAGES,
                    agents_per_team=AGENTS_PER_TEAM,
                ),
                common,
            )

        with step(f"contacts and identities ({contacts:,})"):
            cursor.execute(
                CONTACTS_SQL.format(
                    columns=", ".join(CONTACT_COLUMNS),
                    first_count=len(FIRST_NAMES),
                    last_count=len(LAST_NAMES),
                ),
                common,
            )
            cursor.execute(IDENTITIES_SQL.format(columns=", ".join(IDENTITY_COLUMNS)), common)

        with step("tags"):
            cursor.execute(
                TAG_LINKS_SQL.format(
                    columns=", ".join(TAG_LINK_COLUMNS),
                    tag_count=len(world.tag_ids),
                    tagged_one_in=TAGGED_ONE_IN,
                ),
                common,
            )
            tagged_links = cursor.rowcount

        messages = 0
        with step(f"messages (~{conversations * per_conversation:,})"):
            chunk = max(1, MESSAGE_ROWS_PER_STATEMENT // per_conversation)
            statement = MESSAGES_SQL.format(
                columns=", ".join(MESSAGE_COLUMNS), body=_body_sql("c.id", "k")
            )
            reported = 0.0
            for low in range(1, conversations + 1, chunk):
                high = min(conversations, low + chunk - 1)
                cursor.execute(statement, {**common, "low": low, "high": high})
                messages += cursor.rowcount
                done = high / conversations
                if done - reported >= 0.1 or high == conversations:
                    reported = done
                    _progress(f"  messages: {messages:,} ({done:.0%})")

        with step("timeline events"):
            cursor.execute(EVENTS_SQL.format(columns=", ".join(EVENT_COLUMNS)))
            events = cursor.rowcount

        with step(f"rebuild {len(dropped)} indexes"):
            for name, definition in dropped:
                started = time.perf_counter()
                cursor.execute(definition)
                _progress(f"  {name}: {time.perf_counter() - started:.1f} s")

        with step("sequences"):
            for table in LOADED_TABLES:
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
        cursor.execute("RESET session_replication_role")
        cursor.execute("SET synchronous_commit = on")

        # As autovacuum would have by then: visibility map and hint bits set, statistics
        # fresh. Done now so that it does not start in the middle of the timed requests.
        with step("VACUUM (ANALYZE)"):
            cursor.execute("VACUUM (ANALYZE)")
        with suppress(DatabaseError):  # superusers (or pg_checkpoint) only
            cursor.execute("CHECKPOINT")  # dirty pages written now rather than while timing

        cursor.execute(
            "SELECT status, count(*) FROM conversations_conversation GROUP BY 1 ORDER BY 2 DESC"
        )
        status_counts = {str(s): int(n) for s, n in cursor.fetchall()}
        cursor.execute(
            "SELECT id, message_count FROM conversations_conversation WHERE thread_key = %s",
            [f"bench-thread-{big_draw}"],
        )
        big_id, big_messages = (int(value) for value in cursor.fetchone())
        sizes: dict[str, float] = {}
        for table in LOADED_TABLES:
            cursor.execute(
                "SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass)",
                [table, table],
            )
            heap, indexes = cursor.fetchone()
            sizes[f"{table} (heap)"] = round(heap / 2**20, 1)
            sizes[f"{table} (indexes)"] = round(indexes / 2**20, 1)
        cursor.execute("SELECT pg_database_size(current_database())")
        sizes["database"] = round(cursor.fetchone()[0] / 2**20, 1)

    return Generated(
        conversations=conversations,
        messages=messages,
        contacts=contacts,
        tagged_links=tagged_links,
        events=events,
        big_conversation_id=big_id,
        big_conversation_messages=big_messages,
        status_counts=status_counts,
        steps_seconds={k: round(v, 2) for k, v in steps.items()},
        sizes_mb=sizes,
        fk_checks_during_load=fk_checks,
    )


# --- Measuring ---------------------------------------------------------------------------


@dataclass
class Figure:
    page: str
    user: str
    url: str
    htmx: bool
    samples: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float
    cpu_p50_ms: float  # this process's CPU time per request: Python's share, less sensitive
    cpu_p95_ms: float  # to other work on the machine than the wall-clock figures
    queries: int
    sql_ms: float  # database time of the captured request, as Django measured it
    rows: int  # conversations (inbox) or messages (conversation page) on the page
    bytes: int
    query_sql: list[str] = field(default_factory=list, repr=False)
    query_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def met(self) -> bool:
        return self.p95_ms <= TARGET_P95_MS


def _percentile(sorted_values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below."""
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


ROW_MARKERS = {
    "inbox": 'data-conversation="',
    "conversation": '<li class="msg ',
    "poll": 'hx-swap-oob="true"',  # the view counts
}
CURSOR_RE = re.compile(r"after=([A-Za-z0-9_\-]+=*)")


class PageFailed(RuntimeError):
    pass


def _get(client: Any, url: str, htmx: bool) -> Any:
    headers = {"HX-Request": "true"} if htmx else {}
    response = client.get(url, headers=headers)
    if response.status_code != 200:
        raise PageFailed(f"GET {url} answered {response.status_code}")
    return response


def measure(
    client: Any,
    *,
    page: str,
    user: str,
    url: str,
    kind: str,
    repeat: int,
    warmup: int,
    htmx: bool = False,
) -> Figure:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(warmup):
        _get(client, url, htmx)
    timings, cpu = [], []
    for _ in range(repeat):
        cpu_started = time.thread_time()
        started = time.perf_counter()
        response = _get(client, url, htmx)
        timings.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - cpu_started) * 1000)
    with CaptureQueriesContext(connection) as captured:
        response = _get(client, url, htmx)
    content = response.content.decode()
    timings.sort()
    cpu.sort()
    return Figure(
        page=page,
        user=user,
        url=url,
        htmx=htmx,
        samples=repeat,
        p50_ms=round(_percentile(timings, 0.50), 2),
        p95_ms=round(_percentile(timings, 0.95), 2),
        max_ms=round(timings[-1], 2),
        mean_ms=round(sum(timings) / len(timings), 2),
        cpu_p50_ms=round(_percentile(cpu, 0.50), 2),
        cpu_p95_ms=round(_percentile(cpu, 0.95), 2),
        queries=len(captured.captured_queries),
        sql_ms=round(sum(float(q["time"]) for q in captured.captured_queries) * 1000, 2),
        rows=content.count(ROW_MARKERS[kind]),
        bytes=len(response.content),
        query_sql=[q["sql"] for q in captured.captured_queries],
        query_ms=[round(float(q["time"]) * 1000, 2) for q in captured.captured_queries],
    )


def walk_cursor(client: Any, base_url: str, depth: int) -> tuple[str, int]:
    """Follow "Load more" (the htmx request a browser makes) ``depth`` pages down, or to the
    last page; returns that page's URL and how many pages down it is."""
    url, reached = base_url, 0
    while reached < depth:
        content = _get(client, url, htmx=reached > 0).content.decode()
        match = CURSOR_RE.search(content)
        if not match:
            break
        url = f"{base_url}&after={match.group(1)}"
        reached += 1
    return url, reached


def queries_by_page_size(client: Any, url: str, sizes: Sequence[int]) -> dict[int, int]:
    """The number of queries of the same page at several page sizes: a fixed number means no
    query per row."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings

    counts = {}
    for size in sizes:
        with override_settings(SCRM_INBOX_PAGE_SIZE=size):
            # Once first, so that each size finds the navigation's counts counted as the one
            # before it did (the rows timed before may have left them uncounted).
            _get(client, url, htmx=False)
            with CaptureQueriesContext(connection) as c:
                _get(client, url, htmx=False)
        counts[size] = len(c.captured_queries)
    return counts


# --- EXPLAIN -----------------------------------------------------------------------------


@dataclass
class Plan:
    title: str
    sql: str
    text: str
    execution_ms: float
    planning_ms: float
    seq_scans: list[str]
    indexes: list[str]
    sorts: list[str]


def _walk_plan(node: dict[str, Any], found: dict[str, list[str]]) -> None:
    kind = node.get("Node Type", "")
    relation = node.get("Relation Name", "")
    rows = f"{node.get('Actual Rows', '?')} rows x {node.get('Actual Loops', '?')} loops"
    if kind == "Seq Scan":
        found["seq"].append(f"{relation} ({rows})")
    if "Index Name" in node:
        on = f" on {relation}" if relation else ""
        found["index"].append(f"{kind}: {node['Index Name']}{on} ({rows})")
    if kind in ("Sort", "Incremental Sort"):
        method = node.get("Sort Method", "")
        found["sort"].append(f"{kind} {method} {node.get('Sort Space Used', '')} kB ({rows})")
    for child in node.get("Plans", []):
        _walk_plan(child, found)


def explain(title: str, sql: str) -> Plan:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
        document = cursor.fetchone()[0]
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        text = "\n".join(str(row[0]) for row in cursor.fetchall())
    root = (json.loads(document) if isinstance(document, str) else document)[0]
    found: dict[str, list[str]] = {"seq": [], "index": [], "sort": []}
    _walk_plan(root["Plan"], found)
    return Plan(
        title=title,
        sql=sql,
        text=text,
        execution_ms=float(root.get("Execution Time", 0.0)),
        planning_ms=float(root.get("Planning Time", 0.0)),
        seq_scans=found["seq"],
        indexes=found["index"],
        sorts=found["sort"],
    )


def _find_query(sqls: Sequence[str], test: Callable[[str], bool]) -> str | None:
    return next((sql for sql in sqls if test(sql)), None)


def _is_inbox_query(sql: str) -> bool:
    # The rows are read with values(): the ORDER BY names their select-list positions.
    return (
        sql.startswith("SELECT")
        and 'FROM "conversations_conversation"' in sql
        and " ORDER BY " in sql
        and " LIMIT " in sql
        and "COUNT(" not in sql
    )


def _is_counts_query(sql: str) -> bool:
    return 'FROM "conversations_conversation"' in sql and "COUNT(" in sql and "FILTER" in sql


def _is_thread_query(sql: str) -> bool:
    return 'FROM "conversations_message"' in sql and "ORDER BY" in sql


def _is_timeline_query(sql: str) -> bool:
    return 'FROM "conversations_conversationevent"' in sql


# --- Report ------------------------------------------------------------------------------


def table(figures: Sequence[Figure]) -> str:
    head = (
        f"{'page':<40} {'user':<5} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'CPU p50':>7} "
        f"{'queries':>7} {'SQL ms':>6} {'rows':>4} {'KiB':>4}  p95<={TARGET_P95_MS:.0f}"
    )
    lines = [head, "-" * len(head)]
    for f in figures:
        lines.append(
            f"{f.page:<40} {f.user:<5} {f.p50_ms:7.1f} {f.p95_ms:7.1f} {f.max_ms:7.1f} "
            f"{f.cpu_p50_ms:7.1f} {f.queries:7d} {f.sql_ms:6.1f} {f.rows:4d} "
            f"{f.bytes / 1024:4.0f}  "
            f"{'yes' if f.met else 'NO'}"
        )
    return "\n".join(lines)


def plan_digest(plan: Plan) -> str:
    lines = [
        f"{plan.title}: execution {plan.execution_ms:.1f} ms, planning {plan.planning_ms:.1f} ms",
        "  sequential scans: " + ("; ".join(plan.seq_scans) or "none"),
        "  sorts: " + ("; ".join(plan.sorts) or "none"),
    ]
    lines += [f"  {line}" for line in plan.indexes] or ["  indexes: none"]
    return "\n".join(lines)


# --- Entry point -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate a large inbox in a throwaway PostgreSQL database and time the "
        "inbox and conversation pages."
    )
    parser.add_argument(
        "--conversations", type=int, default=1_000_000, help="conversations (1000000)"
    )
    parser.add_argument(
        "--messages-per-conversation",
        type=int,
        default=10,
        help="mean messages per conversation (10); one conversation has 500",
    )
    parser.add_argument(
        "--active-share",
        type=float,
        default=0.05,
        help="share of conversations still active: new, open, pending, escalated (0.05)",
    )
    parser.add_argument(
        "--id-order",
        choices=("created", "random"),
        default="created",
        help="conversation ids in creation order, as production gives them (default), or in "
        "random order: the active ones then lie all over the table",
    )
    parser.add_argument("--repeat", type=int, default=50, help="timed requests per page (50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests first (5)")
    parser.add_argument("--depth", type=int, default=200, help="pages down for the deep page (200)")
    parser.add_argument(
        "--budget",
        type=float,
        default=3600.0,
        help="seconds the run may take before it is stopped and cleaned up (3600)",
    )
    parser.add_argument("--seed", type=float, default=0.42, help="setseed() value (0.42)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL,
        help="the PostgreSQL server to create the throwaway database on (DATABASE_URL, or "
        f"{DEFAULT_SERVER_URL}); the database it names is never opened",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the timing, profile --repeat requests of the inbox's first page and of the "
        "long conversation as the agent with cProfile, into DIR/inbox.prof and "
        "DIR/conversation.prof (read them with python -m pstats)",
    )
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.conversations < MIN_CONVERSATIONS:
        parser.error(f"--conversations must be at least {MIN_CONVERSATIONS}")
    if args.messages_per_conversation < 1:
        parser.error("--messages-per-conversation must be at least 1")
    if not 0.0 < args.active_share <= 1.0:
        parser.error("--active-share must be in (0, 1]")
    if args.repeat < 1 or args.warmup < 0 or args.depth < 1 or args.budget <= 0:
        parser.error("--repeat, --depth and --budget must be positive, --warmup not negative")
    if not -1.0 <= args.seed <= 1.0:
        parser.error("--seed must be in [-1, 1]")
    return args


def _interruptible_wait(conn: Any) -> None:
    """psycopg2 wait callback: a statement is waited for in Python, so a signal's exception
    (Ctrl-C, kill, the time budget) ends the wait at once. The statement itself is left to the
    forced DROP DATABASE at the end, which ends it with the database."""
    import psycopg2.extensions

    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [])
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [])
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {state}")


def run(args: argparse.Namespace, database: str) -> dict[str, Any]:
    import django

    django.setup()

    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings
    from django.urls import resolve

    # The pages' code is imported before the long load, so that an error in it shows at once.
    resolve("/inbox/")
    started = time.perf_counter()
    _progress("migrate ...")
    call_command("migrate", interactive=False, verbosity=0)
    world = create_world()
    generated = generate(
        world,
        conversations=args.conversations,
        per_conversation=args.messages_per_conversation,
        active_share=args.active_share,
        id_order=args.id_order,
        seed=args.seed,
    )
    generation_seconds = time.perf_counter() - started

    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_buffers")
        shared_buffers = str(cursor.fetchone()[0])
        cursor.execute("SHOW work_mem")
        work_mem = str(cursor.fetchone()[0])

    import psycopg2.extensions

    # Plain blocking waits while timing: the select loop set for the load costs a little on
    # every query.
    psycopg2.extensions.set_wait_callback(None)

    clients = {}
    for label, pk in (("agent", world.agent_id), ("admin", world.admin_id)):
        client = Client()
        client.force_login(User.objects.get(pk=pk))
        clients[label] = client

    channel = world.channel_ids[0]
    filtered = f"/inbox/?view=all&status=open&channel={channel}"
    _progress(f"walking the cursor of {filtered} ...")
    deep_url, depth = walk_cursor(clients["agent"], filtered, args.depth)
    conversation_url = f"/inbox/{generated.big_conversation_id}/"
    poll_url = "/inbox/updates/?" + urlencode({"since": datetime.now(UTC).isoformat()})
    plan_list: list[tuple[str, str, str, str, bool]] = [
        ("inbox, first page", "/inbox/", "inbox", "agent", False),
        ("inbox, first page", "/inbox/", "inbox", "admin", False),
        ("inbox, status=open + channel", filtered, "inbox", "agent", False),
        ("inbox, status=open + channel", filtered, "inbox", "admin", False),
        (f"inbox, same filters, page {depth + 1}", deep_url, "inbox", "agent", False),
        (f"inbox, same filters, page {depth + 1}", deep_url, "inbox", "admin", False),
        (f"inbox, same filters, page {depth + 1}, htmx", deep_url, "inbox", "agent", True),
        (
            f"conversation, {generated.big_conversation_messages} messages",
            conversation_url,
            "conversation",
            "agent",
            False,
        ),
        (
            f"conversation, {generated.big_conversation_messages} messages",
            conversation_url,
            "conversation",
            "admin",
            False,
        ),
        ("inbox, My team", "/inbox/?view=team", "inbox", "agent", False),
        ("inbox, Unassigned", "/inbox/?view=unassigned", "inbox", "agent", False),
        ("inbox, Unassigned", "/inbox/?view=unassigned", "inbox", "admin", False),
        # The pages show the view counts last counted; the inbox's poll (on load, then every
        # 15 s) counts them again when SCRM_INBOX_COUNTS_SECONDS have passed. These count them
        # on every request: the poll, and the page as it is with SCRM_INBOX_COUNTS_SECONDS=0.
        ("inbox poll, counts counted", poll_url, "poll", "agent", True),
        ("inbox poll, counts counted", poll_url, "poll", "admin", True),
        ("inbox, first page, counts counted", "/inbox/", "inbox", "agent", False),
        ("inbox, first page, counts counted", "/inbox/", "inbox", "admin", False),
    ]
    figures = []
    load_before = os.getloadavg()
    for page, url, kind, user, htmx in plan_list:
        _progress(f"timing {page} as {user} ...")
        every_time = "counts counted" in page
        with override_settings(SCRM_INBOX_COUNTS_SECONDS=0) if every_time else nullcontext():
            figures.append(
                measure(
                    clients[user],
                    page=page,
                    user=user,
                    url=url,
                    kind=kind,
                    repeat=args.repeat,
                    warmup=args.warmup,
                    htmx=htmx,
                )
            )
    load_after = os.getloadavg()
    if args.profile:
        for name, url in (("inbox", "/inbox/"), ("conversation", conversation_url)):
            _progress(f"profiling {url} as agent ...")
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.repeat):
                _get(clients["agent"], url, htmx=False)
            profiler.disable()
            profiler.dump_stats(args.profile / f"{name}.prof")
    sizes = (10, settings.SCRM_INBOX_PAGE_SIZE, 100)
    page_size_queries = {
        user: queries_by_page_size(clients[user], "/inbox/", sizes) for user in clients
    }

    _progress("EXPLAIN ...")
    by_key = {(f.page, f.user, f.htmx): f for f in figures}
    deep = f"inbox, same filters, page {depth + 1}"
    first = "inbox, first page"
    counted = "inbox, first page, counts counted"
    wanted = (
        ("main inbox query, deep filtered page, agent", deep, "agent", _is_inbox_query),
        ("main inbox query, deep filtered page, admin", deep, "admin", _is_inbox_query),
        ("counts query (inbox_counts), agent", counted, "agent", _is_counts_query),
        ("counts query (inbox_counts), admin", counted, "admin", _is_counts_query),
        ("main inbox query, first page, agent", first, "agent", _is_inbox_query),
        (
            "thread query, conversation page, agent",
            f"conversation, {generated.big_conversation_messages} messages",
            "agent",
            _is_thread_query,
        ),
        ("main inbox query, Unassigned, agent", "inbox, Unassigned", "agent", _is_inbox_query),
        ("main inbox query, My team, agent", "inbox, My team", "agent", _is_inbox_query),
        (
            "timeline query, conversation page, agent",
            f"conversation, {generated.big_conversation_messages} messages",
            "agent",
            _is_timeline_query,
        ),
    )
    plans, missing = [], []
    for title, page, user, test in wanted:
        sql = _find_query(by_key[(page, user, False)].query_sql, test)
        if sql is None:
            missing.append(title)
        else:
            plans.append(explain(title, sql))

    return {
        "database": database,
        "shared_buffers": shared_buffers,
        "work_mem": work_mem,
        "page_size": settings.SCRM_INBOX_PAGE_SIZE,
        # The machine's other work competes for the CPUs and shows in the spread.
        "load_average": {"before": load_before, "after": load_after},
        "generation_seconds": round(generation_seconds, 1),
        "generated": generated,
        "deep_page": {"requested_depth": args.depth, "reached": depth, "url": deep_url},
        "figures": figures,
        "page_size_queries": page_size_queries,
        "plans": plans,
        "plans_not_found": missing,
        "world": world,
    }


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    generated: Generated = result["generated"]
    figures: list[Figure] = result["figures"]
    active = sum(generated.status_counts.get(s, 0) for s, _ in ACTIVE_STATUSES)
    deep = result["deep_page"]
    lines = [
        f"Database  : {result['database']} (dropped at exit); shared_buffers "
        f"{result['shared_buffers']}, work_mem {result['work_mem']}",
        f"Runtime   : Python {platform.python_version()}, {platform.platform()}, "
        f"{os.cpu_count()} CPUs",
        f"Scale     : {generated.conversations:,} conversations (ids in {args.id_order} order), "
        f"{generated.messages:,} messages (mean {args.messages_per_conversation}), "
        f"{generated.contacts:,} contacts, "
        f"{generated.tagged_links:,} tag links, {generated.events:,} timeline events; "
        f"{active:,} active "
        f"({active / generated.conversations:.1%})",
        "Statuses  : " + ", ".join(f"{k} {v:,}" for k, v in generated.status_counts.items()),
        f"Generated : in {result['generation_seconds']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in generated.steps_seconds.items())
        + ")"
        + ("" if generated.fk_checks_during_load else "; foreign-key checks off during the load"),
        "Sizes MiB : " + ", ".join(f"{k} {v:,.0f}" for k, v in generated.sizes_mb.items()),
        f"Deep page : {deep['reached']} pages down the filtered list "
        f"(asked {deep['requested_depth']}), page size {result['page_size']}",
        f"Requests  : Django test client in-process, DEBUG off, {args.warmup} warm-up then "
        f"{args.repeat} timed per page; queries and SQL ms from one more; CPU: this "
        "process's CPU time per request; load average "
        f"{result['load_average']['before'][0]:.2f} before, "
        f"{result['load_average']['after'][0]:.2f} after the timing",
        "",
        table(figures),
        "",
        "Queries of /inbox/ by page size: "
        + "; ".join(
            f"{user} " + ", ".join(f"{size} rows -> {n}" for size, n in counts.items())
            for user, counts in result["page_size_queries"].items()
        ),
    ]
    # The pages as served; the rows that count the view counts on every request are the poll
    # (a background request) and the page under SCRM_INBOX_COUNTS_SECONDS=0.
    served = [f for f in figures if "counts counted" not in f.page]
    missed = [f for f in served if not f.met]
    lines.append(
        f"Target p95 <= {TARGET_P95_MS:.0f} ms, pages as served: "
        + ("met by every page" if not missed else f"missed by {len(missed)} of {len(served)}")
    )
    broken_down = ("inbox, first page", "inbox, same filters, page", "conversation,")
    for f in figures:
        if f.user == "agent" and not f.htmx and f.page.startswith(broken_down):
            lines += ["", f"Queries of '{f.page}' as {f.user} (ms, statement start):"]
            lines += [
                f"  {ms:6.1f}  {' '.join(sql.split())[:150]}"
                for ms, sql in zip(f.query_ms, f.query_sql, strict=True)
            ]
    lines += ["", "EXPLAIN (ANALYZE, BUFFERS) digests:"]
    for plan in result["plans"]:
        lines += [plan_digest(plan)]
    for title in result["plans_not_found"]:
        lines.append(f"{title}: query not found among the captured ones")
    for plan in result["plans"][:4]:
        lines += ["", f"--- {plan.title}", plan.sql, "", plan.text]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGALRM, overdue)
    signal.alarm(math.ceil(args.budget))

    import psycopg2.extensions

    # Long statements of the load wait in Python, so Ctrl-C, kill and the alarm are handled
    # during them.
    psycopg2.extensions.set_wait_callback(_interruptible_wait)
    try:
        with throwaway_environment(args.database_url) as database:
            result = run(args, database)
    except RunOverdue as exc:
        print(f"Stopped: {exc} ({args.budget:.0f} s); everything was removed.", file=sys.stderr)
        return 2
    except PageFailed as exc:
        print(f"Stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted; the throwaway database and folder were removed.", file=sys.stderr)
        return 130
    finally:
        psycopg2.extensions.set_wait_callback(None)

    print(report(args, result))
    if args.json:
        payload = _jsonable(result)
        for figure in payload["figures"]:
            figure["query_sql"] = [" ".join(sql.split())[:300] for sql in figure["query_sql"]]
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
