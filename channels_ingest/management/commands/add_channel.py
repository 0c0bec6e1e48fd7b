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
        parser.add_argument(
            "--mode", choices=ChannelMode.values, help="default: engage for a new channel"
        )
        parser.add_argument("--poll-interval", type=int, help="seconds; default 60")
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
        allowed = ", ".join(CREDENTIAL_FIELDS[platform]) or "none"
        for pair in options["credential"]:
            name, sep, value = pair.partition("=")
            if not sep:
                # Never repeat the argument: it may be a secret typed with the wrong separator.
                raise CommandError(f"--credential expects NAME=VALUE; {platform} takes: {allowed}.")
            if name not in CREDENTIAL_FIELDS[platform]:
                raise CommandError(f"Unknown credential {name!r}; {platform} takes: {allowed}.")
            credentials[name] = value
        by_slug = {t.slug: t for t in Team.objects.filter(slug__in=options["team"])}
        missing = set(options["team"]) - set(by_slug)
        if missing:
            raise CommandError(f"No team with slug {', '.join(sorted(missing))}.")
        teams = [by_slug[slug] for slug in dict.fromkeys(options["team"])]  # in the order given
        if options["poll_interval"] is not None and options["poll_interval"] < 10:
            raise CommandError("Poll at most every 10 seconds.")

        channel = ChannelAccount.objects.filter(name=options["name"]).first()
        created = channel is None
        if channel is None:
            channel = ChannelAccount(name=options["name"], platform=platform)
        elif channel.platform != platform:
            raise CommandError(f"{channel.name} is a {channel.platform} channel.")
        channel.handle = options["handle"] or channel.handle
        channel.external_account_id = options["account_id"] or channel.external_account_id
        # Options not given keep what an existing channel has.
        if options["mode"]:
            channel.mode = options["mode"]
        if options["poll_interval"] is not None:
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
