from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView


class MeApi(APIView):
    """Who is signed in, with which role, at which tenant."""

    class TenantOutputSerializer(serializers.Serializer):
        slug = serializers.CharField()
        name = serializers.CharField()
        kind = serializers.CharField()

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        name = serializers.CharField(source="display_name")
        role = serializers.CharField()
        tenant = serializers.SerializerMethodField()

        def get_tenant(self, user) -> dict:
            tenant = self.context["tenant"]
            return {"slug": tenant.slug, "name": tenant.name, "kind": tenant.kind}

    @extend_schema(responses=OutputSerializer, operation_id="me")
    def get(self, request):
        data = self.OutputSerializer(request.user, context={"tenant": request.tenant}).data
        return Response(data)
