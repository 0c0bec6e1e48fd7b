from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import render

from contacts.selectors import contact_list, contacts_visible_to, merge_candidates
from conversations.selectors import contact_history
from scrm.types import AuthedRequest


def contact_list_view(request: AuthedRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:200]
    paginator = Paginator(contact_list(user=request.user, search=search), 50)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "contacts/list.html", {"page": page, "search": search})


def contact_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    contact = (
        contacts_visible_to(user=request.user).prefetch_related("identities").filter(pk=pk).first()
    )
    if contact is None:
        raise Http404("No such contact.")
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
