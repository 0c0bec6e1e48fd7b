"""Escalation pages: escalate, raise, take back and answer from the conversation workspace,
and the link back where a department outside the app answers without an account."""

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from conversations.escalations import (
    ANSWER_OUTCOMES,
    SUPPORT_STEERS,
    EscalationMoved,
    escalation_answer,
    escalation_answerable_by,
    escalation_brief,
    escalation_from_token,
    escalation_is_addressed_to,
    escalation_open,
    escalation_raise,
    escalation_steerable_by,
    escalation_withdraw,
)
from conversations.models import (
    Conversation,
    Department,
    Escalation,
    EscalationPath,
    EscalationStatus,
    EscalationTrigger,
)
from conversations.selectors import conversations_visible_to
from governance.models import Role
from scrm.types import AuthedRequest

_TARGETS = ("path", "department", "user")


class EscalateForm(forms.Form):
    # The workspace offers one list of paths and departments, as "path:<id>" or
    # "department:<id>"; the separate fields serve other callers.
    target = forms.CharField(required=False)
    path = forms.ModelChoiceField(EscalationPath.objects.all(), required=False)
    department = forms.ModelChoiceField(Department.objects.all(), required=False)
    # A person as a target is someone who can take responsibility: a manager or an admin.
    user = forms.ModelChoiceField(
        User.objects.filter(
            Q(groups__name__in=[Role.MANAGER, Role.ADMIN]) | Q(is_superuser=True), is_active=True
        ).distinct(),
        required=False,
    )
    reason = forms.CharField(
        max_length=2000,
        error_messages={"required": "Say why: the department reads the reason first."},
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, _, pk = (data.get("target") or "").partition(":")
        if kind:
            if kind not in _TARGETS or not pk.isdigit():
                raise forms.ValidationError("Choose where to escalate from the list.")
            data[kind] = self.fields[kind].clean(pk)
        if sum(data.get(name) is not None for name in _TARGETS) != 1:
            raise forms.ValidationError("Choose one escalation path, department or person.")
        return data


class AnswerForm(forms.Form):
    answer = forms.CharField(
        max_length=5000, error_messages={"required": "Write an answer for support."}
    )
    outcome = forms.ChoiceField(choices=ANSWER_OUTCOMES, required=False)


class LinkAnswerForm(AnswerForm):
    name = forms.CharField(
        label="Your name", max_length=200, error_messages={"required": "Say who answers."}
    )


def _conversation_or_404(request: AuthedRequest, pk: int) -> Conversation:
    conversation = conversations_visible_to(user=request.user).filter(pk=pk).first()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _escalation_or_404(request: AuthedRequest, pk: int) -> Escalation:
    escalation = (
        Escalation.objects.filter(
            pk=pk, conversation__in=conversations_visible_to(user=request.user)
        )
        .select_related("department", "user")
        .first()
    )
    if escalation is None:
        raise Http404("No such escalation.")
    return escalation


def _form_errors(request: HttpRequest, form: forms.Form) -> None:
    for errors in form.errors.values():
        for error in errors:
            messages.error(request, str(error))


@require_POST
def conversation_escalate(request: AuthedRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request, pk)
    # A department sees the conversations escalated to it; escalating, or raising by asking
    # for the open escalation's path again, is support's.
    if not escalation_steerable_by(conversation=conversation, user=request.user):
        raise PermissionDenied(SUPPORT_STEERS)
    form = EscalateForm(request.POST)
    if not form.is_valid():
        _form_errors(request, form)
        return redirect("conversations:detail", pk=pk)
    try:
        escalation = escalation_open(
            conversation=conversation,
            trigger=EscalationTrigger.AGENT,
            actor=request.user,
            reason=form.cleaned_data["reason"],
            path=form.cleaned_data["path"],
            department=form.cleaned_data["department"],
            user=form.cleaned_data["user"],
        )
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Escalated to {escalation.target_name}.")
    return redirect("conversations:detail", pk=pk)


@require_POST
def escalation_raise_view(request: AuthedRequest, pk: int) -> HttpResponse:
    escalation = _escalation_or_404(request, pk)
    _support_side_or_403(request, escalation)
    try:
        escalation = escalation_raise(
            escalation=escalation,
            actor=request.user,
            reason=request.POST.get("reason", "")[:2000],
            from_level=_level_seen(request),
        )
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"Raised to level {escalation.level + 1}: {escalation.target_name}."
        )
    return redirect("conversations:detail", pk=escalation.conversation_id)


