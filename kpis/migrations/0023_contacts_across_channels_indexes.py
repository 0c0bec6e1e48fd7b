"""Contacts of a scope of several channels, read from two small indexes.

The contact counts are kept per channel, so for a scope of some channels (a manager's) a
contact with conversations on two of them is counted twice; the few who changed channels in the
range are counted again from their facts. Those are the conversations whose contact's previous
conversation was on another channel: a partial index holds only them (one in fifteen in the
benchmark), and their contacts' conversations of the range are read with their channels from
the contact index, without the rows.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0022_first_resolved_day"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="conversationfact",
            index=models.Index(
                fields=["contact", "day"],
                include=("channel",),
                name="kpi_conv_contact_channel_idx",
            ),
        ),
        migrations.RemoveIndex(
            model_name="conversationfact",
            name="kpi_conv_contact_idx",
        ),
        migrations.AddIndex(
            model_name="conversationfact",
            index=models.Index(
                condition=models.Q(
                    ("previous_day__isnull", False),
                    models.Q(
                        ("channel_previous_day__isnull", True),
                        ("channel_previous_day__lt", models.F("previous_day")),
                        _connector="OR",
                    ),
                ),
                fields=["channel", "day"],
                include=("contact", "previous_day", "channel_previous_day"),
                name="kpi_conv_switched_idx",
            ),
        ),
    ]
