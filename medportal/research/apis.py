"""Research requests over the JSON API (/api/v1/research/...), with the same rules
as the Research pages:

* a researcher lists, drafts, edits, submits, withdraws and closes their
  organisation's requests and downloads the datasets released to it;
* a hospital admin lists submitted requests, approves or declines each with a
  reason, and releases the hospital's part;
* a patient lists the requests she was invited to and answers them.

A role that has no business with an operation gets 403; a request the caller
may not see (another organisation's, or a draft for a hospital) is a 404, so
the API confirms nothing about it. Bad input is a 400 with ``{field: [messages]}``
(the services' ``ValidationError``, through ``medportal.api.exception_handler``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.db import connection
from django.http import Http404, HttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasRole, user_has_role
from accounts.roles import Role
from chain.services import TransactionRejected
from medportal.research.models import Answer, RequestStatus, ResearchRequest
from medportal.research.release import SEXES
from medportal.research.selectors import (
    ReleaseView,
    ethics_document_for_user,
    invitations_for_patient,
    participation_here,
    release_for_researcher,
    releases_checked,
    request_for_hospital,
    request_for_researcher,
    requests_for_hospital,
    requests_for_researcher,
)
from medportal.research.services import (
    REQUEST_FIELDS,
    dataset_open,
    participation_decide,
    release_start,
    request_close,
    request_save,
    request_submit,
    request_withdraw,
    research_answer,
)

RESEARCHERS = HasRole.of(Role.RESEARCHER)
ADMINS = HasRole.of(Role.ADMIN)
PATIENTS = HasRole.of(Role.PATIENT)
RESEARCHERS_AND_ADMINS = HasRole.of(Role.RESEARCHER, Role.ADMIN)


def _is_researcher(user) -> bool:
    return user_has_role(user, (Role.RESEARCHER,))


def _request_for_user(user, request_id) -> ResearchRequest:
    """The request as the caller may see it: their organisation's (researchers) or
    a submitted one (hospital admins); anything else is a 404."""
    if _is_researcher(user):
        return request_for_researcher(user=user, request_id=request_id)
    return request_for_hospital(user=user, request_id=request_id)


# --- Output shapes --------------------------------------------------------------------


@extend_schema_serializer(component_name="ResearchParticipation")
class ParticipationOutputSerializer(serializers.Serializer):
    hospital = serializers.CharField(source="hospital.slug")
    hospital_name = serializers.CharField(source="hospital.name")
    status = serializers.CharField()
    reason = serializers.CharField()
    decided_at = serializers.DateTimeField()
    tx_hash = serializers.CharField()


@extend_schema_serializer(component_name="ResearchRelease")
class ReleaseOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    hospital = serializers.CharField()
    hospital_name = serializers.CharField()
    created_at = serializers.DateTimeField()
    rows = serializers.IntegerField()
    suppressed = serializers.IntegerField(help_text="Rows withheld to keep every class at k.")
    size = serializers.IntegerField(help_text="Bytes of the encrypted archive.")
    sha256 = serializers.CharField(help_text="SHA-256 of the encrypted archive (on the chain).")
    tx_hash = serializers.CharField()
    file_matches = serializers.BooleanField(help_text="The stored file has the recorded hash.")
    chain_matches = serializers.BooleanField(
        help_text="The chain's transaction names this hash and these totals."
    )
    block_height = serializers.IntegerField(
        allow_null=True, help_text="Null while the transaction waits for a block."
    )
    download_url = serializers.CharField(
        allow_null=True, help_text="The decrypted zip, for the organisation's researchers only."
    )


def _release_data(view: ReleaseView, *, request, downloadable: bool) -> dict:
    release = view.release
    return {
        "id": release.pk,
        "hospital": release.hospital.slug,
        "hospital_name": view.hospital_name,
        "created_at": release.created_at,
        "rows": release.rows,
        "suppressed": release.suppressed,
        "size": release.size,
        "sha256": release.sha256,
        "tx_hash": release.tx_hash,
        "file_matches": view.file_matches,
        "chain_matches": view.chain_matches,
        "block_height": view.block_height,
        "download_url": (
            request.build_absolute_uri(
                reverse("api:research-dataset", kwargs={"release_id": release.pk})
            )
            if downloadable
            else None
        ),
    }


def _request_fields(research_request: ResearchRequest) -> dict:
    """The fields a researcher fills in, flat as they are sent."""
    criteria = research_request.criteria or {}
    return {
        "title": research_request.title,
        "purpose": research_request.purpose,
        "investigator": research_request.investigator,
        "ethics_reference": research_request.ethics_reference,
        "categories": list(research_request.categories or []),
        "codes": list(criteria.get("codes") or []),
        "age_min": criteria.get("age_min"),
        "age_max": criteria.get("age_max"),
        "sex": criteria.get("sex") or "",
        "period_from": criteria.get("period_from"),
        "period_to": criteria.get("period_to"),
        "answer": research_request.answer,
        "k": research_request.k,
        # Sent and shown as a day: the request expires at that day's end.
        "expires_at": (
            timezone.localtime(research_request.expires_at).date()
            if research_request.expires_at
            else None
        ),
    }


class _RequestFieldsSerializer(serializers.Serializer):
    title = serializers.CharField()
    purpose = serializers.CharField()
    investigator = serializers.CharField()
    ethics_reference = serializers.CharField()
    categories = serializers.ListField(child=serializers.CharField())
    codes = serializers.ListField(child=serializers.CharField(), help_text="ICD-10 code prefixes.")
    age_min = serializers.IntegerField(allow_null=True)
    age_max = serializers.IntegerField(allow_null=True)
    sex = serializers.CharField(help_text="Empty: any.")
    period_from = serializers.DateField(allow_null=True)
    period_to = serializers.DateField(allow_null=True)
    answer = serializers.ChoiceField(choices=Answer.choices)
    k = serializers.IntegerField()
    expires_at = serializers.DateField(
        allow_null=True, help_text="The request expires at the end of this day."
    )


@extend_schema_serializer(component_name="ResearchRequestSummary")
class RequestSummaryOutputSerializer(_RequestFieldsSerializer):
    id = serializers.UUIDField()
    organisation = serializers.CharField()
    organisation_name = serializers.CharField()
    status = serializers.CharField()
    created_by_name = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    tx_hash = serializers.CharField(help_text="The ``opened`` transaction, once submitted.")
    ethics_document_name = serializers.CharField()
    ethics_document_sha256 = serializers.CharField()
    participations = ParticipationOutputSerializer(
        many=True,
        help_text="Every hospital's answer (researchers); this hospital's only (admins).",
    )


@extend_schema_serializer(component_name="ResearchAggregate")
class AggregateOutputSerializer(serializers.Serializer):
    parties = serializers.ListField(
        child=serializers.CharField(), help_text="The hospitals whose counts are summed."
    )
    result = serializers.JSONField(
        allow_null=True,
        help_text='{"cells": {"code|age band|sex": count or "< k"}, "k": k, "hospitals": [...]}'
        "; null until every hospital has sent its shares.",
    )
    sha256 = serializers.CharField(help_text="SHA-256 of the result (on the chain).")


@extend_schema_serializer(component_name="ResearchRequest")
class RequestOutputSerializer(RequestSummaryOutputSerializer):
    ethics_document_url = serializers.CharField(allow_null=True)
    releases = ReleaseOutputSerializer(
        many=True, help_text="Every release (researchers); this hospital's only (admins)."
    )
    aggregate = AggregateOutputSerializer(
        allow_null=True, help_text="Aggregate requests, for the organisation's researchers."
    )


def _summary_data(research_request: ResearchRequest, participations: list) -> dict:
    return {
        "id": research_request.id,
        "organisation": research_request.organisation.slug,
        "organisation_name": research_request.organisation.name,
        "status": research_request.status,
        "created_by_name": research_request.created_by_name,
        "created_at": research_request.created_at,
        "updated_at": research_request.updated_at,
        "submitted_at": research_request.submitted_at,
        "tx_hash": research_request.tx_hash,
        "ethics_document_name": research_request.ethics_document_name,
        "ethics_document_sha256": research_request.ethics_document_sha256,
        **_request_fields(research_request),
        "participations": participations,
    }


def _detail_data(request, research_request: ResearchRequest) -> dict:
    """The request as the caller sees it (see the module docstring)."""
    is_researcher = _is_researcher(request.user)
    if is_researcher:
        participations = list(research_request.participations.select_related("hospital"))
        releases = releases_checked(research_request)
    else:
        here = participation_here(research_request)
        participations = [here] if here is not None else []
        releases = [
            view
            for view in releases_checked(research_request)
            if view.release.hospital_id == connection.tenant.pk
        ]
    aggregate = None
    if is_researcher and research_request.is_aggregate:
        aggregate = {
            "parties": list(research_request.aggregate_parties or []),
            "result": research_request.aggregate_result,
            "sha256": research_request.aggregate_sha256,
        }
    document_url = None
    if research_request.ethics_document_sha256:
        document_url = request.build_absolute_uri(
            reverse("api:research-request-document", kwargs={"request_id": research_request.id})
        )
    return {
        **_summary_data(research_request, participations),
        "ethics_document_url": document_url,
        "releases": [
            _release_data(view, request=request, downloadable=is_researcher) for view in releases
        ],
        "aggregate": aggregate,
    }


def _detail_response(request, research_request: ResearchRequest, code: int = 200) -> Response:
    return Response(RequestOutputSerializer(_detail_data(request, research_request)).data, code)


# --- Input shapes ----------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "description": "Comma-separated ICD-10 codes or prefixes."},
            {"type": "array", "items": {"type": "string"}},
        ]
    }
)
class CodesField(serializers.Field):
    """ICD-10 codes or prefixes: a list, or one comma-separated string (as the page sends)."""

    default_error_messages = {"invalid": "Send a comma-separated string or a list of strings."}

    def get_value(self, dictionary):
        # A multipart form may repeat the field; a plain ``Field`` keeps the last only.
        if hasattr(dictionary, "getlist") and self.field_name in dictionary:
            values = dictionary.getlist(self.field_name)
            return values[0] if len(values) == 1 else values
        return super().get_value(dictionary)

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list) and all(isinstance(item, str) for item in data):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


@extend_schema_serializer(component_name="ResearchRequestInput")
class RequestInputSerializer(serializers.Serializer):
    """Shape only: the service checks the rules (required fields on submit,
    ranges, known codes, the PDF) and names the field it refuses."""

    title = serializers.CharField(required=False, allow_blank=True)
    purpose = serializers.CharField(required=False, allow_blank=True)
    investigator = serializers.CharField(required=False, allow_blank=True)
    ethics_reference = serializers.CharField(required=False, allow_blank=True)
    categories = serializers.ListField(
        child=serializers.CharField(max_length=32),
        required=False,
        help_text="Releasable categories (coded data only: never notes, images or files).",
    )
    codes = CodesField(required=False)
    age_min = serializers.IntegerField(required=False, allow_null=True)
    age_max = serializers.IntegerField(required=False, allow_null=True)
    sex = serializers.ChoiceField(
        choices=SEXES, required=False, allow_blank=True, help_text="Empty: any."
    )
    period_from = serializers.DateField(required=False, allow_null=True)
    period_to = serializers.DateField(required=False, allow_null=True)
    answer = serializers.ChoiceField(choices=Answer.choices, required=False)
    k = serializers.IntegerField(
        required=False, help_text="Smallest class size released (default 5, at least 2)."
    )
    expires_at = serializers.DateField(
        required=False, allow_null=True, help_text="YYYY-MM-DD; the request ends with that day."
    )
    ethics_document = serializers.FileField(
        required=False, write_only=True, help_text="The ethics approval, a PDF (multipart)."
    )
    ethics_document_base64 = serializers.CharField(
        required=False,
        write_only=True,
        help_text="Or the PDF's bytes in base64 (JSON bodies).",
    )
    ethics_document_name = serializers.CharField(
        required=False, max_length=200, write_only=True, help_text="The PDF's file name."
    )


@extend_schema_serializer(component_name="ResearchRequestCreate")
class RequestCreateInputSerializer(RequestInputSerializer):
    submit = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Submit at once. If submitting fails, the draft stays saved and the 400 "
        "carries it under ``draft``.",
    )


def _document_max_bytes() -> int:
    return int(getattr(settings, "MEDPORTAL_RESEARCH_DOCUMENT_MAX_BYTES", 10 * 1024 * 1024))


@dataclass(frozen=True)
class Document:
    """The approval document as sent: ``field`` names it in error messages."""

    upload: UploadedFile
    field: str


def _document_from(data: dict) -> Document | None:
    """Pop the document fields off ``data``: an uploaded file, or base64 decoded
    into one (the service checks that it is a PDF, by content). A malformed or
    oversized base64 body is a ``ValidationError`` (a 400)."""
    upload = data.pop("ethics_document", None)
    encoded = data.pop("ethics_document_base64", None)
    name = data.pop("ethics_document_name", "") or "approval.pdf"
    if upload is not None and encoded is not None:
        raise ValidationError(
            {"ethics_document": ["Send the document once: as a file or in base64, not both."]}
        )
    if encoded is None:
        return None if upload is None else Document(upload, "ethics_document")
    encoded = "".join(encoded.split())  # line breaks, as base64 tools write them
    limit = _document_max_bytes()
    # Four characters per three bytes: anything longer decodes to more than the limit.
    if len(encoded) > (limit + 2) // 3 * 4:
        raise ValidationError({"ethics_document_base64": [f"At most {limit // (1024 * 1024)} MB."]})
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError({"ethics_document_base64": ["This is not valid base64."]}) from None
    return Document(SimpleUploadedFile(name, raw), "ethics_document_base64")


def _save(*, user, data: dict, document: Document | None, research_request=None) -> ResearchRequest:
    """``request_save`` with the request's fields, the document's errors named
    after the field it came in."""
    fields = {name: value for name, value in data.items() if name in REQUEST_FIELDS}
    try:
        return request_save(
            user=user,
            data=fields,
            document=document.upload if document else None,
            request=research_request,
        )
    except ValidationError as error:
        named = document is not None and document.field != "ethics_document"
        if named and hasattr(error, "error_dict") and "ethics_document" in error.error_dict:
            messages = error.message_dict
            messages[document.field] = messages.pop("ethics_document")
            raise ValidationError(messages) from None
        raise


PARSERS = [JSONParser, MultiPartParser, FormParser]
ERRORS = OpenApiResponse(OpenApiTypes.OBJECT, description="{field: [messages]}")


# --- Requests ------------------------------------------------------------------------


class RequestListCreateApi(APIView):
    """GET: a researcher's organisation's requests (drafts included), or, for a
    hospital admin, every submitted request with this hospital's answer.
    POST (researchers): save a draft, and submit it at once with ``submit``."""

    parser_classes = PARSERS

    def get_permissions(self):
        allowed = RESEARCHERS if self.request.method == "POST" else RESEARCHERS_AND_ADMINS
        return [allowed()]

    @extend_schema(
        operation_id="research_requests_list",
        responses=RequestSummaryOutputSerializer(many=True),
    )
    def get(self, request):
        if _is_researcher(request.user):
            rows = (
                requests_for_researcher(user=request.user)
                .select_related("organisation")
                .prefetch_related("participations__hospital")
            )
            data = [_summary_data(row, list(row.participations.all())) for row in rows]
        else:  # an admin sees only this hospital's answer
            rows = requests_for_hospital(user=request.user)
            data = [_summary_data(row, row.answers_here) for row in rows]
        return Response(RequestSummaryOutputSerializer(data, many=True).data)

    @extend_schema(
        operation_id="research_requests_create",
        request={
            "application/json": RequestCreateInputSerializer,
            "multipart/form-data": RequestCreateInputSerializer,
        },
        responses={201: RequestOutputSerializer, 400: ERRORS},
    )
    def post(self, request):
        given = RequestCreateInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        submit = data.pop("submit")
        document = _document_from(data)
        draft = _save(user=request.user, data=data, document=document)
        if not submit:
            return _detail_response(request, draft, status.HTTP_201_CREATED)
        try:
            submitted = request_submit(user=request.user, request=draft)
        except (ValidationError, TransactionRejected) as error:
            # request_save committed on its own: the 400 says that the draft exists.
            if isinstance(error, TransactionRejected):
                errors = {"request": [f"The hub refused the transaction: {error}"]}
            elif hasattr(error, "error_dict"):
                errors = error.message_dict
            else:
                errors = {"request": error.messages}
            draft.refresh_from_db()
            body = {
                **errors,
                "draft": RequestOutputSerializer(_detail_data(request, draft)).data,
            }
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        return _detail_response(request, submitted, status.HTTP_201_CREATED)


class RequestDetailApi(APIView):
    """GET: one request (researchers of its organisation; hospital admins once it
    is submitted). PATCH (researchers): change a draft; fields left out keep
    their value, ``null`` clears an optional one."""

    parser_classes = PARSERS

    def get_permissions(self):
        allowed = RESEARCHERS if self.request.method == "PATCH" else RESEARCHERS_AND_ADMINS
        return [allowed()]

    @extend_schema(operation_id="research_requests_retrieve", responses=RequestOutputSerializer)
    def get(self, request, request_id):
        return _detail_response(request, _request_for_user(request.user, request_id))

    @extend_schema(
        operation_id="research_requests_partial_update",
        request={
            "application/json": RequestInputSerializer,
            "multipart/form-data": RequestInputSerializer,
        },
        responses={200: RequestOutputSerializer, 400: ERRORS},
    )
    def patch(self, request, request_id):
        draft = request_for_researcher(user=request.user, request_id=request_id)
        given = RequestInputSerializer(data=request.data, partial=True)
        given.is_valid(raise_exception=True)
        changes = dict(given.validated_data)
        document = _document_from(changes)
        data = {**_request_fields(draft), **changes}
        saved = _save(user=request.user, data=data, document=document, research_request=draft)
        return _detail_response(request, saved)


class RequestSubmitApi(APIView):
    """Submit a draft: every field and the ethics approval are needed."""

    permission_classes = [RESEARCHERS]

    @extend_schema(
        operation_id="research_requests_submit",
        request=None,
        responses={200: RequestOutputSerializer, 400: ERRORS},
    )
    def post(self, request, request_id):
        draft = request_for_researcher(user=request.user, request_id=request_id)
        return _detail_response(request, request_submit(user=request.user, request=draft))


class RequestWithdrawApi(APIView):
    """Withdraw an open request before any hospital released anything; a draft is
    deleted (204)."""

    permission_classes = [RESEARCHERS]

    @extend_schema(
        operation_id="research_requests_withdraw",
        request=None,
        responses={
            200: RequestOutputSerializer,
            204: OpenApiResponse(description="The draft was deleted."),
            400: ERRORS,
        },
    )
    def post(self, request, request_id):
        research_request = request_for_researcher(user=request.user, request_id=request_id)
        was_draft = research_request.status == RequestStatus.DRAFT
        withdrawn = request_withdraw(user=request.user, request=research_request)
        if was_draft:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _detail_response(request, withdrawn)


class RequestCloseApi(APIView):
    """Close an open request: no more approvals or releases."""

    permission_classes = [RESEARCHERS]

    @extend_schema(
        operation_id="research_requests_close",
        request=None,
        responses={200: RequestOutputSerializer, 400: ERRORS},
    )
    def post(self, request, request_id):
        research_request = request_for_researcher(user=request.user, request_id=request_id)
        return _detail_response(request, request_close(user=request.user, request=research_request))


@extend_schema_serializer(component_name="ResearchDecision")
class DecisionInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Required: the organisation sees it.",
    )


class _DecideApi(APIView):
    """A hospital admin's answer to a submitted request (subclasses set ``approve``)."""

    permission_classes = [ADMINS]
    approve: bool

    def post(self, request, request_id):
        given = DecisionInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        research_request = request_for_hospital(user=request.user, request_id=request_id)
        participation = participation_decide(
            admin=request.user,
            request=research_request,
            approve=self.approve,
            reason=given.validated_data["reason"],
        )
        return Response(ParticipationOutputSerializer(participation).data)


