from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        # Permissions exist only once migrate has run, so the role groups are made after it.
        post_migrate.connect(_ensure_roles, dispatch_uid="governance.roles_ensure")
        from django.contrib import admin

        from governance import signals
        from governance.audit import audit_every_admin

        signals.connect()
        # Every admin module was imported by the admin app, listed first, by now.
        audit_every_admin(admin.site)
        # Every way of signing in (login page, admin, tests) arms the two-factor step.
        from django.contrib.auth.signals import user_logged_in

        from governance.security import two_factor_on_login

        user_logged_in.connect(two_factor_on_login, dispatch_uid="governance.two_factor_on_login")


def _ensure_roles(sender: AppConfig, **kwargs: object) -> None:
    # Sent once per app, in INSTALLED_APPS order; re-running after each one is cheap and means
    # every app's permissions are granted once the last has migrated.
    from governance.services import roles_ensure

    roles_ensure(using=str(kwargs.get("using", "default")))
