"""Research API routes, added under /api/v1/ on hospital and research-organisation
hosts (see medportal.research.apis)."""

from django.urls import path, re_path

from medportal.research.apis import (
    DatasetDownloadApi,
    InvitationAnswerApi,
    InvitationListApi,
    RequestApproveApi,
    RequestCloseApi,
    RequestDeclineApi,
    RequestDetailApi,
    RequestDocumentApi,
    RequestListCreateApi,
    RequestReleaseApi,
    RequestSubmitApi,
    RequestWithdrawApi,
)

REQUEST = "research/requests/<uuid:request_id>/"

api_urlpatterns: list = [
    path("research/requests/", RequestListCreateApi.as_view(), name="research-requests"),
    path(REQUEST, RequestDetailApi.as_view(), name="research-request"),
    path(f"{REQUEST}submit/", RequestSubmitApi.as_view(), name="research-request-submit"),
    path(f"{REQUEST}withdraw/", RequestWithdrawApi.as_view(), name="research-request-withdraw"),
    path(f"{REQUEST}close/", RequestCloseApi.as_view(), name="research-request-close"),
    path(f"{REQUEST}approve/", RequestApproveApi.as_view(), name="research-request-approve"),
    path(f"{REQUEST}decline/", RequestDeclineApi.as_view(), name="research-request-decline"),
    path(f"{REQUEST}release/", RequestReleaseApi.as_view(), name="research-request-release"),
    path(
        f"{REQUEST}ethics-document/",
        RequestDocumentApi.as_view(),
        name="research-request-document",
    ),
    # With or without the trailing slash (one route, so one operation in the schema).
    re_path(
        r"^research/datasets/(?P<release_id>[0-9]+)/?$",
        DatasetDownloadApi.as_view(),
        name="research-dataset",
    ),
    path("research/invitations/", InvitationListApi.as_view(), name="research-invitations"),
    path(
        "research/invitations/<uuid:request_id>/answer/",
        InvitationAnswerApi.as_view(),
        name="research-invitation-answer",
    ),
]
