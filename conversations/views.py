from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from channels_ingest.models import ChannelAccount
from channels_ingest.platforms import REPLY_MAX_LENGTH, Platform
from contacts.selectors import merge_candidates
from conversations import services
from conversations.escalations import escalation_panel_context
from conversations.forms import (
    SNOOZE_CHOICES,
    AssignForm,
    NoteForm,
    PriorityForm,
    ReplyForm,
    SnoozeForm,
    StatusForm,
    TagForm,
)
from conversations.models import (
    Conversation,
    Notification,
    Priority,
    SlaState,
    Status,
)
from conversations.presence import agent_seen, presence_report
from conversations.selectors import (
    INBOX_VIEWS,
    SORTS,
    InboxFilters,
    assignable_agents,
    canned_responses_for,
    contact_history,
    conversation_for_user,
    conversation_takeable_by,
    conversation_thread,
    conversation_timeline,
    conversation_workspace,
    inbox_new_since,
    inbox_page,
    inbox_view_counts,
    notifications_for,
    tag_suggestions,
)
from conversations.sla import sla_targets_shown
from governance.access import access_of
from governance.approvals import reply_retry, reply_submit
from governance.models import Team
from governance.roles import is_admin
from governance.selectors import channels_visible_to
from scrm.jinja2 import fragment
from scrm.types import AuthedRequest


def inbox(request: AuthedRequest) -> HttpResponse:
    filters = InboxFilters.from_query(request.GET)
    agent_seen(user_id=request.user.pk)
    page = inbox_page(
        user=request.user,
        filters=filters,
        after=request.GET.get("after", ""),
        size=settings.SCRM_INBOX_PAGE_SIZE,
    )
    context = {"page": page, "filters": filters, "query": filters.query_string()}
    if request.htmx and request.GET.get("after"):
        return render(request, "conversations/_inbox_rows.html", context, using="jinja2")
    context |= {
        "rows": fragment(request, "conversations/_inbox_rows.html", context),
        "views": INBOX_VIEWS,
        # As last counted: the poll runs on load and counts them again when due.
        "counts": inbox_view_counts(user=request.user, recount=False),
        "statuses": Status.choices,
        "priorities": Priority.choices,
        "platforms": Platform.choices,
        "sla_states": SlaState.choices,
        "sorts": SORTS,
        "channels": channels_visible_to(user=request.user).only("id", "name", "platform"),
        "teams": (
            Team.objects.order_by("name").values_list("id", "name")
            if is_admin(request.user)
            else access_of(request.user).teams
        ),
        "drawn_at": timezone.now().isoformat(),
        "bulk_statuses": [
            (s, label) for s, label in Status.choices if s not in (Status.NEW, Status.ESCALATED)
        ],
    }
    return render(request, "conversations/inbox.html", context)


def inbox_updates(request: AuthedRequest) -> HttpResponse:
    """Polled by the inbox: how many conversations of this list moved since it was drawn.
    Announced, not inserted, so the agent's place in the list never jumps; the views' counts
    come along, counted again when due (``inbox_view_counts``)."""
    filters = InboxFilters.from_query(request.GET)
    agent_seen(user_id=request.user.pk)
    since = parse_datetime(request.GET.get("since", "")) or timezone.now()
    count = inbox_new_since(user=request.user, filters=filters, since=since)
    # The views' counts are refreshed out of band with it, so they stay live too; this is
    # where they are counted, the page only shows them.
    return render(
        request,
        "conversations/_inbox_updates.html",
        {
            "count": count,
            "query": filters.query_string(),
            "counts": inbox_view_counts(user=request.user),
        },
    )


@require_POST
def inbox_bulk(request: AuthedRequest) -> HttpResponse:
    """Apply one action to the ticked conversations the user may see."""
    ids = [int(pk) for pk in request.POST.getlist("ids") if pk.isdigit()]
    action, _, status = request.POST.get("action", "").partition(":")
    try:
        outcomes = services.conversations_bulk_apply(
            user=request.user,
            ids=ids,
            action=action,
            status=status,
            tag=request.POST.get("tag", ""),
        )
    except ValueError:
        messages.error(request, "Choose an action for the selected conversations.")
        outcomes = []
    done = sum(outcome.done for outcome in outcomes)
    if done:
        messages.success(request, f"Done for {done} conversation{'s' if done != 1 else ''}.")
    back = request.POST.get("next", "")
    return redirect(f"{reverse('conversations:inbox')}?{back}" if back else "conversations:inbox")


