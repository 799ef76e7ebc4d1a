"""Research pages: /research/... (see medportal.research.views).

Researchers use the first group at their organisation's host, hospital admins
the review pages and patients the invitations, at their hospital's host."""

from django.urls import path

from medportal.research import views

app_name = "research"

urlpatterns = [
    # Researchers
    path("", views.request_list, name="list"),
    path("new/", views.request_new, name="new"),
    path("<uuid:request_id>/", views.request_detail, name="detail"),
    path("<uuid:request_id>/edit/", views.request_edit, name="edit"),
    path("<uuid:request_id>/withdraw/", views.request_withdraw_view, name="withdraw"),
    path("<uuid:request_id>/close/", views.request_close_view, name="close"),
    path("datasets/<int:release_id>/", views.dataset_download, name="dataset"),
    # Researchers and hospital admins
    path("<uuid:request_id>/document/", views.ethics_document, name="document"),
    # Hospital admins
    path("review/", views.review_list, name="review_list"),
    path("review/<uuid:request_id>/", views.review, name="review"),
    # Patients
    path("invitations/", views.invitations, name="invitations"),
]
