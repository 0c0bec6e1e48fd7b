import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0014_sla_round_start"),
        ("governance", "0005_api_tokens"),
    ]

    operations = [
        migrations.CreateModel(
            name="QueuedAssignment",
            fields=[
                (
                    "conversation",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="conversations.conversation",
                    ),
                ),
                ("queued_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "team",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="governance.team",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["queued_at", "conversation"], name="queued_assign_idx"
                    )
                ],
            },
        ),
    ]