def _conversation_or_404(request: AuthedRequest, pk: int) -> Conversation:
    conversation = conversation_for_user(user=request.user, pk=pk)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _page_anchor(request: AuthedRequest, name: str) -> int | None:
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() else None


def _thread_context(conversation: Conversation, before: int | None) -> dict[str, object]:
    thread = conversation_thread(
        conversation=conversation, before=before, size=settings.SCRM_THREAD_PAGE_SIZE
    )
    return {"conversation": conversation, "thread": thread}


def _timeline_context(conversation: Conversation, before: int | None) -> dict[str, object]:
    timeline = conversation_timeline(
        conversation=conversation, before=before, size=settings.SCRM_TIMELINE_PAGE_SIZE
    )
    return {"timeline": timeline}


def conversation_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    workspace = conversation_workspace(user=request.user, pk=pk)
    if workspace is None:
        raise Http404("No such conversation.")
    conversation = workspace.conversation
    channel: ChannelAccount = conversation.channel
    before = _page_anchor(request, "before")
    events_before = _page_anchor(request, "events_before")
    if request.htmx and before is not None:
        # "Show earlier messages": the older page goes in above the messages shown.
        return render(
            request,
            "conversations/_thread.html",
            _thread_context(conversation, before),
            using="jinja2",
        )
    if request.htmx and events_before is not None:
        # "Show older events": the next page goes in below the events shown.
        return render(
            request,
            "conversations/_timeline.html",
            _timeline_context(conversation, events_before),
            using="jinja2",
        )
    thread_context = _thread_context(conversation, before)
    timeline_context = _timeline_context(conversation, events_before)
    return render(
        request,
        "conversations/detail.html",
        {
            "conversation": conversation,
            "workspace": workspace,
            "sla_targets": sla_targets_shown(conversation, now=timezone.now()),
            "thread_html": fragment(request, "conversations/_thread.html", thread_context),
            "history": [
                c
                for c in contact_history(user=request.user, contact_id=conversation.contact_id)
                if c.pk != conversation.pk
            ],
            "merge_candidates": merge_candidates(
                user=request.user, contact_id=conversation.contact_id
            )
            if workspace.has_merge_suggestions
            else [],
            "reply_form": ReplyForm(),
            "timeline_html": fragment(request, "conversations/_timeline.html", timeline_context),
            "canned_responses": workspace.canned_responses,
            "agents": workspace.agents,
            "priorities": Priority.choices,
            "known_tags": tag_suggestions(),
            "snooze_choices": SNOOZE_CHOICES,
            "snoozable": services.SNOOZABLE_STATUSES,
            "assigned_to_other": conversation.assignee_id not in (None, request.user.pk),
            "note_form": NoteForm(),
            # Escalating goes through the escalation panel, which says to whom and why.
            "statuses": [(s, label) for s, label in Status.choices if s != Status.ESCALATED],
            "reply_limit": REPLY_MAX_LENGTH.get(channel.platform),
            **escalation_panel_context(
                conversation=conversation,
                user=request.user,
                escalated=workspace.has_escalation,
                targets=workspace.escalation_targets,
            ),
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
    if conversation.assignee_id not in (None, request.user.pk) and not form.cleaned_data.get(
        "confirm_not_assignee"
    ):
        messages.error(
            request,
            f"{conversation.assignee} is assigned to this conversation: confirm to reply anyway.",
        )
        return redirect("conversations:detail", pk=pk)
    submitted = reply_submit(conversation=conversation, author=request.user, body=body)
    reasons = submitted.decision.reasons
    if submitted.message is None:
        for reason in reasons:
            messages.error(request, reason)
    elif submitted.approval is not None:
        messages.warning(request, "Waiting for approval: " + " ".join(reasons))
    else:
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
    if not conversation_takeable_by(conversation=conversation, user=request.user):
        messages.error(request, "Your teams may only view this channel, not take conversations.")
        return redirect("conversations:detail", pk=pk)
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
        conversation = services.conversation_status_set(
            conversation=conversation, status=form.cleaned_data["status"], actor=request.user
        )
        messages.success(request, f"Status set to {conversation.get_status_display().lower()}.")
    else:
        messages.error(request, "Choose a status; escalating goes through the escalation panel.")
    return redirect("conversations:detail", pk=pk)


@require_POST
def conversation_assign(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    form = AssignForm(request.POST, agents=assignable_agents(conversation=conversation))
    if form.is_valid():
        assignee = form.cleaned_data["assignee"]
        services.conversation_assign(
            conversation=conversation, assignee=assignee, actor=request.user
        )
        messages.success(request, f"Assigned to {assignee}." if assignee else "Unassigned.")
    else:
        messages.error(request, "That colleague cannot take conversations on this channel.")
    return redirect("conversations:detail", pk=pk)


@require_POST
def conversation_priority(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    form = PriorityForm(request.POST)
    if form.is_valid():
        services.conversation_priority_set(
            conversation=conversation, priority=form.cleaned_data["priority"], actor=request.user
        )
    return redirect("conversations:detail", pk=pk)


@require_POST
def conversation_tag(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    form = TagForm(request.POST)
    if form.is_valid():
        services.conversation_tag(
            conversation=conversation,
            tag=form.tag(),
            actor=request.user,
            add=not form.cleaned_data["remove"],
        )
    return redirect("conversations:detail", pk=pk)


@require_POST
def conversation_snooze(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    form = SnoozeForm(request.POST)
    if form.is_valid():
        until = form.cleaned_data["until"]
        try:
            services.conversation_snooze(conversation=conversation, until=until, actor=request.user)
        except ValueError as exc:
            messages.error(request, str(exc))
            return redirect("conversations:detail", pk=pk)
        messages.success(request, f"Snoozed until {timezone.localtime(until):%a %b %-d, %H:%M}.")
    else:
        for error in form.non_field_errors():
            messages.error(request, str(error))
    return redirect("conversations:detail", pk=pk)


@require_POST
def message_retry_view(request: AuthedRequest, pk: int, message_id: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    message = (
        conversation.messages.filter(pk=message_id, direction="out").exclude(kind="note").first()
    )
    if message is None:
        raise Http404("No such reply in this conversation.")
    retried = reply_retry(message=message, user=request.user)
    if not retried.decision.allowed:
        for reason in retried.decision.reasons:
            messages.error(request, reason)
    elif retried.queued:
        messages.success(request, "The reply is queued again.")
    else:
        messages.error(request, "Only a failed reply can be sent again.")
    return redirect("conversations:detail", pk=pk)


def canned_text(request: AuthedRequest, pk: int, canned_id: int) -> HttpResponse:
    """A canned response filled in for this conversation, for the reply box."""
    conversation = _conversation_or_404(request, pk)
    canned = next((c for c in canned_responses_for(user=request.user) if c.pk == canned_id), None)
    if canned is None:
        raise Http404("No such canned response.")
    text = services.canned_render(canned=canned, conversation=conversation, agent=request.user)
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


@require_POST
def conversation_presence(request: AuthedRequest, pk: int) -> HttpResponse:
    """The page reports itself every few seconds; the answer lists who else is here."""
    conversation = _conversation_or_404(request, pk)
    agent_seen(user_id=request.user.pk)
    others = presence_report(
        conversation_id=conversation.pk,
        user_id=request.user.pk,
        name=request.user.get_full_name() or request.user.get_username(),
        typing=request.POST.get("typing") == "1",
    )
    return render(request, "conversations/_presence.html", {"others": others})


def notifications(request: AuthedRequest) -> HttpResponse:
    """The user's mentions, newest first; unread ones are marked."""
    rows = list(
        notifications_for(user=request.user)
        .select_related("conversation__contact", "actor")
        .order_by("-created_at")[:100]
    )
    return render(request, "conversations/notifications.html", {"notifications": rows})


def notification_open(request: AuthedRequest, pk: int) -> HttpResponse:
    """Mark a mention read and go to its conversation (if the user may still see it)."""
    notification = get_object_or_404(Notification, pk=pk, recipient=request.user)
    services.notifications_mark_read(notifications=Notification.objects.filter(pk=pk))
    return redirect("conversations:detail", pk=notification.conversation_id)