def _decision_schema(operation_id: str):
    return extend_schema_view(
        post=extend_schema(
            operation_id=operation_id,
            request=DecisionInputSerializer,
            responses={200: ParticipationOutputSerializer, 400: ERRORS},
        )
    )


@_decision_schema("research_requests_approve")
class RequestApproveApi(_DecideApi):
    """Take part: this hospital's matching patients are invited (a task)."""

    approve = True


@_decision_schema("research_requests_decline")
class RequestDeclineApi(_DecideApi):
    """Decline, with a reason the organisation sees."""

    approve = False


@extend_schema_serializer(component_name="ResearchReleaseStarted")
class ReleaseStartedOutputSerializer(serializers.Serializer):
    status = serializers.CharField(help_text='"being prepared"')


class RequestReleaseApi(APIView):
    """A hospital admin starts the release of the hospital's part (de-identified
    rows, or for an aggregate request Shamir shares of its counts). It is made
    in the background: 202, and the admin is notified when it is done; the
    request's detail then lists it."""

    permission_classes = [ADMINS]

    @extend_schema(
        operation_id="research_requests_release",
        request=None,
        responses={202: ReleaseStartedOutputSerializer, 400: ERRORS},
    )
    def post(self, request, request_id):
        research_request = request_for_hospital(user=request.user, request_id=request_id)
        release_start(admin=request.user, request=research_request)
        return Response({"status": "being prepared"}, status=status.HTTP_202_ACCEPTED)


