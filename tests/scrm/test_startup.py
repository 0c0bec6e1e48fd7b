"""Long-lived processes put what they hold once started out of the garbage collector's reach."""

import gc
import importlib

import pytest
from celery import signals


@pytest.fixture
def frozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_startup_objects_freeze_leaves_what_the_process_holds_to_no_collection(frozen):
    from scrm.startup import startup_objects_freeze

    kept = [object() for _ in range(10)]
    startup_objects_freeze()
    assert gc.get_freeze_count() >= len(kept)


def test_the_wsgi_application_freezes_what_it_loaded(frozen):
    import scrm.wsgi

    gc.unfreeze()
    importlib.reload(scrm.wsgi)
    assert gc.get_freeze_count() > 0


@pytest.mark.parametrize("signal", [signals.worker_process_init, signals.worker_ready])
def test_workers_freeze_once_started(signal, frozen):
    from scrm.celery import app, worker_process_started

    receivers = [receiver() for _, receiver in signal.receivers]
    assert worker_process_started in receivers
    app.amqp.__dict__.pop("send_task_message", None)
    worker_process_started(sender=None)
    assert gc.get_freeze_count() > 0
    assert "send_task_message" in app.amqp.__dict__  # built, not left to the first publish
