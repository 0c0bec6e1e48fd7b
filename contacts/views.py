import csv
from collections.abc import Iterator

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from contacts.forms import ContactForm, ContactImportForm
from contacts.models import Contact, ContactImport, ContactMerge, MergeSuggestion, SocialIdentity
from contacts.selectors import (
    contact_for_user,
    contact_import_for,
    contact_imports_for,
    contact_list,
    contacts_export_rows,
    contacts_visible_to,
    merge_candidates,
    merged_contact_destination,
    merges_into,
)
from contacts.services import (
    MergeRefused,
    contact_create,
    contact_import_create,
    contact_merge,
    contact_merge_undo,
    contact_update,
    identity_move,
    merge_suggestion_dismiss,
)
from contacts.tasks import import_contacts
from conversations.selectors import contact_history
from governance.audit import audit_record
from governance.roles import is_manager_or_admin
from governance.subject_rights import (
    contact_data_export,
    contact_erase,
    contact_is_erased,
    erase_confirmation_errors,
    erase_phrase,
    erase_token_issue,
    erase_token_take,
)
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
    destination = merged_contact_destination(user=request.user, contact_id=pk)
    if destination is not None:
        return redirect("contacts:detail", pk=destination.pk)
    contact = _contact_or_404(request, pk)
    history = contact_history(user=request.user, contact_id=contact.pk, limit=100)
    return render(
        request,
        "contacts/detail.html",
        {
            "contact": contact,
            "history": history,
            "merge_candidates": merge_candidates(user=request.user, contact_id=contact.pk),
            "merges": merges_into(contact_id=contact.pk),
            "can_handle_data_rights": is_manager_or_admin(request.user),
            "is_erased": contact_is_erased(contact=contact),
        },
    )


@require_POST
def contact_merge_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """Merge another contact (both visible to the user) into this one."""
    kept = _contact_or_404(request, pk)
    other = request.POST.get("other", "")
    merged = (
        contacts_visible_to(user=request.user)
        .filter(pk=int(other) if other.isdigit() else 0)
        .first()
    )
    if merged is None:
        raise Http404("No such contact.")
    try:
        contact_merge(merged=merged, kept=kept, actor=request.user)
    except MergeRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{merged} was merged into {kept}. You can undo it below.")
    return redirect(_next_or(request, reverse("contacts:detail", args=[kept.pk])))


@require_POST
def contact_merge_undo_view(request: AuthedRequest, pk: int) -> HttpResponse:
    merge = get_object_or_404(ContactMerge, pk=pk)
    _contact_or_404(request, merge.kept_id)
    try:
        contact_merge_undo(merge=merge, actor=request.user)
    except MergeRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The merge was undone.")
    return redirect("contacts:detail", pk=merge.kept_id)


@require_POST
def merge_suggestion_dismiss_view(request: AuthedRequest, pk: int) -> HttpResponse:
    suggestion = get_object_or_404(MergeSuggestion, pk=pk)
    for contact_id in (suggestion.contact_id, suggestion.other_id):
        _contact_or_404(request, contact_id)
    merge_suggestion_dismiss(suggestion=suggestion)
    messages.success(request, "Suggestion dismissed.")
    return redirect(_next_or(request, reverse("contacts:detail", args=[suggestion.contact_id])))


@require_POST
def identity_move_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """Move one of a contact's identities to another contact, named by number or email."""
    identity = get_object_or_404(SocialIdentity, pk=pk)
    source = _contact_or_404(request, identity.contact_id)
    wanted = request.POST.get("to", "").strip()
    visible = contacts_visible_to(user=request.user)
    target = (
        visible.filter(pk=int(wanted)).first()
        if wanted.isdigit()
        else visible.filter(email__iexact=wanted).first()
        if wanted
        else None
    )
    if target is None:
        messages.error(request, f"No contact {wanted!r} that you can see.")
        return redirect("contacts:detail", pk=source.pk)
    try:
        move = identity_move(identity=identity, to=target, actor=request.user)
    except MergeRefused as exc:
        messages.error(request, str(exc))
        return redirect("contacts:detail", pk=source.pk)
    moved = len(move.conversation_ids)
    plural = "s" if moved != 1 else ""
    messages.success(
        request, f"{identity} now belongs to {target}, with {moved} conversation{plural}."
    )
    return redirect("contacts:detail", pk=target.pk)


def _next_or(request: AuthedRequest, default: str) -> str:
    """The page to go back to, if it is one of ours; never another site."""
    next_url = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return next_url if next_url and safe else default


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
        return redirect(_next_or(request, reverse("contacts:detail", args=[contact.pk])))
    return render(request, "contacts/form.html", {"form": form, "contact": contact})


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a stream."""

    def write(self, value: str) -> str:
        return value


def contact_export(request: AuthedRequest) -> StreamingHttpResponse:
    _bulk_access(request)
    writer = csv.writer(_Echo())
    search = _search(request)
    rows = contacts_export_rows(user=request.user, search=search)
    # Recorded before streaming: a download cut short may still have carried data away.
    audit_record(
        action="contacts.exported",
        request=request,
        search=search,
        rows=contact_list(user=request.user, search=search).count(),
    )

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


# --- Data-subject rights: export and erasure (governance.subject_rights does the work) ---


def _data_rights_contact(request: AuthedRequest, pk: int) -> Contact:
    if not is_manager_or_admin(request.user):
        raise PermissionDenied("Exporting and erasing a contact's data is for managers and admins.")
    return _contact_or_404(request, pk)


def contact_data_export_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """GET explains what the download holds; POST downloads it (and is audited)."""
    contact = _data_rights_contact(request, pk)
    if request.method != "POST":
        return render(request, "contacts/export_data.html", {"contact": contact})
    archive = contact_data_export(contact=contact, actor=request.user, request=request)
    response = HttpResponse(archive, content_type="application/zip")
    filename = f"contact-{contact.pk}-data-{timezone.localdate():%Y-%m-%d}.zip"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def contact_erase_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """The first confirmation: the typed name and the tick. It leads to the final one."""
    contact = _data_rights_contact(request, pk)
    errors: list[str] = []
    if request.method == "POST":
        errors = erase_confirmation_errors(
            contact=contact,
            typed=request.POST.get("confirm_text", ""),
            understood=request.POST.get("understood") == "yes",
        )
        if not errors:
            token = erase_token_issue(session=request.session, contact=contact)
            return render(
                request, "contacts/erase_final.html", {"contact": contact, "token": token}
            )
    return render(
        request,
        "contacts/erase.html",
        {"contact": contact, "errors": errors, "phrase": erase_phrase(contact=contact)},
    )


@require_POST
def contact_erase_confirm_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """The second confirmation: only with the one-time token the first one issued."""
    contact = _data_rights_contact(request, pk)
    token = request.POST.get("token", "")
    if not erase_token_take(session=request.session, contact=contact, token=token):
        messages.error(
            request, "Nothing was erased: the confirmation was missing or expired. Start again."
        )
        return redirect("contacts:erase", pk=contact.pk)
    contact_erase(contact=contact, actor=request.user, request=request)
    messages.success(request, f"Contact #{contact.pk} was erased.")
    return redirect("contacts:detail", pk=contact.pk)
