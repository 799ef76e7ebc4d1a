"""API-wide pieces: errors are JSON with a message, never an HTML 500."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    # Services raise Django's ValidationError; answer it as a 400 with the messages.
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    from chain.services import TransactionRejected

    if isinstance(exc, TransactionRejected):
        # The hub's gate refused a signed transaction: the caller's change, not a crash.
        return Response(
            {"detail": f"The hub refused the transaction: {exc}"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return drf_exception_handler(exc, context)
