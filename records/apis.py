"""Patients and records over the JSON API, at a hospital's host (/api/v1/...).

Doctors and admins work with this hospital's patients and records; a patient
reads only their own profile and history (from every linked hospital); only
doctors write records. Anything a user may not see is a 404 from the
selectors, so the API confirms nothing about it. Validation errors are 400s:
identity rules as ``{field: [messages]}``, record content as
``{"errors": {path: [messages]}}`` with paths like ``"diagnoses.0.code"``.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasRole, user_has_role
from accounts.roles import Role
from consent.selectors_export import access_log_for_export, consent_for_export
from records.content import ContentInvalid
from records.fhir import patient_bundle
from records.selectors import (
    PatientRow,
    RecordView,
    patient_for_account,
    patient_get_for_user,
    patient_history_for_user,
    patient_list_for_user,
    record_get_for_user,
    record_view_for_user,
    records_elsewhere_for_staff,
    records_for_staff,
)
from records.services import SEXES, identity_clean, patient_create, record_amend, record_create

STAFF = HasRole.of(Role.DOCTOR, Role.ADMIN)
DOCTORS = HasRole.of(Role.DOCTOR)
READERS = HasRole.of(Role.DOCTOR, Role.ADMIN, Role.PATIENT)


def _is_staff(user) -> bool:
    return user_has_role(user, (Role.DOCTOR, Role.ADMIN))


# --- Output shapes ----------------------------------------------------------------


@extend_schema_serializer(component_name="Patient")
class PatientOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    pseudonym = serializers.CharField()
    given_name = serializers.CharField(allow_null=True)
    family_name = serializers.CharField(allow_null=True)
    sex = serializers.CharField(allow_null=True)
    birth_date = serializers.DateField(allow_null=True)
    record_number = serializers.CharField(allow_null=True)
    error = serializers.CharField(
        help_text="Why the identity is not shown (it does not decrypt), or empty."
    )


def _patient_data(row: PatientRow) -> dict:
    identity = row.identity
    return {
        "id": row.patient.id,
        "pseudonym": row.patient.pseudonym,
        "given_name": identity.given_name if identity else None,
        "family_name": identity.family_name if identity else None,
        "sex": identity.sex if identity else None,
        "birth_date": identity.birth_date if identity else None,
        "record_number": identity.record_number if identity else None,
        "error": row.error,
    }


@extend_schema_serializer(component_name="RecordAttachment")
class AttachmentOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    filename = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()
    category = serializers.CharField()


@extend_schema_serializer(component_name="Record")
class RecordOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    origin = serializers.CharField(source="origin_slug", help_text="The origin hospital's slug.")
    origin_name = serializers.CharField()
    created_at = serializers.DateTimeField()
    author = serializers.CharField(source="author_name")
    amends = serializers.UUIDField(source="amends_id", allow_null=True)
    amended_by = serializers.ListField(child=serializers.UUIDField())
    categories = serializers.ListField(child=serializers.CharField())
    block_height = serializers.IntegerField(allow_null=True)
    tx_hash = serializers.CharField()
    erased = serializers.BooleanField(source="is_erased")
    errors = serializers.ListField(
        child=serializers.CharField(),
        help_text="Integrity errors; when present, nothing of the content is shown.",
    )
    content = serializers.JSONField(
        allow_null=True, help_text="The record's content (see records.content), or null."
    )
    withheld = serializers.ListField(
        child=serializers.CharField(),
        help_text="Sections the reader may not see (the patient has not shared them): "
        "named here, absent from content.",
    )
    attachments = AttachmentOutputSerializer(many=True)


def _staff_views(user, patient) -> list[RecordView]:
    """This hospital's entries and, as far as the patient shared them, other
    hospitals' (through the exchange), newest first, as the chart shows them."""
    views = records_for_staff(user=user, patient=patient)
    views += records_elsewhere_for_staff(user=user, patient=patient)
    return sorted(views, key=lambda view: view.created_at, reverse=True)


def _record_data(view: RecordView) -> dict:
    return RecordOutputSerializer(view).data


