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
def worker_objects_freeze(**kwargs: Any) -> None:
    """Each pool process once it has started (``worker_process_init``), and a worker without
    child processes once it is ready to consume (``worker_ready``)."""
    startup_objects_freeze()
