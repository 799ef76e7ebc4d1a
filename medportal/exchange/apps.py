from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    name = "medportal.exchange"
    label = "exchange"
    verbose_name = "Hub exchange"
