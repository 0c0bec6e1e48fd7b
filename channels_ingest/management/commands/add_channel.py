"""Add or update a channel account from the command line, for scripted set-ups.

    python manage.py add_channel --platform x --name "Acme on X" --account-id 2244994945 \\
        --credential bearer_token=... --credential consumer_secret=... --team care
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from channels_ingest.models import ChannelAccount, ChannelMode
from channels_ingest.platforms import Platform
from channels_ingest.services import CREDENTIAL_FIELDS, channel_save
from governance.models import ChannelAccess, Team


class Command(BaseCommand):
    help = "Add a channel account (or update the one with the same name)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--platform", required=True, choices=Platform.values)
        parser.add_argument("--name", required=True)
        parser.add_argument("--handle", default="")
        parser.add_argument("--account-id", default="", help="X user id or Facebook Page id")
        parser.add_argument("--mode", choices=ChannelMode.values, default=ChannelMode.ENGAGE)
        parser.add_argument("--poll-interval", type=int, default=60)
        parser.add_argument("--keyword", action="append", default=[], help="repeatable")
        parser.add_argument(
            "--credential", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
        )
        parser.add_argument(
            "--team", action="append", default=[], metavar="SLUG", help="teams that may reply"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        platform = options["platform"]
        credentials = {}
        for pair in options["credential"]:
            name, sep, value = pair.partition("=")
            if not sep or name not in CREDENTIAL_FIELDS[platform]:
                allowed = ", ".join(CREDENTIAL_FIELDS[platform]) or "none"
                raise CommandError(f"Bad --credential {name!r}; {platform} takes: {allowed}.")
            credentials[name] = value
        teams = list(Team.objects.filter(slug__in=options["team"]))
        missing = set(options["team"]) - {t.slug for t in teams}
        if missing:
            raise CommandError(f"No team with slug {', '.join(sorted(missing))}.")
        if options["poll_interval"] < 10:
            raise CommandError("Poll at most every 10 seconds.")

        channel = ChannelAccount.objects.filter(name=options["name"]).first()
        created = channel is None
        if channel is None:
            channel = ChannelAccount(name=options["name"], platform=platform)
        elif channel.platform != platform:
            raise CommandError(f"{channel.name} is a {channel.platform} channel.")
        channel.handle = options["handle"] or channel.handle
        channel.external_account_id = options["account_id"] or channel.external_account_id
        channel.mode = options["mode"]
        channel.poll_interval_seconds = options["poll_interval"]
        if options["keyword"]:
            channel.settings = {**(channel.settings or {}), "keywords": options["keyword"]}
        if teams:
            channel.default_team = teams[0]
        channel_save(channel=channel, credentials=credentials)
        for team in teams:
            ChannelAccess.objects.get_or_create(channel=channel, team=team)
        verb = "Added" if created else "Updated"
        self.stdout.write(f"{verb} channel #{channel.pk} {channel.name} ({platform}).")
