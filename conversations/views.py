from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from channels_ingest.models import ChannelAccount
from channels_ingest.platforms import REPLY_MAX_LENGTH
from channels_ingest.tasks import send_message
from contacts.selectors import merge_candidates
from conversations import services
from conversations.forms import NoteForm, ReplyForm, StatusForm
from conversations.models import Conversation, Status
from conversations.selectors import (
    INBOX_VIEWS,
    InboxFilters,
    contact_history,
    conversation_for_user,
    conversation_thread,
    inbox_counts,
    inbox_page,
)
from governance.selectors import channels_visible_to
from governance.services import outbound_check
from scrm.types import AuthedRequest


def inbox(request: AuthedRequest) -> HttpResponse:
    filters = InboxFilters.from_query(request.GET)
    page = inbox_page(
        user=request.user,
        filters=filters,
        after=request.GET.get("after", ""),
        size=settings.SCRM_INBOX_PAGE_SIZE,
    )
    context = {"page": page, "filters": filters}
    if request.htmx and request.GET.get("after"):
        return render(request, "conversations/_inbox_rows.html", context)
    context |= {
        "views": INBOX_VIEWS,
        "counts": inbox_counts(user=request.user),
        "statuses": Status.choices,
        "channels": channels_visible_to(user=request.user).only("id", "name", "platform"),
    }
    return render(request, "conversations/inbox.html", context)


def _conversation_or_404(request: AuthedRequest, pk: int) -> Conversation:
    conversation = conversation_for_user(user=request.user, pk=pk)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def conversation_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    channel: ChannelAccount = conversation.channel
    return render(
        request,
        "conversations/detail.html",
        {
            "conversation": conversation,
            "thread": conversation_thread(conversation=conversation),
            "history": [
                c
                for c in contact_history(user=request.user, contact_id=conversation.contact_id)
                if c.pk != conversation.pk
            ],
            "merge_candidates": merge_candidates(
                user=request.user, contact_id=conversation.contact_id
            ),
            "reply_form": ReplyForm(),
            "note_form": NoteForm(),
            "statuses": Status.choices,
            "reply_limit": REPLY_MAX_LENGTH.get(channel.platform),
            "can_reply": not channel.is_listen_only,
        },
    )


@require_POST
def conversation_reply(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    form = ReplyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Write something to send.")
        return redirect("conversations:detail", pk=pk)
    body = form.cleaned_data["body"]
    decision = outbound_check(user=request.user, channel=conversation.channel, text=body)
    if not decision.allowed:
        for reason in decision.reasons:
            messages.error(request, reason)
        return redirect("conversations:detail", pk=pk)
    message = services.conversation_reply_create(
        conversation=conversation, author=request.user, body=body
    )
    transaction.on_commit(lambda: send_message.delay(message.pk))
    messages.success(request, f"Reply queued for {conversation.channel.name}.")
    return redirect("conversations:detail", pk=pk)


@require_POST
def conversation_note(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    form = NoteForm(request.POST)
    if form.is_valid():
        services.conversation_note_add(
            conversation=conversation, author=request.user, body=form.cleaned_data["body"]
        )
    return redirect("conversations:detail", pk=pk)


@require_POST
def conversation_claim(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    services.conversation_assign(
        conversation=conversation, assignee=request.user, actor=request.user
    )
    messages.success(request, "Assigned to you.")
    return redirect("conversations:detail", pk=pk)


@require_POST
def conversation_status(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    form = StatusForm(request.POST)
    if form.is_valid():
        services.conversation_status_set(
            conversation=conversation, status=form.cleaned_data["status"], actor=request.user
        )
        messages.success(request, f"Status set to {conversation.get_status_display().lower()}.")
    return redirect("conversations:detail", pk=pk)
