from django.apps import AppConfig


class ResearchConfig(AppConfig):
    name = "medportal.research"
    label = "research"
    verbose_name = "Research requests"
