"""Record API routes, added under /api/v1/ on hospital hosts (see records.apis)."""

from django.urls import path

from records.apis import (
    PatientDetailApi,
    PatientFhirApi,
    PatientListCreateApi,
    PatientSearchApi,
    RecordAmendApi,
    RecordDetailApi,
    RecordListCreateApi,
)

api_urlpatterns: list = [
    path("patients/", PatientListCreateApi.as_view(), name="patients"),
    path("patients/search", PatientSearchApi.as_view(), name="patients-search"),
    path("patients/<uuid:patient_id>/", PatientDetailApi.as_view(), name="patient"),
    path("patients/<uuid:patient_id>/fhir", PatientFhirApi.as_view(), name="patient-fhir"),
    path("records/", RecordListCreateApi.as_view(), name="records"),
    path("records/<uuid:record_id>/", RecordDetailApi.as_view(), name="record"),
    path("records/<uuid:record_id>/amend", RecordAmendApi.as_view(), name="record-amend"),
]
