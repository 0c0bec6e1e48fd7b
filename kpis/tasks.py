import time

from celery import shared_task

from kpis.facts import facts_refresh


@shared_task(ignore_result=True)
def refresh_facts() -> int:
    """Compute the facts of conversations changed since the last run. Safe to run twice at
    once: both compute the same rows, and a mark is only cleared if nothing changed since."""
    return refresh_until_current(seconds=50.0)


def refresh_until_current(*, seconds: float, limit: int = 5000) -> int:
    """Refresh while full batches of marks come back, for at most about ``seconds``: under
    steady writes the run ends and the next beat carries on, instead of tasks piling up."""
    started = time.monotonic()
    total = 0
    while True:
        done = facts_refresh(limit=limit)
        total += done
        if done < limit or time.monotonic() - started > seconds:
            return total


@shared_task(ignore_result=True)
def send_digest() -> int:
    """Beat, hourly: the weekly digest, once it is due; sends nobody anything twice."""
    from kpis.digest import digest_send

    return digest_send()
