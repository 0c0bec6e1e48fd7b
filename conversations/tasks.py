"""Celery tasks of conversations: thin wrappers around services."""

from celery import shared_task

from conversations.services import snoozes_wake


@shared_task
def wake_snoozed_conversations() -> int:
    """Beat: conversations whose snooze has ended come back as open."""
    return snoozes_wake()
