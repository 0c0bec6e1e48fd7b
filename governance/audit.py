"""The audit log: one call records what happened, by whom, from where, to what.

Entries are only ever added (the model refuses changes, and PostgreSQL refuses them too).
Values that might be secret are never passed in: callers record field names or hints.
"""

from typing import Any

from django.db.models import Model
from django.http import HttpRequest

from governance.models import AuditEntry
from scrm.types import AnyUser


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address as Django sees it (behind a proxy, configure the proxy to set
    REMOTE_ADDR, e.g. with gunicorn's --forwarded-allow-ips)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_record(
    *,
    action: str,
    actor: AnyUser | None = None,
    obj: Model | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    **data: Any,
) -> AuditEntry:
    """Record one entry. ``action`` is a dotted name such as ``"channel.updated"``; ``obj``
    (or the object_* fields, for something already deleted) says what it concerned."""
    user = actor if actor is not None and actor.is_authenticated else None
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)
    return AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else "",
        ip=client_ip(request),
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr[:200],
        before=before or {},
        after=after or {},
        data=data,
    )
