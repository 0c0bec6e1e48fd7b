import os
from typing import Any

from celery import Celery, signals

from scrm.startup import startup_objects_freeze

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings")

app = Celery("scrm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_process_init.connect
@signals.worker_ready.connect
def worker_process_started(**kwargs: Any) -> None:
    """Each pool process once it has started (``worker_process_init``), and a worker without
    child processes once it is ready to consume (``worker_ready``): the app's task sender is
    built now rather than by the first task the process publishes (a rule's acknowledgement
    in the middle of an ingest batch would pay some milliseconds for it; building it opens no
    connection), then what the process holds is put out of the collector's reach."""
    app.amqp.send_task_message  # noqa: B018 (built on first use)
    startup_objects_freeze()
