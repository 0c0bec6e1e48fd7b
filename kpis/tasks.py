from celery import shared_task

from kpis.facts import facts_refresh


@shared_task(ignore_result=True)
def refresh_facts() -> int:
    """Compute the facts of conversations changed since the last run. Safe to run twice at
    once: both compute the same rows, and a mark is only cleared if nothing changed since."""
    done = total = facts_refresh()
    while done:
        done = facts_refresh()
        total += done
    return total


@shared_task(ignore_result=True)
def send_digest() -> int:
    """Beat, hourly: the weekly digest, once it is due; sends nobody anything twice."""
    from kpis.digest import digest_send

    return digest_send()
