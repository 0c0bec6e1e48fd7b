"""The beat schedule: every entry runs a task the workers know, and the SLA tick fires breaches."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from channels_ingest.pipeline import ingest
from conversations.models import SlaEvent, SlaEventKind, SlaPolicy
from scrm.celery import app
from tests.factories import ChannelFactory, post

pytestmark = pytest.mark.django_db


def test_every_beat_entry_names_a_task_the_workers_know():
    app.loader.import_default_modules()
    unknown = {
        name: entry["task"]
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
        if entry["task"] not in app.tasks
    }
    assert unknown == {}


def test_the_sla_tick_fires_a_breach_that_is_due():
    SlaPolicy.objects.create(name="Standard", first_response_minutes=60, resolution_minutes=None)
    ingest(channel=ChannelFactory(), posts=[post("p1", at=timezone.now() - timedelta(hours=3))])
    app.loader.import_default_modules()
    task = app.tasks[settings.CELERY_BEAT_SCHEDULE["check-slas"]["task"]]

    assert task.apply().get() >= 1

    assert SlaEvent.objects.filter(kind=SlaEventKind.BREACHED, target="first_response").exists()
    # The next tick finds nothing new to fire.
    assert task.apply().get() == 0
