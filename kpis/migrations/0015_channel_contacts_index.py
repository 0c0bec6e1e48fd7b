"""The index of a channel's conversations by day also holds their contact and the days of
the contact's previous conversations, so the contacts who came back from another channel in a
range are found without reading the rows."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0014_agents_medians_from_indexes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="conversationfact",
            index=models.Index(
                fields=["channel", "day"],
                include=("contact", "previous_day", "channel_previous_day"),
                name="kpi_conv_channel_contacts_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="conversationfact", name="kpi_conv_channel_idx"),
    ]
