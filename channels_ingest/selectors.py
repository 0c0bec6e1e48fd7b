"""Reads of channel accounts."""

from django.db.models import Count, Q, QuerySet

from channels_ingest.models import ChannelAccount, DeadLetterStatus


def channels_with_health() -> QuerySet[ChannelAccount]:
    """Every channel with its default team and its count of unhandled dead letters."""
    return ChannelAccount.objects.select_related("default_team").annotate(
        open_dead_letters=Count("dead_letters", filter=Q(dead_letters__status=DeadLetterStatus.NEW))
    )
