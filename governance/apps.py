from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        # Permissions exist only once migrate has run, so the role groups are made after it.
        post_migrate.connect(_ensure_roles, dispatch_uid="governance.roles_ensure")


def _ensure_roles(sender: AppConfig, **kwargs: object) -> None:
    # Sent once per app, in INSTALLED_APPS order; re-running after each one is cheap and means
    # every app's permissions are granted once the last has migrated.
    from governance.services import roles_ensure

    roles_ensure(using=str(kwargs.get("using", "default")))
