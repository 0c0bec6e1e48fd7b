from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations"

    def ready(self) -> None:
        from django.contrib.auth import user_logged_out

        # Connects the signals that keep the webhook subscriptions' cache fresh.
        from conversations import presence, webhook_events  # noqa: F401

        # Whoever logs out is given no more work by auto-assignment.
        user_logged_out.connect(presence.agent_logged_out, dispatch_uid="conversations.away")
