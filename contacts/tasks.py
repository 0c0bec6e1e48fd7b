"""Celery tasks of contacts: thin wrappers that take ids and call a service."""

from celery import shared_task

from contacts.services import contact_import_run, contact_imports_stalled


@shared_task(acks_late=True)
def import_contacts(job_id: int) -> None:
    contact_import_run(job_id=job_id)


@shared_task
def resume_stalled_imports() -> int:
    """Beat: imports whose task was lost or whose worker died are enqueued again."""
    stalled = contact_imports_stalled()
    for job_id in stalled:
        import_contacts.delay(job_id)
    return len(stalled)
