from typing import Any

from django.core.management.base import BaseCommand

from channels_ingest.demo_seed import DEMO_PASSWORD, DEMO_USERS, seed_demo


class Command(BaseCommand):
    help = "Create demo users, teams, channels and 90 days of history. Safe to run again."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--days", type=int, default=90, help="Days of history to create.")

    def handle(self, *args: Any, days: int, **options: Any) -> None:
        report = seed_demo(days=days)
        self.stdout.write(
            f"Demo ready: {report.users_created} users, {report.channels_created} channels, "
            f"{report.posts_ingested} posts and {report.replies_sent} replies created."
        )
        self.stdout.write(f"Log in at http://127.0.0.1:8000 with password {DEMO_PASSWORD!r} as:")
        for user in DEMO_USERS:
            team = f", team {user.team}" if user.team else ""
            self.stdout.write(f"  {user.username:<8} {user.role.label}{team}")
