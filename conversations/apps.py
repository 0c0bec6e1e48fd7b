from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations"

    def ready(self) -> None:
        # Connects the signals that keep the webhook subscriptions' cache fresh.
        from conversations import webhook_events  # noqa: F401