@require_POST
def escalation_withdraw_view(request: AuthedRequest, pk: int) -> HttpResponse:
    escalation = _escalation_or_404(request, pk)
    _support_side_or_403(request, escalation)
    try:
        escalation_withdraw(escalation=escalation, actor=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Taken back from {escalation.target_name}.")
    return redirect("conversations:detail", pk=escalation.conversation_id)


def _level_seen(request: AuthedRequest) -> int | None:
    """The escalation's level the page showed (its raise form sends it), if given."""
    value = request.POST.get("level", "")
    return int(value) if value.isdigit() else None


def _support_side_or_403(request: AuthedRequest, escalation: Escalation) -> None:
    if not escalation_steerable_by(conversation=escalation.conversation, user=request.user):
        raise PermissionDenied(SUPPORT_STEERS)


@require_POST
def escalation_answer_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """The answer given in the app: by the department's team, the person escalated to, or a
    manager. They may answer even where their teams do not watch the channel."""
    escalation = Escalation.objects.select_related("department", "user").filter(pk=pk).first()
    if escalation is None:
        raise Http404("No such escalation.")
    visible = conversations_visible_to(user=request.user).filter(pk=escalation.conversation_id)
    addressed = escalation_is_addressed_to(escalation=escalation, user=request.user)
    if not addressed and not visible.exists():
        raise Http404("No such escalation.")
    back = redirect("conversations:detail", pk=escalation.conversation_id)
    if not escalation_answerable_by(escalation=escalation, user=request.user):
        if escalation.status != EscalationStatus.OPEN:
            messages.error(request, "This escalation was already answered.")
        else:
            messages.error(
                request,
                f"Only {escalation.target_name} or a manager answers this escalation.",
            )
        return back
    form = AnswerForm(request.POST)
    if not form.is_valid():
        _form_errors(request, form)
        return back
    try:
        escalation_answer(
            escalation=escalation,
            answer=form.cleaned_data["answer"],
            outcome=form.cleaned_data["outcome"],
            answered_by=request.user,
            # As checked above: raised since, it is no longer theirs to answer.
            level=escalation.level,
        )
    except ValueError as exc:
        messages.error(request, str(exc))
        return back
    messages.success(request, "Answer sent back to support.")
    # A department's team may have seen the conversation only while it waited on them.
    return back if visible.exists() else redirect("conversations:inbox")


@login_not_required
@require_http_methods(["GET", "POST"])
def escalation_answer_link(request: HttpRequest, token: str) -> HttpResponse:
    """The link back for departments outside the app: the signed token is the only key."""
    try:
        escalation = escalation_from_token(token)
    except (signing.BadSignature, Escalation.DoesNotExist):
        return render(request, "conversations/escalation_link_invalid.html", status=404)
    answered_now = False
    if request.method == "POST" and escalation.status == EscalationStatus.OPEN:
        form = LinkAnswerForm(request.POST)
        if form.is_valid():
            try:
                escalation = escalation_answer(
                    escalation=escalation,
                    answer=form.cleaned_data["answer"],
                    outcome=form.cleaned_data["outcome"],
                    answered_by=None,
                    answered_by_name=form.cleaned_data["name"],
                    level=escalation.level,  # the link's level
                )
                answered_now = True
            except EscalationMoved:
                # Raised meanwhile: this link no longer answers, as it would not if opened now.
                return render(request, "conversations/escalation_link_invalid.html", status=404)
            except ValueError as exc:
                # Answered by someone else a moment ago: shown as answered below.
                escalation.refresh_from_db()
                form.add_error(None, str(exc))
    else:
        form = LinkAnswerForm()
    return render(
        request,
        "conversations/escalation_answer.html",
        {
            "escalation": escalation,
            "brief": escalation_brief(escalation=escalation),
            "form": form,
            "answered_now": answered_now,
            "outcomes": ANSWER_OUTCOMES,
        },
    )
