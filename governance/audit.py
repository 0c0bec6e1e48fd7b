"""The audit log: one call records what happened, by whom, from where, to what.

Entries are only ever added (the model refuses changes, and PostgreSQL refuses them too).
Values that might be secret are never passed in: callers record field names or hints, and
``model_snapshot`` leaves secret fields out by itself.
"""

import ipaddress
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import wraps
from typing import Any
from uuid import UUID

from django.contrib import admin
from django.db import transaction
from django.db.models import Field, ForeignObjectRel, Model, QuerySet
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern

from channels_ingest.crypto import EncryptedJSONField, EncryptedTextField
from governance.models import AuditEntry
from governance.roles import is_admin
from scrm.types import AnyUser

# --- Who and from where ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ambient:
    """What the request being served says about an entry recorded without one."""

    ip: str | None
    actor: AnyUser | None = None


_ambient: ContextVar[_Ambient | None] = ContextVar("audit_ambient", default=None)


def _valid_ip(value: object) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value or "").strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address as Django sees it (behind a proxy, configure the proxy to set
    REMOTE_ADDR, e.g. with gunicorn's --forwarded-allow-ips)."""
    if request is None:
        return None
    return _valid_ip(request.META.get("REMOTE_ADDR"))


def request_started_note(
    *, environ: dict[str, Any] | None = None, scope: dict[str, Any] | None = None, **kwargs: Any
) -> None:
    """``request_started`` receiver: remember the client's address, so entries recorded by
    services and tasks run while serving the request carry it without passing it down."""
    ip: object = None
    if environ is not None:
        ip = environ.get("REMOTE_ADDR")
    elif scope is not None and scope.get("client"):
        ip = scope["client"][0]
    _ambient.set(_Ambient(ip=_valid_ip(ip)))


def request_finished_note(**kwargs: Any) -> None:
    _ambient.set(None)


@contextmanager
def audit_context(request: HttpRequest) -> Iterator[None]:
    """Changes that model signals record inside are the request's user's (``ambient_actor``):
    used around the Django admin's views, where roles, teams and access are changed."""
    token = _ambient.set(_Ambient(ip=client_ip(request), actor=getattr(request, "user", None)))
    try:
        yield
    finally:
        _ambient.reset(token)


@contextmanager
def audit_acting_as(user: AnyUser | None) -> Iterator[None]:
    """Changes that model signals record inside are ``user``'s, from the address of the
    request being served: for services that write rows audited by their signals."""
    ambient = _ambient.get()
    token = _ambient.set(_Ambient(ip=ambient.ip if ambient is not None else None, actor=user))
    try:
        yield
    finally:
        _ambient.reset(token)


def audit_actor_set(user: AnyUser) -> None:
    """Name the actor of the request being served once it is known later than the middleware
    (an API token is read by the API view, not by the session middleware)."""
    ambient = _ambient.get()
    _ambient.set(_Ambient(ip=ambient.ip if ambient is not None else None, actor=user))


def ambient_actor() -> AnyUser | None:
    """Who is making the request being served, when known (inside ``audit_context``): for
    entries recorded from model signals, which have no request."""
    ambient = _ambient.get()
    return ambient.actor if ambient is not None else None


class AuditContextMiddleware:
    """Runs every request inside ``audit_context``, so changes recorded from model signals
    outside the Django admin (a password changed on the user's own page) name the user too.
    Place it after AuthenticationMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with audit_context(request):
            return self.get_response(request)


# --- Recording -------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, Model):
        return value.pk
    return str(value)


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
    (or the object_* fields, for something already deleted) says what it concerned.

    Without ``actor``, the request's user is the actor; with neither, nobody (the system).
    Without ``request``, the address is that of the request being served, if any."""
    ambient = _ambient.get()
    if actor is None and request is not None:
        actor = getattr(request, "user", None)
    user = actor if actor is not None and actor.is_authenticated else None
    ambient_ip = ambient.ip if ambient is not None else None
    ip = client_ip(request) if request is not None else ambient_ip
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)
    return AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username()[:150] if user is not None else "",
        ip=ip,
        action=action[:60],
        object_type=object_type[:60],
        object_id=str(object_id)[:64],
        object_repr=object_repr[:200],
        before=_jsonable(before or {}),
        after=_jsonable(after or {}),
        data=_jsonable(data),
    )


