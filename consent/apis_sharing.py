"""Consents and access requests over the JSON API (/api/v1/...), with the same
rules as the Sharing pages: a patient lists, grants and revokes their own
consents and answers requests for their own pseudonyms; a doctor creates and
lists their own requests. Others get 403 (wrong role) or 404 (not theirs).
Validation errors are 400s with ``{field: [messages]}``."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasRole, user_has_role
from accounts.roles import Role
from consent.grants import GRANTEE_TYPES, PURPOSES
from consent.requests import (
    access_request_answer,
    access_request_create,
    access_requests_for_patient,
    access_requests_for_practitioner,
    grants_for_patient,
    sharing_grant,
    sharing_revoke,
)
from records.selectors import patient_get_for_user

PATIENTS = HasRole.of(Role.PATIENT)
DOCTORS = HasRole.of(Role.DOCTOR)
DOCTORS_AND_PATIENTS = HasRole.of(Role.DOCTOR, Role.PATIENT)


@extend_schema_serializer(component_name="Consent")
class ConsentOutputSerializer(serializers.Serializer):
    tx_hash = serializers.CharField()
    grantee_type = serializers.CharField()
    grantee_id = serializers.CharField()
    grantee_name = serializers.CharField()
    categories = serializers.ListField(child=serializers.CharField())
    purpose = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)
    is_expired = serializers.BooleanField()
    is_pending = serializers.BooleanField(help_text="Not sealed in a block yet.")


def _consent_data(row) -> dict:
    grant = row.grant
    return {
        "tx_hash": grant.tx_hash,
        "grantee_type": grant.grantee_type,
        "grantee_id": grant.grantee_id,
        "grantee_name": row.grantee.label,
        "categories": sorted(grant.categories),
        "purpose": grant.purpose,
        "expires_at": grant.expires_at,
        "is_expired": row.is_expired,
        "is_pending": grant.is_pending,
    }


@extend_schema_serializer(component_name="ConsentChange")
class ConsentChangeOutputSerializer(serializers.Serializer):
    tx_hash = serializers.CharField(help_text="The signed access transaction (see receipts).")


class ConsentListCreateApi(APIView):
    """GET: the patient's current grants. POST: grant a hospital or a doctor access."""

    permission_classes = [PATIENTS]

    @extend_schema_serializer(component_name="ConsentGrant")
    class InputSerializer(serializers.Serializer):
        grantee_type = serializers.ChoiceField(choices=GRANTEE_TYPES)
        grantee_id = serializers.CharField(
            max_length=64, help_text="A hospital's slug or a doctor's practitioner pseudonym."
        )
        categories = serializers.ListField(
            child=serializers.CharField(max_length=32),
            allow_empty=False,
            help_text="Category names or whole levels (normal, restricted, very_restricted).",
        )
        purpose = serializers.ChoiceField(choices=PURPOSES, default="treatment")
        password = serializers.CharField(
            write_only=True,
            trim_whitespace=False,
            style={"input_type": "password"},
            help_text="The patient's password: it opens the key that signs the change.",
        )
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    @extend_schema(operation_id="consents_list", responses=ConsentOutputSerializer(many=True))
    def get(self, request):
        rows = grants_for_patient(user=request.user)
        return Response(ConsentOutputSerializer([_consent_data(r) for r in rows], many=True).data)

    @extend_schema(
        operation_id="consents_create",
        request=InputSerializer,
        responses={201: ConsentChangeOutputSerializer, 400: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        submitted = sharing_grant(user=request.user, **given.validated_data)
        return Response({"tx_hash": submitted.hash}, status=status.HTTP_201_CREATED)


class ConsentRevokeApi(APIView):
    """POST: withdraw one of the patient's current grants."""

    permission_classes = [PATIENTS]

    @extend_schema_serializer(component_name="ConsentRevoke")
    class InputSerializer(serializers.Serializer):
        grantee_type = serializers.ChoiceField(choices=GRANTEE_TYPES)
        grantee_id = serializers.CharField(max_length=64)
        purpose = serializers.ChoiceField(choices=PURPOSES, default="treatment")
        password = serializers.CharField(
            write_only=True,
            trim_whitespace=False,
            style={"input_type": "password"},
            help_text="The patient's password: it opens the key that signs the change.",
        )

    @extend_schema(
        operation_id="consents_revoke",
        request=InputSerializer,
        responses={200: ConsentChangeOutputSerializer, 400: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        submitted = sharing_revoke(user=request.user, **given.validated_data)
        return Response({"tx_hash": submitted.hash})


@extend_schema_serializer(component_name="AccessRequest")
class AccessRequestOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    requester_tenant = serializers.CharField(source="requester_tenant.slug")
    requester_tenant_name = serializers.CharField(source="requester_tenant.name")
    practitioner_name = serializers.CharField()
    categories = serializers.ListField(child=serializers.CharField())
    purpose = serializers.CharField()
    reason = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    answered_at = serializers.DateTimeField(allow_null=True)
    granted_categories = serializers.ListField(child=serializers.CharField())
    grant_tx_hash = serializers.CharField()


class AccessRequestListCreateApi(APIView):
    """GET: a doctor's own requests, or a patient's pending ones.
    POST (doctors): ask a patient of this hospital for access."""

    @extend_schema_serializer(component_name="AccessRequestCreate")
    class InputSerializer(serializers.Serializer):
        patient = serializers.UUIDField(help_text="The patient's id at this hospital.")
        categories = serializers.ListField(
            child=serializers.CharField(max_length=32), allow_empty=False
        )
        purpose = serializers.ChoiceField(choices=PURPOSES, default="treatment")
        reason = serializers.CharField(max_length=500)

    def get_permissions(self):
        allowed = DOCTORS if self.request.method == "POST" else DOCTORS_AND_PATIENTS
        return [allowed()]

    @extend_schema(
        operation_id="access_requests_list", responses=AccessRequestOutputSerializer(many=True)
    )
    def get(self, request):
        if user_has_role(request.user, (Role.DOCTOR,)):
            rows = access_requests_for_practitioner(user=request.user)
        else:
            rows = access_requests_for_patient(user=request.user, pending_only=True)
        return Response(AccessRequestOutputSerializer(rows, many=True).data)

    @extend_schema(
        operation_id="access_requests_create",
        request=InputSerializer,
        responses={201: AccessRequestOutputSerializer, 400: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        row = patient_get_for_user(user=request.user, patient_id=data.pop("patient"))
        created = access_request_create(user=request.user, patient=row.patient, **data)
        return Response(AccessRequestOutputSerializer(created).data, status=status.HTTP_201_CREATED)


class AccessRequestAnswerApi(APIView):
    """POST (the patient): approve all (``categories`` omitted), approve some, or decline."""

    permission_classes = [PATIENTS]

    @extend_schema_serializer(component_name="AccessRequestAnswer")
    class InputSerializer(serializers.Serializer):
        decision = serializers.ChoiceField(choices=["approve", "decline"])
        password = serializers.CharField(
            required=False,
            default="",
            write_only=True,
            trim_whitespace=False,
            style={"input_type": "password"},
            help_text="Needed to approve (it opens the key that signs the grant).",
        )
        categories = serializers.ListField(
            child=serializers.CharField(max_length=32),
            required=False,
            help_text="With approve: only these (within the request); omitted: all asked for.",
        )

    @extend_schema(
        operation_id="access_requests_answer",
        request=InputSerializer,
        responses={200: AccessRequestOutputSerializer, 400: OpenApiTypes.OBJECT},
    )
    def post(self, request, request_id):
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        if data["decision"] == "decline":
            approve = None
        elif "categories" in data:
            approve = data["categories"]
        else:
            mine = access_requests_for_patient(user=request.user, pending_only=True)
            approve = next((r.categories for r in mine if r.id == request_id), [])
        answered = access_request_answer(
            user=request.user,
            request_id=request_id,
            approve_categories=approve,
            password=data["password"],
        )
        return Response(AccessRequestOutputSerializer(answered).data)
