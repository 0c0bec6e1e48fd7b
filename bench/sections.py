"""Wall time of the ingest pipeline's parts, for ``run.py --sections``.

Each part is a function of the pipeline, wrapped for the phase with a timer and restored after
it: the figures say where the time of a phase goes, and, compared between a run without and one
with the routing rules, which parts the rules make slower. Times are inclusive (a part's time
holds the parts it calls: ``decisions_write`` holds the timeline rows), and each call costs the
wrapper a fraction of a microsecond, some milliseconds for the per-post parts of a phase.

The parts are looked up where the pipeline calls them (the name in the calling module, a
method on its class), so wrapping one reaches every call the pipeline makes of it and no other.
"""

import importlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial, wraps
from typing import Any


@dataclass(frozen=True)
class Part:
    label: str
    module: str
    name: str  # a module attribute or "Class.method"
    per_post: bool = False  # called for every post: its wrapper's cost is in the figure
    # The parts that decide what the rules do, apart from writing what they decided:
    # what "rule evaluation" costs in the narrow sense.
    deciding: bool = False


# In the order the pipeline runs them.
PARTS = (
    Part("identities resolved", "channels_ingest.pipeline", "identities_resolve"),
    Part("routing rules loaded", "conversations.services", "RuleBook.load", deciding=True),
    Part("SLA policies loaded", "conversations.services", "SlaSetup.load"),
    Part(
        "batch facts read (VIP, tags)",
        "conversations.services",
        "_BatchFacts.load",
        deciding=True,
    ),
    Part(
        "facts of each post built",
        "conversations.services",
        "Facts",
        per_post=True,
        deciding=True,
    ),
    Part(
        "rules evaluated",
        "conversations.services",
        "RuleBook.evaluate",
        per_post=True,
        deciding=True,
    ),
    Part(
        "rule decisions taken",
        "conversations.services",
        "decisions_take",
        per_post=True,
        deciding=True,
    ),
    Part("auto-assignment", "conversations.services", "auto_assign"),
    Part("acknowledgements prepared", "conversations.services", "acknowledgements_prepare"),
    Part("new conversations inserted", "conversations.services", "instances_insert"),
    Part("messages written", "conversations.services", "rows_copy"),
    Part("conversations updated", "conversations.services", "rows_update"),
    Part("tags written", "conversations.services", "_tags_insert"),
    Part("timeline and actions written", "conversations.services", "decisions_write"),
    Part("  of which timeline rows (SQLite)", "conversations.routing", "rows_insert"),
    Part("  of which timeline rows (PostgreSQL)", "conversations.routing", "rows_copy"),
    Part("  of which acknowledgements stored", "conversations.routing", "_acknowledgements_queue"),
    Part("Celery tasks published (at commit)", "celery.app.task", "Task.apply_async"),
    Part("inbound events published", "conversations.services", "_publish_inbound"),
    # The foreign keys are checked at commit (Django creates them deferred on PostgreSQL).
    Part("commit", "django.db.backends.base.base", "BaseDatabaseWrapper._commit"),
)


@dataclass
class Timing:
    label: str
    calls: int = 0
    seconds: float = 0.0
    per_post: bool = False
    deciding: bool = False


def _timed(function: Callable[..., Any], timing: Timing) -> Callable[..., Any]:
    clock = time.perf_counter

    @wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            timing.seconds += clock() - started
            timing.calls += 1

    return timed


@contextmanager
def sections_timed(parts: tuple[Part, ...] = PARTS) -> Iterator[list[Timing]]:
    """Time ``parts`` while the block runs; the timings, in ``parts`` order, fill in as it
    runs. Every wrapped attribute is put back as it was, also when the block fails."""
    timings: list[Timing] = []
    restore: list[Callable[[], None]] = []
    try:
        for part in parts:
            owner: Any = importlib.import_module(part.module)
            *path, attribute = part.name.split(".")
            for step in path:
                owner = getattr(owner, step)
            timing = Timing(part.label, per_post=part.per_post, deciding=part.deciding)
            timings.append(timing)
            # As the module or class holds it (a class's classmethod as such), put back as is.
            held = vars(owner)[attribute]
            if isinstance(held, classmethod):
                replacement: Any = classmethod(_timed(held.__func__, timing))
            else:
                replacement = _timed(held, timing)
            setattr(owner, attribute, replacement)
            restore.append(partial(setattr, owner, attribute, held))
        yield timings
    finally:
        for undo in reversed(restore):
            undo()


def sections_rows(timings: list[Timing], phase_seconds: float) -> list[dict[str, Any]]:
    return [
        {
            "label": t.label,
            "calls": t.calls,
            "seconds": t.seconds,
            "share_of_phase": t.seconds / phase_seconds if phase_seconds else 0.0,
            "per_post": t.per_post,
            "deciding": t.deciding,
        }
        for t in timings
    ]
