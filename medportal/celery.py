"""The Celery app. tenant-schemas-celery carries the current schema in a
``_schema_name`` header and switches to it in the worker."""

from __future__ import annotations

import os

from celery.signals import worker_process_init
from django.db import connection
from tenant_schemas_celery.app import CeleryApp
from tenant_schemas_celery.task import TenantTask as LibraryTenantTask

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings")

app = CeleryApp("medportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The project package is not an installed app; its tasks module is named here.
app.conf.imports = ("medportal.tasks",)


@worker_process_init.connect
def _keep_database_connections(**kwargs) -> None:
    """Workers keep their PostgreSQL connection between tasks (a new backend per
    task costs several milliseconds, more than a whole block delivery); Django
    still drops it when it is older than this or fails its health check."""
    from django.conf import settings
    from django.db import connections

    for alias in connections:
        connections[alias].settings_dict["CONN_MAX_AGE"] = settings.CELERY_DATABASE_CONN_MAX_AGE
        connections[alias].settings_dict["CONN_HEALTH_CHECKS"] = True


class TenantTaskInPublicSchema(RuntimeError):
    pass


class TenantTask(LibraryTenantTask):
    """A task that must run inside a hospital's or research organisation's schema.

    If the schema switch fails, Celery only logs it and the task would run in the
    hub's public schema (STACK-NOTES trap 3); refuse instead of touching the hub.
    """

    abstract = True

    def __call__(self, *args, **kwargs):
        from django.conf import settings

        if connection.schema_name == settings.PUBLIC_SCHEMA_NAME:
            raise TenantTaskInPublicSchema(
                f"task {self.name} must run in a tenant schema, not {settings.PUBLIC_SCHEMA_NAME!r}"
            )
        return super().__call__(*args, **kwargs)
