"""Record pages at a hospital: /records/... (see records.views)."""

from django.urls import path

from records import views

app_name = "records"

urlpatterns = [
    path("patients/", views.patient_list, name="patient_list"),
    path("patients/new/", views.patient_new, name="patient_new"),
    path("patients/<uuid:patient_id>/", views.patient_chart, name="patient_chart"),
    path("patients/<uuid:patient_id>/new/", views.entry_new, name="entry_new"),
    path("patients/<uuid:patient_id>/recover/", views.patient_recover, name="patient_recover"),
    path("entries/<uuid:record_id>/amend/", views.entry_amend, name="entry_amend"),
    path(
        "entries/<uuid:record_id>/attachments/<slug:name>/",
        views.attachment_download,
        name="attachment",
    ),
    path("mine/", views.my_records, name="mine"),
    path("mine/summary/", views.my_summary, name="summary"),
    path("link/", views.link, name="link"),
]
