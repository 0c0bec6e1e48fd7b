"""The indexes that read the first responses and the resolutions of a range by duration also
hold the agent who answered or resolved, so the agents' medians are read from them without
the rows."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0013_agent_counts"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="conversationfact",
            index=models.Index(
                fields=["resolved_day", "resolution_seconds"],
                include=("channel", "resolved_by"),
                name="kpi_conv_resolution_by_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="conversationfact", name="kpi_conv_resolution_idx"),
        migrations.AddIndex(
            model_name="responsefact",
            index=models.Index(
                fields=["is_first", "day", "seconds"],
                include=("channel", "agent"),
                name="kpi_response_agent_secs_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="responsefact", name="kpi_response_seconds_idx"),
    ]
