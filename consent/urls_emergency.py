"""Consent pages: emergency access and notifications (see consent.urls)."""

from django.urls import path

from consent import views_emergency as views

urlpatterns = [
    path(
        "patients/<uuid:patient_id>/emergency/",
        views.emergency_declare_page,
        name="emergency_declare",
    ),
    path("emergencies/", views.emergency_reviews_page, name="emergency_reviews"),
    path("notifications/", views.notifications_page, name="notifications"),
]