class ContentErrorsSerializer(serializers.Serializer):
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='Messages by field path, e.g. {"diagnoses.0.code": ["..."]}.',
    )


CONTENT_ERRORS = extend_schema_serializer(component_name="RecordContentErrors")(
    ContentErrorsSerializer
)


def _content_invalid(error: ContentInvalid) -> Response:
    return Response({"errors": error.errors}, status=status.HTTP_400_BAD_REQUEST)


# --- Patients ---------------------------------------------------------------------


class PatientSearchApi(APIView):
    """POST ``{"q": ...}``: patients with exactly that record number or full name.

    A POST, not ``GET ?q=``: names and record numbers must not reach URLs,
    which end up in access logs and proxies."""

    permission_classes = [STAFF]

    class InputSerializer(serializers.Serializer):
        q = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="patients_search",
        request=InputSerializer,
        responses=PatientOutputSerializer(many=True),
    )
    def post(self, request):
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        rows = patient_list_for_user(user=request.user, query=given.validated_data["q"])
        return Response(
            PatientOutputSerializer([_patient_data(row) for row in rows], many=True).data
        )


class PatientListCreateApi(APIView):
    """GET: this hospital's patients (search with ``POST patients/search``).
    POST: register a patient, optionally with a sign-in account."""

    permission_classes = [STAFF]

    @extend_schema_serializer(component_name="PatientCreate")
    class InputSerializer(serializers.Serializer):
        given_name = serializers.CharField(allow_blank=True)
        family_name = serializers.CharField(allow_blank=True)
        sex = serializers.ChoiceField(choices=SEXES)
        birth_date = serializers.DateField()
        record_number = serializers.CharField(allow_blank=True)
        phone = serializers.CharField(required=False, allow_blank=True, default="")
        email = serializers.CharField(required=False, allow_blank=True, default="")
        username = serializers.CharField(required=False, allow_blank=True, default="")
        password = serializers.CharField(
            required=False, allow_blank=True, default="", write_only=True
        )

    @extend_schema(operation_id="patients_list", responses=PatientOutputSerializer(many=True))
    def get(self, request):
        rows = patient_list_for_user(user=request.user)
        return Response(
            PatientOutputSerializer([_patient_data(row) for row in rows], many=True).data
        )

    @extend_schema(
        operation_id="patients_create",
        request=InputSerializer,
        responses={201: PatientOutputSerializer, 400: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        username, password = data.pop("username"), data.pop("password")
        identity = identity_clean(**data)
        patient = patient_create(
            actor=request.user, identity=identity, username=username, password=password
        )
        row = PatientRow(patient, identity)
        return Response(
            PatientOutputSerializer(_patient_data(row)).data, status=status.HTTP_201_CREATED
        )


class PatientDetailApi(APIView):
    """One patient: staff of this hospital, or the patient themself."""

    permission_classes = [READERS]

    @extend_schema(operation_id="patients_retrieve", responses=PatientOutputSerializer)
    def get(self, request, patient_id):
        row = patient_get_for_user(user=request.user, patient_id=patient_id)
        return Response(PatientOutputSerializer(_patient_data(row)).data)


class FhirJSONRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    format = "fhir"


class PatientFhirApi(APIView):
    """A FHIR R4 ``collection`` Bundle of the patient and their records.

    Staff get this hospital's records of the patient; a patient (their own id
    only) gets their history from every linked hospital. ``download=1`` makes
    it an attachment. Erased records and records with integrity errors are
    left out (see records.fhir).
    """

    permission_classes = [READERS]
    renderer_classes = [FhirJSONRenderer, JSONRenderer]

    class FilterSerializer(serializers.Serializer):
        download = serializers.BooleanField(required=False, default=False)

    @extend_schema(
        operation_id="patients_fhir",
        parameters=[FilterSerializer],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="A FHIR R4 Bundle."),
        },
    )
    def get(self, request, patient_id):
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        row = patient_get_for_user(user=request.user, patient_id=patient_id)
        grants, names, access_log = (), {}, []
        if _is_staff(request.user):
            views = _staff_views(request.user, row.patient)
        else:
            # patient_get_for_user already refused anyone but the patient themself;
            # their own export carries their consents and their access log too.
            views = patient_history_for_user(user=request.user)
            grants, names = consent_for_export(patient=row.patient)
            access_log = access_log_for_export(patient=row.patient)
        bundle = patient_bundle(
            identity=row.identity,
            patient=row.patient,
            views=views,
            hospital_slug=request.tenant.slug,
            grants=grants,
            grantee_names=names,
            access_log=access_log,
        )
        response = Response(bundle)
        if query.validated_data["download"]:
            response["Content-Disposition"] = (
                f'attachment; filename="patient-{row.patient.id}.fhir.json"'
            )
        return response


