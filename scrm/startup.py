"""What a long-lived process (a web server's worker, a Celery worker) does once the application
is loaded, before it serves anything."""

import gc


def startup_objects_freeze() -> None:
    """Put what the process holds now (modules, settings, URL patterns, templates, task
    registry) out of the cyclic garbage collector's reach. It lives as long as the process, so
    each full collection would only walk it again: on a dashboard request that was tens of
    milliseconds, the slowest renders. What is already garbage is collected first."""
    gc.collect()
    gc.freeze()
