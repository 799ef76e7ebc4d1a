from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from accounts import receivers  # noqa: F401  (library hooks only)

        # Make MedPortal's Celery app the current one in every Django process,
        # so that tasks sent from pages and commands use its broker and queue.
        from medportal import celery  # noqa: F401