# --- Snapshots of rows, without their secrets ---------------------------------------------

# Names of things in actions ("channel.updated"); other models go by their verbose name.
_THING_NAMES = {
    "channels_ingest.channelaccount": "channel",
    "conversations.businesscalendar": "business_hours",
}
# Fields that change by themselves as the product works: not what an admin decided.
_BOOKKEEPING_FIELDS = {
    "governance.teammembership": {"last_auto_assigned_at"},
    "channels_ingest.channelaccount": {
        "cursor",
        "next_poll_at",
        "last_polled_at",
        "poll_lease_until",
        "poll_lease_token",
        "health",
        "last_error",
        "rate_limited_until",
    },
    "auth.user": {"last_login"},
}


def thing_name(model: type[Model] | Model) -> str:
    meta = model._meta
    return _THING_NAMES.get(meta.label_lower) or str(meta.verbose_name).lower().replace(" ", "_")


_SECRET_NAMES = ("password", "secret", "key", "token")


def is_secret(field: Field[Any, Any] | ForeignObjectRel) -> bool:
    """Encrypted fields, passwords, keys and tokens (a TOTP device's key, say): their values
    never enter the log."""
    if isinstance(field, EncryptedJSONField | EncryptedTextField):
        return True
    return any(field.name == n or field.name.endswith(f"_{n}") for n in _SECRET_NAMES)


def snapshot_fields(model: type[Model] | Model, *, related: Sequence[str] = ()) -> list[str]:
    """The fields an admin sets on a model: stored fields but the primary key, timestamps the
    database keeps, bookkeeping and secrets; then the named relations."""
    meta = model._meta
    skip = _BOOKKEEPING_FIELDS.get(meta.label_lower, set())
    names = [
        f.name
        for f in meta.concrete_fields
        if not f.primary_key
        and not getattr(f, "auto_now", False)
        and not getattr(f, "auto_now_add", False)
        and f.name not in skip
        and not is_secret(f)
    ]
    return [*names, *related]


