from django.urls import path

from chain import views

app_name = "chain"

urlpatterns = [
    path("", views.explorer, name="explorer"),
    path("blocks/<int:height>/", views.block_detail, name="block"),
]
