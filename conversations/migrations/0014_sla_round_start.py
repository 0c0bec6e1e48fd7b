from django.db import migrations, models
from django.db.models import Exists, Max, OuterRef, Q, Subquery

ENDED = ["resolved", "closed"]


def _rounds_started(apps, schema_editor):
    """An open conversation reopened before this field existed: its round started at its last
    reopening, by the customer (a "reopened" event) or by hand (a status change out of
    resolved or closed). The others started at creation, which NULL stands for."""
    Conversation = apps.get_model("conversations", "Conversation")
    Event = apps.get_model("conversations", "ConversationEvent")
    reopenings = Event.objects.filter(conversation_id=OuterRef("pk")).filter(
        Q(kind="reopened")
        | Q(kind="status_changed", data__previous__in=ENDED) & ~Q(data__status__in=ENDED)
    )
    last = (
        reopenings.order_by()
        .values("conversation_id")
        .annotate(last=Max("created_at"))
        .values("last")[:1]
    )
    Conversation.objects.exclude(status__in=ENDED).filter(Exists(reopenings)).update(
        sla_started_at=Subquery(last)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0013_breach_rules_retried"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="sla_started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(_rounds_started, migrations.RunPython.noop, elidable=True),
    ]
