import csv
from collections.abc import Iterator

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from contacts.forms import ContactForm, ContactImportForm
from contacts.models import Contact, ContactImport
from contacts.selectors import (
    contact_for_user,
    contact_import_for,
    contact_imports_for,
    contact_list,
    contacts_export_rows,
    merge_candidates,
)
from contacts.services import contact_create, contact_import_create, contact_update
from contacts.tasks import import_contacts
from conversations.selectors import contact_history
from governance.roles import is_manager_or_admin
from scrm.types import AuthedRequest


def _search(request: AuthedRequest) -> str:
    return request.GET.get("q", "").strip()[:200]


def _contact_or_404(request: AuthedRequest, pk: int) -> Contact:
    contact = contact_for_user(user=request.user, pk=pk)
    if contact is None:
        raise Http404("No such contact.")
    return contact


def _bulk_access(request: AuthedRequest) -> None:
    # Copying customer data in or out in bulk is a governance matter, not an agent's task.
    if not is_manager_or_admin(request.user):
        raise PermissionDenied("Exporting and importing contacts is for managers and admins.")


def contact_list_view(request: AuthedRequest) -> HttpResponse:
    search = _search(request)
    paginator = Paginator(contact_list(user=request.user, search=search), 50)
    page = paginator.get_page(request.GET.get("page"))
    return render(
        request,
        "contacts/list.html",
        {"page": page, "search": search, "can_bulk": is_manager_or_admin(request.user)},
    )


def contact_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    contact = _contact_or_404(request, pk)
    history = contact_history(user=request.user, contact_id=contact.pk, limit=100)
    return render(
        request,
        "contacts/detail.html",
        {
            "contact": contact,
            "history": history,
            "merge_candidates": merge_candidates(user=request.user, contact_id=contact.pk),
        },
    )


def contact_create_view(request: AuthedRequest) -> HttpResponse:
    form = ContactForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        contact = contact_create(data=form.contact_data(), actor=request.user)
        messages.success(request, f"{contact} added.")
        return redirect("contacts:detail", pk=contact.pk)
    return render(request, "contacts/form.html", {"form": form, "contact": None})


def contact_edit(request: AuthedRequest, pk: int) -> HttpResponse:
    contact = _contact_or_404(request, pk)
    form = ContactForm(request.POST or None, contact=contact)
    if request.method == "POST" and form.is_valid():
        contact_update(contact=contact, data=form.contact_data(), actor=request.user)
        messages.success(request, f"{contact} saved.")
        return redirect("contacts:detail", pk=contact.pk)
    return render(request, "contacts/form.html", {"form": form, "contact": contact})


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a stream."""

    def write(self, value: str) -> str:
        return value


def contact_export(request: AuthedRequest) -> StreamingHttpResponse:
    _bulk_access(request)
    writer = csv.writer(_Echo())
    rows = contacts_export_rows(user=request.user, search=_search(request))

    def lines() -> Iterator[str]:
        yield "\ufeff"  # so spreadsheets read the file as UTF-8
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    filename = f"contacts-{timezone.localdate():%Y-%m-%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def contact_import_view(request: AuthedRequest) -> HttpResponse:
    _bulk_access(request)
    form = ContactImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        job = contact_import_create(
            file=form.import_file, file_name=form.cleaned_data["file"].name, actor=request.user
        )
        transaction.on_commit(lambda: import_contacts.delay(job.pk))
        return redirect("contacts:import_detail", pk=job.pk)
    return render(
        request,
        "contacts/import.html",
        {"form": form, "imports": contact_imports_for(user=request.user)[:10]},
    )


def _import_or_404(request: AuthedRequest, pk: int) -> ContactImport:
    _bulk_access(request)
    job = contact_import_for(user=request.user, pk=pk)
    if job is None:
        raise Http404("No such import.")
    return job


def contact_import_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    return render(request, "contacts/import_detail.html", {"job": _import_or_404(request, pk)})


def contact_import_progress(request: AuthedRequest, pk: int) -> HttpResponse:
    return render(request, "contacts/_import_progress.html", {"job": _import_or_404(request, pk)})
