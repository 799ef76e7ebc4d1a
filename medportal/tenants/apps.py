from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "medportal.tenants"
    label = "tenants"
    verbose_name = "Tenants"
