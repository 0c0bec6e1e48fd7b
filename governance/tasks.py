"""Celery tasks of governance: thin wrappers around services."""

from celery import shared_task

from governance.approvals import approvals_expire
from governance.retention import retention_apply


@shared_task(acks_late=True)
def apply_retention() -> int:
    """Beat, nightly: apply every channel's retention policy. Safe to run twice: a second run
    finds nothing left to do. Returns how many channels' runs were recorded."""
    return len(retention_apply())


@shared_task
def expire_approvals() -> int:
    """Beat: held messages past their deadline expire, unsent, and the requester is told.
    Each approval is claimed, so a second run (or an approver at the same moment) is harmless."""
    return approvals_expire()