def model_snapshot(obj: Model, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The named fields' values, fit for an entry's before or after: foreign keys as ids,
    related rows (many-to-many, reverse foreign keys) as their names, dates as ISO text.
    Without ``fields``, those of ``snapshot_fields``. Secret fields are always left out:
    ``secrets_changed`` says which of them changed."""
    meta = obj._meta
    snapshot: dict[str, Any] = {}
    for name in snapshot_fields(obj) if fields is None else fields:
        field = meta.get_field(name)
        if is_secret(field):
            continue
        if field.many_to_many or field.one_to_many:
            if obj.pk is None:
                snapshot[name] = []
                continue
            accessor = (
                field.get_accessor_name() if isinstance(field, ForeignObjectRel) else field.name
            )
            snapshot[name] = sorted(str(o) for o in getattr(obj, str(accessor)).all())
        elif field.concrete:
            snapshot[name] = _jsonable(getattr(obj, field.attname))
    return snapshot


def _secret_values(obj: Model | None) -> dict[str, Any]:
    """Secret values, held in memory only to see which changed."""
    if obj is None:
        return {}
    return {f.name: getattr(obj, f.attname) for f in obj._meta.concrete_fields if is_secret(f)}


def secrets_changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names of the secrets that differ between two ``_secret_values``; for a set of
    credentials, the names of the credentials ("credentials.app_secret")."""
    names = []
    for name in sorted({*before, *after}):
        old, new = before.get(name), after.get(name)
        if isinstance(old, dict | None) and isinstance(new, dict | None):
            old, new = old or {}, new or {}
            names += [
                f"{name}.{key}" for key in sorted({*old, *new}) if old.get(key) != new.get(key)
            ]
        elif (old or "") != (new or ""):
            names.append(name)
    return names


def changes(
    before: dict[str, Any] | None, after: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only what differs: the old values and the new ones."""
    before = before or {}
    differ = [k for k in {**before, **after} if before.get(k) != after.get(k)]
    return (
        {k: before[k] for k in differ if k in before},
        {k: after[k] for k in differ if k in after},
    )


@contextmanager
def audit_change(
    obj: Model,
    *,
    actor: AnyUser | None,
    request: HttpRequest | None = None,
    related: Sequence[str] = (),
    thing: str = "",
    **data: Any,
) -> Iterator[None]:
    """Record ``<thing>.created`` or ``<thing>.updated`` for what the block saves of ``obj``:
    the fields that changed, before and after, in the block's transaction. Nothing is
    recorded when nothing changed. Secrets are named, never shown."""
    model = type(obj)
    fields = snapshot_fields(model, related=related)
    thing = thing or thing_name(model)
    with transaction.atomic():
        stored = model._base_manager.filter(pk=obj.pk).first() if obj.pk is not None else None
        before = model_snapshot(stored, fields) if stored is not None else {}
        secrets_before = _secret_values(stored)
        yield
        saved = model._base_manager.get(pk=obj.pk)
        after = model_snapshot(saved, fields)
        secrets = secrets_changed(secrets_before, _secret_values(saved))
        if secrets:
            data["secrets_changed"] = secrets
        if stored is None:
            audit_record(
                action=f"{thing}.created",
                actor=actor,
                request=request,
                obj=saved,
                after=after,
                **data,
            )
            return
        old, new = changes(before, after)
        if old or new or secrets:
            audit_record(
                action=f"{thing}.updated",
                actor=actor,
                request=request,
                obj=saved,
                before=old,
                after=new,
                **data,
            )


@contextmanager
def audit_deletion(
    obj: Model,
    *,
    actor: AnyUser | None,
    request: HttpRequest | None = None,
    thing: str = "",
    **data: Any,
) -> Iterator[None]:
    """Record ``<thing>.deleted`` once the block deleted ``obj``, in its transaction; a
    refused deletion (an exception) records nothing."""
    with transaction.atomic():
        before = model_snapshot(obj)
        who: dict[str, Any] = {
            "object_type": obj._meta.label_lower,
            "object_id": str(obj.pk),
            "object_repr": str(obj),
        }
        yield
        audit_record(
            action=f"{thing or thing_name(obj)}.deleted",
            actor=actor,
            request=request,
            before=before,
            **who,
            **data,
        )


# --- Changes recorded once for several writes --------------------------------------------

_batch: ContextVar[dict[Hashable, Callable[[], None]] | None] = ContextVar(
    "audit_batch", default=None
)


@contextmanager
def audit_batch() -> Iterator[None]:
    """Entries deferred inside (``audit_defer``) are recorded once, when the block ends: the
    admin saves a user's roles by removing some groups and adding others, one change."""
    if _batch.get() is not None:
        yield
        return
    pending: dict[Hashable, Callable[[], None]] = {}
    token = _batch.set(pending)
    try:
        yield
    finally:
        _batch.reset(token)
    for flush in pending.values():
        flush()


def current_audit_batch() -> object | None:
    """The ``audit_batch`` under way, if any: an identity to tell one batch from another."""
    return _batch.get()


def audit_defer(key: Hashable, flush: Callable[[], None]) -> bool:
    """Have ``flush`` run once when the current ``audit_batch`` ends; False when there is
    none (the caller records now)."""
    pending = _batch.get()
    if pending is None:
        return False
    pending.setdefault(key, flush)
    return True


# --- The Django admin --------------------------------------------------------------------

# Models whose changes model signals record (governance.signals), whichever path made them.
SIGNAL_AUDITED = {"auth.user", "governance.teammembership", "governance.channelaccess"}
# Models holding what customers wrote or who they are: an admin's change of one is recorded by
# field names only, so an erased contact leaves nothing of theirs in the log.
PERSONAL_DATA = {
    "contacts.contact",
    "contacts.socialidentity",
    "contacts.contactimport",
    "contacts.mergesuggestion",
    "conversations.conversation",
    "conversations.message",
    "conversations.conversationevent",
    "conversations.notification",
    "channels_ingest.deadletter",
    "channels_ingest.webhookdelivery",
}


def _in_audit_context(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def audited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with audit_context(request):
            return view(request, *args, **kwargs)

    return audited


class AuditedModelAdmin(admin.ModelAdmin):
    """What an admin of the Django admin site adds, changes and deletes is recorded as
    ``<thing>.created|updated|deleted`` with ``via: admin``; every registered admin gets
    this behaviour (``audit_every_admin``). Changes of users, roles, team memberships and
    channel access are left to the model signals, which see every path."""

    def get_urls(self) -> list[URLPattern]:
        urls = super().get_urls()
        for url in urls:
            url.callback = _in_audit_context(url.callback)
        return urls

    def _audited(self) -> bool:
        label = self.model._meta.label_lower
        return label not in SIGNAL_AUDITED and self.model is not AuditEntry

    def _fields(self) -> list[str]:
        return snapshot_fields(self.model, related=[f.name for f in self.opts.many_to_many])

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None and self._audited():
            # The form changes the object in place; what it was is kept with the request.
            seen = request.__dict__.setdefault("_audit_before", {})
            seen[(obj._meta.label_lower, obj.pk)] = (
                model_snapshot(obj, self._fields()),
                _secret_values(obj),
            )
        return obj

    def save_related(self, request: HttpRequest, form: Form, formsets: Any, change: bool) -> None:
        with audit_batch():
            super().save_related(request, form, formsets, change)

    def _record(
        self,
        request: HttpRequest,
        obj: Model,
        verb: str,
        before: dict[str, Any],
        after: dict[str, Any],
        **data: Any,
    ) -> None:
        who: dict[str, Any] = {"obj": obj}
        if obj._meta.label_lower in PERSONAL_DATA:
            # The log outlives a data subject's erasure: names of fields, not their values.
            data = {"fields": sorted({*before, *after}), **data}
            data.pop("change", None)
            before, after = {}, {}
            who["object_repr"] = f"{obj._meta.verbose_name} #{obj.pk}"
        audit_record(
            action=f"{thing_name(obj)}.{verb}",
            request=request,
            before=before,
            after=after,
            via="admin",
            **who,
            **data,
        )

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)
        if self._audited():
            secrets = secrets_changed({}, _secret_values(obj))
            extra: dict[str, Any] = {"secrets_changed": secrets} if secrets else {}
            after = model_snapshot(obj, self._fields())
            self._record(request, obj, "created", {}, after, **extra)
        return entry

    def log_change(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        entry = super().log_change(request, obj, message)
        if self._audited():
            seen = request.__dict__.get("_audit_before", {})
            before, secrets_before = seen.get((obj._meta.label_lower, obj.pk), ({}, {}))
            old, new = changes(before, model_snapshot(obj, self._fields()))
            secrets = secrets_changed(secrets_before, _secret_values(obj))
            extra: dict[str, Any] = {"secrets_changed": secrets} if secrets else {}
            if old or new or secrets or message:
                self._record(request, obj, "updated", old, new, change=message, **extra)
        return entry

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        entries = super().log_deletions(request, queryset)
        if self._audited():
            for obj in queryset:
                self._record(request, obj, "deleted", model_snapshot(obj, self._fields()), {})
        return entries


def audit_every_admin(site: admin.AdminSite) -> None:
    """Give the admins of other packages (sign-in lockouts, two-factor devices) the same
    recording: each is registered again as a subclass with AuditedModelAdmin first."""
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, AuditedModelAdmin):
            continue
        cls = type(model_admin)
        site.unregister(model)
        site.register(model, type(f"Audited{cls.__name__}", (AuditedModelAdmin, cls), {}))


class AuditEntryAdmin(AuditedModelAdmin):
    """The log, readable by admins in the Django admin too; nobody adds, changes or deletes."""

    list_display = ("at", "actor_name", "ip", "action", "object_type", "object_repr")
    list_filter = ("action",)
    search_fields = ("action", "actor_name", "object_repr", "object_id")
    date_hierarchy = "at"

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_admin(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