# --- Files ----------------------------------------------------------------------------------


class JSONFirstNegotiation(BaseContentNegotiation):
    """Errors of a file download are JSON whatever the client accepts (a client
    asking for ``application/zip`` gets its 403 or 404 as JSON, not a 406)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _attachment(data: bytes, *, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Content-Length"] = str(len(data))
    response["Cache-Control"] = "no-store"  # de-identified, but not for shared caches
    return response


class DatasetDownloadApi(APIView):
    """The decrypted archive of one release (CSV, FHIR NDJSON, data dictionary,
    README), for researchers of the requesting organisation; 403 for anyone else,
    404 when there is no such release."""

    permission_classes = [RESEARCHERS]
    renderer_classes = [JSONRenderer]  # errors; the zip itself is a plain HttpResponse
    content_negotiation_class = JSONFirstNegotiation

    @extend_schema(
        operation_id="research_datasets_retrieve",
        parameters=[
            OpenApiParameter("release_id", OpenApiTypes.INT, OpenApiParameter.PATH),
        ],
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The dataset as a zip."
            ),
            (403, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT),
            (404, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT),
        },
    )
    def get(self, request, release_id):
        release = release_for_researcher(user=request.user, release_id=release_id)
        archive = dataset_open(user=request.user, release=release)
        filename = f"research-{release.request_id}-{release.hospital.slug}.zip"
        return _attachment(archive, content_type="application/zip", filename=filename)


class RequestDocumentApi(APIView):
    """The ethics approval (PDF): the organisation's researchers, and every
    hospital's admins once the request is submitted."""

    permission_classes = [RESEARCHERS_AND_ADMINS]
    renderer_classes = [JSONRenderer]  # errors; the PDF itself is a plain HttpResponse
    content_negotiation_class = JSONFirstNegotiation

    @extend_schema(
        operation_id="research_requests_ethics_document",
        responses={
            (200, "application/pdf"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The approval document."
            ),
            (404, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT),
        },
    )
    def get(self, request, request_id):
        data, name = ethics_document_for_user(user=request.user, request_id=request_id)
        safe = "".join(c for c in name if c.isalnum() or c in "._- ") or "approval.pdf"
        return _attachment(data, content_type="application/pdf", filename=safe)


