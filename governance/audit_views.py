"""The audit log for admins: newest first, filtered, a hundred entries at a time, and the
filtered entries as CSV. Nothing here (or anywhere) changes or deletes an entry."""

import csv
import json
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_safe

from governance.audit import audit_record
from governance.models import AuditEntry
from governance.roles import is_admin
from scrm.types import AuthedRequest

PAGE_SIZE = 100

CSV_COLUMNS = [
    "at",
    "actor",
    "ip",
    "action",
    "object_type",
    "object_id",
    "object",
    "before",
    "after",
    "data",
]
# A spreadsheet runs a cell starting with one of these as a formula; entries hold text typed
# by strangers (usernames tried at the login, names of contacts), so such cells are quoted.
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_TRIGGERS) else value


class AuditFilterForm(forms.Form):
    action = forms.CharField(required=False, max_length=60, label="Action starts with")
    actor = forms.CharField(required=False, max_length=150, label="Actor (username)")
    object_type = forms.CharField(required=False, max_length=60, label="Object type")
    object_id = forms.CharField(required=False, max_length=64, label="Object id")
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="Until", widget=forms.DateInput(attrs={"type": "date"})
    )
    q = forms.CharField(required=False, max_length=200, label="Object name contains")

    def entries(self) -> QuerySet[AuditEntry]:
        """The entries matching the valid filters, newest first; invalid ones are ignored
        (and shown as errors)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        entries = AuditEntry.objects.order_by("-id")
        if action := (data.get("action") or "").strip():
            entries = entries.filter(action__startswith=action)
        if actor := (data.get("actor") or "").strip():
            entries = entries.filter(actor_name__iexact=actor)
        if object_type := (data.get("object_type") or "").strip():
            entries = entries.filter(object_type=object_type)
        if object_id := (data.get("object_id") or "").strip():
            entries = entries.filter(object_id=object_id)
        # Days in the organisation's time zone.
        zone = timezone.get_current_timezone()
        if since := data.get("since"):
            entries = entries.filter(at__gte=datetime.combine(since, time.min, tzinfo=zone))
        if until := data.get("until"):
            next_day = until + timedelta(days=1)
            entries = entries.filter(at__lt=datetime.combine(next_day, time.min, tzinfo=zone))
        if q := (data.get("q") or "").strip():
            entries = entries.filter(object_repr__icontains=q)
        return entries

    def used(self) -> dict[str, str]:
        """The filters in effect, as typed: for links and for the export's own entry."""
        data = getattr(self, "cleaned_data", {})
        return {name: str(data[name]) for name in self.fields if data.get(name)}


def _admins_only(request: AuthedRequest) -> None:
    if not is_admin(request.user):
        raise PermissionDenied("The audit log is for admins.")


def _shown(value: Any) -> str:
    if value is None:
        return "\N{EN DASH}"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _details(entry: AuditEntry) -> dict[str, Any]:
    """What changed, as rows of (field, before, after), and the other facts as (name, value)."""
    before = entry.before if isinstance(entry.before, dict) else {}
    after = entry.after if isinstance(entry.after, dict) else {}
    data = entry.data if isinstance(entry.data, dict) else {}
    names = list(dict.fromkeys([*before, *after]))
    return {
        "changes": [
            (
                name,
                _shown(before[name]) if name in before else "",
                _shown(after[name]) if name in after else "",
            )
            for name in names
        ],
        "data": [(name, _shown(value)) for name, value in data.items()],
    }


@require_safe
def audit_log(request: AuthedRequest) -> HttpResponse:
    _admins_only(request)
    form = AuditFilterForm(request.GET)
    entries = form.entries()
    before = request.GET.get("before", "")
    if before.isdigit():
        # Keyset paging: one query whatever the page, unlike an offset into millions.
        entries = entries.filter(id__lt=int(before))
    page = list(entries[: PAGE_SIZE + 1])
    older = ""
    if len(page) > PAGE_SIZE:
        page = page[:PAGE_SIZE]
        older = urlencode({**form.used(), "before": str(page[-1].pk)})
    return render(
        request,
        "governance/audit.html",
        {
            "form": form,
            "rows": [(entry, _details(entry)) for entry in page],
            "older": older,
            "paged": before.isdigit(),
            "filters": urlencode(form.used()),
        },
    )


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a stream."""

    def write(self, value: str) -> str:
        return value


def _csv_row(entry: AuditEntry) -> list[str]:
    return [
        csv_cell(value)
        for value in (
            entry.at.isoformat(),
            entry.actor_name,
            entry.ip or "",
            entry.action,
            entry.object_type,
            entry.object_id,
            entry.object_repr,
            json.dumps(entry.before, ensure_ascii=False, sort_keys=True),
            json.dumps(entry.after, ensure_ascii=False, sort_keys=True),
            json.dumps(entry.data, ensure_ascii=False, sort_keys=True),
        )
    ]


@require_safe
def audit_export(request: AuthedRequest) -> StreamingHttpResponse:
    _admins_only(request)
    form = AuditFilterForm(request.GET)
    # The export holds what existed when it was asked for, and says so in its own entry.
    newest = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    entries = form.entries().filter(id__lte=newest)
    audit_record(
        action="audit.exported", request=request, filters=form.used(), rows=entries.count()
    )
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield "\ufeff"  # so spreadsheets read the file as UTF-8
        yield writer.writerow(CSV_COLUMNS)
        for entry in entries.iterator(chunk_size=1000):
            yield writer.writerow(_csv_row(entry))

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    filename = f"audit-log-{timezone.localdate():%Y-%m-%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
