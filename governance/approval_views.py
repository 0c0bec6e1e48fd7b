"""The approvals queue for managers, admins and named approvers, and the check an agent sees
under the reply box before sending."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from conversations.selectors import conversations_visible_to
from governance.approvals import (
    ApprovalError,
    NotAnApprover,
    approval_approve,
    approval_reject,
    approvals_decided_for,
    approvals_pending_for,
    is_approver,
)
from governance.models import ApprovalStatus, OutboundApproval
from governance.services import outbound_check
from scrm.types import AuthedRequest

HISTORY_SIZE = 100


def _approvers_only(request: AuthedRequest) -> None:
    if not is_approver(request.user):
        raise PermissionDenied("Approvals are decided by managers, admins and named approvers.")


def approvals_queue(request: AuthedRequest) -> HttpResponse:
    _approvers_only(request)
    pending = list(approvals_pending_for(user=request.user))
    return render(request, "governance/approvals.html", {"tab": "pending", "approvals": pending})


def approvals_decided(request: AuthedRequest) -> HttpResponse:
    _approvers_only(request)
    decided = list(approvals_decided_for(user=request.user)[:HISTORY_SIZE])
    return render(request, "governance/approvals.html", {"tab": "decided", "approvals": decided})


def _approval(request: AuthedRequest, pk: int) -> OutboundApproval:
    _approvers_only(request)
    return get_object_or_404(OutboundApproval, pk=pk)


@require_POST
def approval_approve_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """Approve as written, or (with ``body``) the edited text."""
    approval = _approval(request, pk)
    body = request.POST.get("body") if "edit" in request.POST else None
    try:
        approval = approval_approve(
            approval=approval, approver=request.user, body=body, request=request
        )
    except NotAnApprover as error:
        raise PermissionDenied(str(error)) from error
    except ApprovalError as error:
        messages.error(request, str(error))
        return redirect("governance:approvals")
    if approval.status == ApprovalStatus.APPROVED:
        messages.success(request, "Approved: the message is on its way.")
    else:
        messages.success(request, "First approval given: a second approver lets it out.")
    return redirect("governance:approvals")


@require_POST
def approval_reject_view(request: AuthedRequest, pk: int) -> HttpResponse:
    approval = _approval(request, pk)
    try:
        approval_reject(
            approval=approval,
            approver=request.user,
            note=request.POST.get("note", ""),
            request=request,
        )
    except NotAnApprover as error:
        raise PermissionDenied(str(error)) from error
    except ApprovalError as error:
        messages.error(request, str(error))
        return redirect("governance:approvals")
    messages.success(request, "Rejected: the author sees your note.")
    return redirect("governance:approvals")


@require_POST
def reply_check(request: AuthedRequest, pk: int) -> HttpResponse:
    """What the gate would answer for the reply being written in conversation ``pk``."""
    conversation = (
        conversations_visible_to(user=request.user).select_related("channel").filter(pk=pk).first()
    )
    if conversation is None:
        raise Http404("No such conversation.")
    text = request.POST.get("body", "")
    decision = outbound_check(user=request.user, channel=conversation.channel, text=text)
    return render(
        request,
        "governance/approvals_verdict.html",
        {"decision": decision, "empty": not text.strip()},
    )
