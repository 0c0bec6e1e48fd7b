"""Small display helpers shared by the dashboard's templates."""

from datetime import datetime, timedelta
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

_PLATFORM_LETTERS = {"x": "\N{MATHEMATICAL DOUBLE-STRUCK CAPITAL X}", "facebook": "f", "demo": "D"}
_PLATFORM_NAMES = {"x": "X", "facebook": "Facebook", "demo": "Demo"}


@register.simple_tag
def platform_icon(platform: str) -> str:
    return format_html(
        '<span class="platform platform-{}" title="{}" aria-label="{}">{}</span>',
        platform,
        _PLATFORM_NAMES.get(platform, platform),
        _PLATFORM_NAMES.get(platform, platform),
        _PLATFORM_LETTERS.get(platform, "?"),
    )


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
def since(moment: datetime | None) -> str:
    """How long ago, compactly (for waiting times)."""
    if moment is None:
        return ""
    return duration(timezone.now() - moment)


@register.simple_tag
def sla_badge(conversation: Any) -> str:
    """The SLA state of a conversation as a badge: due in…, at risk, or breached …ago."""
    state = conversation.sla_state()
    if not state:
        return ""
    due = conversation.sla_due_at
    now = timezone.now()
    if state == "breached":
        text = f"SLA breached {duration(now - due)} ago"
    else:
        text = f"SLA due in {duration(due - now)}"
    return format_html(
        '<span class="badge sla sla-{}" title="{} (due {})">{}</span>',
        state.replace("_", "-"),
        {"ok": "On track", "at_risk": "At risk", "breached": "Breached"}[state],
        timezone.localtime(due).strftime("%Y-%m-%d %H:%M"),
        text,
    )


@register.filter
def is_past(moment: datetime | None) -> bool:
    return moment is not None and moment <= timezone.now()


@register.filter
def status_label(value: str) -> str:
    """A stored status value as people read it: "pending" -> "Pending customer"."""
    from conversations.models import Status

    return str(Status(value).label) if value in Status.values else value
