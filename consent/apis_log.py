"""The access log over the JSON API: ``GET /api/v1/access-log/``.

A patient gets their own log, merged from every hospital that may hold
entries about them (the same rows as the "Who saw my records" page); a doctor
or admin gets this hospital's log (who read what here), optionally about one
of its patients. Anyone else is refused (403).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasRole, user_has_role
from accounts.roles import Role
from consent.models import Decision
from consent.selectors import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    AccessLogFilters,
    AccessLogPage,
    LogCursor,
    access_log_for_patient_account,
    access_log_for_staff,
)


@extend_schema_serializer(component_name="AccessLogEntry")
class AccessLogEntryOutputSerializer(serializers.Serializer):
    entry_id = serializers.IntegerField(help_text="The entry's id in its hospital's log.")
    hospital = serializers.CharField(help_text="Slug of the hospital that holds the entry.")
    hospital_name = serializers.CharField()
    created_at = serializers.DateTimeField()
    reader_name = serializers.CharField(
        help_text='The reader\'s name; for a patient, "You" or "Another patient".'
    )
    reader_role = serializers.CharField()
    reader_hospital = serializers.CharField()
    reader_hospital_name = serializers.CharField()
    patient_pseudonym = serializers.CharField()
    record_id = serializers.CharField(help_text="Blank for a read of the patient's profile.")
    sections = serializers.ListField(child=serializers.CharField())
    purpose = serializers.CharField()
    purpose_label = serializers.CharField()
    decision = serializers.ChoiceField(choices=Decision.choices)
    reason = serializers.CharField(help_text="The policy's reason, as logged.")
    reason_text = serializers.CharField(help_text="The reason in plain words.")
    is_emergency = serializers.BooleanField()
    is_anchored = serializers.BooleanField(
        help_text="Whether the entry is in a batch anchored on the ledger."
    )
    entry_hash = serializers.CharField()


@extend_schema_serializer(component_name="AccessLogPage")
class AccessLogPageOutputSerializer(serializers.Serializer):
    results = AccessLogEntryOutputSerializer(many=True)
    next_before = serializers.CharField(
        help_text="Pass as ``before`` for the next (older) page; empty on the last page."
    )


class AccessLogListApi(APIView):
    """Access-log entries, newest first, a page at a time (``before`` is the
    cursor from the previous page's ``next_before``)."""

    permission_classes = [HasRole.of(Role.PATIENT, Role.DOCTOR, Role.ADMIN)]

    class FilterSerializer(serializers.Serializer):
        decision = serializers.ChoiceField(choices=Decision.choices, required=False)
        hospital = serializers.SlugField(
            required=False, help_text="Only entries held by this hospital."
        )
        reader_hospital = serializers.SlugField(
            required=False, help_text="Only reads by staff or patients of this hospital."
        )
        emergencies_only = serializers.BooleanField(required=False, default=False)
        since = serializers.DateField(required=False, help_text="From this day, inclusive.")
        until = serializers.DateField(required=False, help_text="Up to this day, inclusive.")
        before = serializers.CharField(required=False, max_length=100)
        limit = serializers.IntegerField(
            required=False, default=PAGE_SIZE, min_value=1, max_value=MAX_PAGE_SIZE
        )
        patient = serializers.UUIDField(
            required=False, help_text="Staff only: entries about this patient of the hospital."
        )

        def validate_before(self, value: str) -> str:
            try:
                LogCursor.parse(value)
            except ValueError:
                raise serializers.ValidationError("Not a page cursor from this API.") from None
            return value

        def validate(self, data):
            if data.get("since") and data.get("until") and data["since"] > data["until"]:
                raise serializers.ValidationError({"until": ["Before since."]})
            return data

    @extend_schema(
        operation_id="access_log_list",
        parameters=[FilterSerializer],
        responses=AccessLogPageOutputSerializer,
    )
    def get(self, request):
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = dict(query.validated_data)
        patient_id = data.pop("patient", None)
        filters = AccessLogFilters(
            decision=data.get("decision", ""),
            hospital=data.get("hospital", ""),
            reader_hospital=data.get("reader_hospital", ""),
            emergencies_only=data["emergencies_only"],
            since=data.get("since"),
            until=data.get("until"),
            before=data.get("before", ""),
            limit=data["limit"],
        )
        if user_has_role(request.user, (Role.PATIENT,)):
            if patient_id is not None:
                raise serializers.ValidationError({"patient": ["Only for staff."]})
            page = access_log_for_patient_account(user=request.user, filters=filters)
        else:
            page = access_log_for_staff(user=request.user, filters=filters, patient_id=patient_id)
        return Response(AccessLogPageOutputSerializer(_page_data(page)).data)


def _page_data(page: AccessLogPage) -> dict:
    return {"results": page.rows, "next_before": page.next_before}
