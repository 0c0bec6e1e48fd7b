"""Small display helpers shared by the dashboard's templates."""

from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

_PLATFORM_LETTERS = {"x": "\N{MATHEMATICAL DOUBLE-STRUCK CAPITAL X}", "facebook": "f", "demo": "D"}
_PLATFORM_NAMES = {"x": "X", "facebook": "Facebook", "demo": "Demo"}


@register.simple_tag
def platform_icon(platform: str) -> str:
    icon = _ICONS.get(platform)
    if icon is None:
        icon = format_html(
            '<span class="platform platform-{}" title="{}" aria-label="{}">{}</span>',
            platform,
            _PLATFORM_NAMES.get(platform, platform),
            _PLATFORM_NAMES.get(platform, platform),
            _PLATFORM_LETTERS.get(platform, "?"),
        )
        if platform in _PLATFORM_NAMES:
            _ICONS[platform] = icon
    return icon


# Icons of the known platforms, made once: a list of a hundred rows shows a hundred.
_ICONS: dict[str, str] = {}


@register.filter
def duration(value: timedelta | None) -> str:
    """A compact span: 45s, 12m, 3h 05m, 2d 4h."""
    if value is None:
        return "\N{EN DASH}"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


@register.filter
def since(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, compactly (for waiting times). Lists pass one ``now`` for all rows."""
    if moment is None:
        return ""
    return duration((now or timezone.now()) - moment)


@register.simple_tag
def sla_badge(conversation: Any, now: datetime | None = None, zone: tzinfo | None = None) -> str:
    """The SLA state of a conversation (or of an inbox row) as a badge: due in…, at risk, or
    breached …ago. Lists pass one ``now`` and time zone for all rows."""
    now = now or timezone.now()
    if isinstance(conversation, Mapping):
        state, due = conversation["sla_state"], conversation["sla_due_at"]
    else:
        state, due = conversation.sla_state(now), conversation.sla_due_at
    if not state or due is None:
        return ""
    # The state in words, not only in the badge's colour.
    if state == "breached":
        text = f"SLA breached {duration(now - due)} ago"
    elif state == "at_risk":
        text = f"SLA at risk: due in {duration(due - now)}"
    else:
        text = f"SLA due in {duration(due - now)}"
    return format_html(
        '<span class="badge sla sla-{}" title="{} (due {})">{}</span>',
        state.replace("_", "-"),
        {"ok": "On track", "at_risk": "At risk", "breached": "Breached"}[state],
        local_minute(due, zone),
        text,
    )


@register.filter
def local_minute(moment: datetime | None, zone: tzinfo | None = None) -> str:
    """A time in the current time zone (or ``zone``), to the minute: 2026-11-02 14:05."""
    if moment is None:
        return ""
    return moment.astimezone(zone or timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M")


@register.filter
def is_past(moment: datetime | None) -> bool:
    return moment is not None and moment <= timezone.now()


@register.filter
def status_label(value: str) -> str:
    """A stored status value as people read it: "pending" -> "Pending customer"."""
    from conversations.models import Status

    return str(Status(value).label) if value in Status.values else value
