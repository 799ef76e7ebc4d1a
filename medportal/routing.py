from django.urls import path

from accounts.consumers import EventsConsumer
from chain.consumers import ChainConsumer

websocket_urlpatterns = [
    path("ws/events/", EventsConsumer.as_asgi()),
    path("ws/chain/", ChainConsumer.as_asgi()),
]