# --- Records ----------------------------------------------------------------------


class RecordListCreateApi(APIView):
    """GET: a patient's records (staff: ``patient`` is required and only this
    hospital's records are listed; a patient: their whole history, ``patient``
    optional and 404 unless it is their own id). POST (doctors): write a record."""

    class FilterSerializer(serializers.Serializer):
        patient = serializers.UUIDField(required=False)

    @extend_schema_serializer(component_name="RecordCreate")
    class InputSerializer(serializers.Serializer):
        patient = serializers.UUIDField()
        content = serializers.JSONField(help_text="The record's content (see records.content).")

    def get_permissions(self):
        allowed = DOCTORS if self.request.method == "POST" else READERS
        return [allowed()]

    @extend_schema(
        operation_id="records_list",
        parameters=[FilterSerializer],
        responses=RecordOutputSerializer(many=True),
    )
    def get(self, request):
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        wanted = query.validated_data.get("patient")
        if _is_staff(request.user):
            if wanted is None:
                raise ApiValidationError({"patient": ["This parameter is required."]})
            row = patient_get_for_user(user=request.user, patient_id=wanted)
            views = _staff_views(request.user, row.patient)
        else:
            if wanted is not None:
                patient_get_for_user(user=request.user, patient_id=wanted)  # 404 if not theirs
            else:
                patient_for_account(user=request.user)
            views = patient_history_for_user(user=request.user)
        return Response([_record_data(view) for view in views])

    @extend_schema(
        operation_id="records_create",
        request=InputSerializer,
        responses={201: RecordOutputSerializer, 400: CONTENT_ERRORS},
    )
    def post(self, request):
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        row = patient_get_for_user(user=request.user, patient_id=given.validated_data["patient"])
        try:
            record = record_create(
                author=request.user, patient=row.patient, content=given.validated_data["content"]
            )
        except ContentInvalid as error:
            return _content_invalid(error)
        view = record_view_for_user(user=request.user, record_id=record.id)
        return Response(_record_data(view), status=status.HTTP_201_CREATED)


class RecordDetailApi(APIView):
    """One record: staff of its hospital, or its patient (from any linked hospital)."""

    permission_classes = [READERS]

    @extend_schema(operation_id="records_retrieve", responses=RecordOutputSerializer)
    def get(self, request, record_id):
        view = record_view_for_user(user=request.user, record_id=record_id)
        return Response(_record_data(view))


class RecordAmendApi(APIView):
    """Correct a record of this hospital (doctors): a new record that points at
    the original; both stay visible."""

    permission_classes = [DOCTORS]

    @extend_schema_serializer(component_name="RecordAmend")
    class InputSerializer(serializers.Serializer):
        content = serializers.JSONField(help_text="The corrected content (see records.content).")

    @extend_schema(
        operation_id="records_amend",
        request=InputSerializer,
        responses={201: RecordOutputSerializer, 400: CONTENT_ERRORS},
    )
    def post(self, request, record_id):
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        original = record_get_for_user(user=request.user, record_id=record_id)
        try:
            record = record_amend(
                author=request.user, original=original, content=given.validated_data["content"]
            )
        except ContentInvalid as error:
            return _content_invalid(error)
        view = record_view_for_user(user=request.user, record_id=record.id)
        return Response(_record_data(view), status=status.HTTP_201_CREATED)
