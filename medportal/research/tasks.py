"""Thin tasks: enter the right schema, call a service."""

from __future__ import annotations

from celery import shared_task

from medportal.celery import TenantTask


@shared_task(base=TenantTask, ignore_result=True)
def invitations_make_task(request_id: str) -> int:
    """In a hospital's schema (the ``_schema_name`` header): invite its matching patients."""
    from medportal.research.models import ResearchRequest
    from medportal.research.services import invitations_make

    request = ResearchRequest.objects.filter(pk=request_id).first()
    return 0 if request is None else invitations_make(request=request)


@shared_task(ignore_result=True)
def aggregate_advance_task(request_id: str) -> bool:
    """In the public schema: move a secure count on as far as it can go."""
    from medportal.research.services import aggregate_advance

    return aggregate_advance(request_id=request_id)


@shared_task(base=TenantTask, ignore_result=True)
def release_task(request_id: str, admin_id: int) -> None:
    """In the hospital's schema: make the release an admin started."""
    from medportal.research.services import release_run

    release_run(request_id=request_id, admin_id=admin_id)