# --- Patients ---------------------------------------------------------------------------


@extend_schema_serializer(component_name="ResearchInvitation")
class InvitationOutputSerializer(serializers.Serializer):
    request = serializers.UUIDField(source="request.id")
    title = serializers.CharField(source="request.title")
    purpose = serializers.CharField(source="request.purpose")
    organisation = serializers.CharField(source="request.organisation.slug")
    organisation_name = serializers.CharField(source="request.organisation.name")
    categories = serializers.ListField(child=serializers.CharField(), source="request.categories")
    expires_at = serializers.DateTimeField(source="request.expires_at")
    status = serializers.CharField()
    status_label = serializers.CharField()
    answered_at = serializers.DateTimeField(allow_null=True)
    released = serializers.BooleanField(help_text="Her data went into a release.")
    can_answer = serializers.BooleanField()


class InvitationListApi(APIView):
    """The requests this patient was invited to at this hospital."""

    permission_classes = [PATIENTS]

    @extend_schema(
        operation_id="research_invitations_list",
        responses=InvitationOutputSerializer(many=True),
    )
    def get(self, request):
        views = invitations_for_patient(user=request.user)
        return Response(InvitationOutputSerializer(views, many=True).data)


@extend_schema_serializer(component_name="ResearchInvitationAnswer")
class InvitationAnswerInputSerializer(serializers.Serializer):
    take_part = serializers.BooleanField(
        help_text="true: opt in; false: opt out, or withdraw after opting in."
    )
    password = serializers.CharField(
        required=False,
        default="",
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Needed to opt in or withdraw (it opens the key that signs the consent).",
    )


@extend_schema_serializer(component_name="ResearchInvitationAnswered")
class InvitationAnsweredOutputSerializer(serializers.Serializer):
    status = serializers.CharField()


class InvitationAnswerApi(APIView):
    """A patient answers a request she was invited to (404 for any other)."""

    permission_classes = [PATIENTS]

    @extend_schema(
        operation_id="research_invitations_answer",
        request=InvitationAnswerInputSerializer,
        responses={200: InvitationAnsweredOutputSerializer, 400: ERRORS},
    )
    def post(self, request, request_id):
        given = InvitationAnswerInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        invited = {view.request.id for view in invitations_for_patient(user=request.user)}
        if request_id not in invited:
            raise Http404("No such invitation.")
        answered = research_answer(
            user=request.user,
            password=given.validated_data["password"],
            request_id=request_id,
            take_part=given.validated_data["take_part"],
        )
        return Response({"status": answered})
