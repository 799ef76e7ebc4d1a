"""Friendly error pages that say what happened and nothing about the system."""

from __future__ import annotations

from django.http import HttpResponseServerError
from django.shortcuts import render
from django.template import loader


def _render(request, status: int, title: str, message: str):
    return render(
        request, "error.html", {"status": status, "title": title, "message": message}, status=status
    )


def bad_request(request, exception=None):
    return _render(
        request,
        400,
        "That request could not be understood",
        "Check the address or the form and try again.",
    )


def permission_denied(request, exception=None):
    return _render(
        request,
        403,
        "You do not have access to this page",
        "Your role at this organisation does not include it. If you think it should, "
        "ask your administrator.",
    )


def page_not_found(request, exception=None):
    return _render(
        request,
        404,
        "Page not found",
        "There is nothing at this address. Check it, or go back to the home page.",
    )


def csrf_failure(request, reason: str = ""):
    return _render(
        request,
        403,
        "Your form expired",
        "For your safety the form could not be sent. Go back, reload the page and try again.",
    )


def server_error(request):
    # No request context: the failure may be in the very code that builds it.
    return HttpResponseServerError(loader.render_to_string("500.html"))
