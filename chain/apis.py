"""The ledger over the JSON API: this host's copy of the chain and replication status.

Every host answers for its own schema (the hub: the canonical chain; a tenant:
its replica). Any signed-in role may read: blocks and their transactions carry
no patient data.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasRole
from accounts.roles import Role
from chain.selectors import (
    MAX_PAGE,
    block_get,
    block_is_verified,
    block_list,
    chain_state,
    chain_status,
    hub_height,
)

ANY_ROLE = HasRole.of(*Role.values)


class BlockOutputSerializer(serializers.Serializer):
    height = serializers.IntegerField()
    hash = serializers.CharField()
    previous_hash = serializers.CharField()
    created_at = serializers.DateTimeField()
    proposer = serializers.CharField()
    merkle_root = serializers.CharField()
    transaction_count = serializers.IntegerField()
    hub_signature = serializers.CharField()
    encoding_version = serializers.IntegerField()
    stored_at = serializers.DateTimeField()
    is_verified = serializers.SerializerMethodField()

    def get_is_verified(self, block) -> bool:
        return block_is_verified(block, self.context["state"])


class ChainBlockListApi(APIView):
    """Blocks of this host's chain in ascending height after ``after``."""

    permission_classes = [ANY_ROLE]

    class InputSerializer(serializers.Serializer):
        after = serializers.IntegerField(min_value=-1, default=-1)
        limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=50)

    @extend_schema_serializer(component_name="ChainBlock")
    class OutputSerializer(BlockOutputSerializer):
        pass

    @extend_schema(
        operation_id="chain_blocks_list",
        parameters=[InputSerializer],
        responses=OutputSerializer(many=True),
    )
    def get(self, request):
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        blocks = block_list(
            after=query.validated_data["after"], limit=query.validated_data["limit"]
        )
        data = self.OutputSerializer(blocks, many=True, context={"state": chain_state()}).data
        return Response(data)


class ChainBlockDetailApi(APIView):
    """One block of this host's chain with its transactions."""

    permission_classes = [ANY_ROLE]

    @extend_schema_serializer(component_name="ChainBlockDetail")
    class OutputSerializer(BlockOutputSerializer):
        @extend_schema_serializer(component_name="ChainTransaction")
        class TransactionSerializer(serializers.Serializer):
            index = serializers.IntegerField()
            kind = serializers.CharField()
            author = serializers.CharField(help_text="The author's key id.")
            payload = serializers.JSONField()
            timestamp = serializers.DateTimeField()
            signature = serializers.CharField()
            hash = serializers.CharField()

        transactions = TransactionSerializer(many=True)

    @extend_schema(
        operation_id="chain_blocks_retrieve",
        parameters=[OpenApiParameter("height", int, OpenApiParameter.PATH)],
        responses=OutputSerializer,
    )
    def get(self, request, height: int):
        block = block_get(height=height)
        if block is None:
            raise NotFound(f"No block at height {height}.")
        data = self.OutputSerializer(block, context={"state": chain_state()}).data
        return Response(data)


class ChainStatusApi(APIView):
    """Replication status: on the hub every copy (the hub's first); on a tenant
    its own copy only. ``hub_height`` is the canonical chain's height."""

    permission_classes = [ANY_ROLE]

    @extend_schema_serializer(component_name="ChainStatus")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="ChainReplica")
        class ReplicaSerializer(serializers.Serializer):
            slug = serializers.CharField()
            kind = serializers.CharField()
            height = serializers.IntegerField()
            head_hash = serializers.CharField()
            behind = serializers.IntegerField()
            last_delivery_at = serializers.DateTimeField(allow_null=True)
            last_verified_at = serializers.DateTimeField(allow_null=True)
            last_verification = serializers.CharField(
                help_text='"never", "ok", or what the last verification found wrong.'
            )

        hub_height = serializers.IntegerField()
        replicas = ReplicaSerializer(many=True)

    @extend_schema(operation_id="chain_status", responses=OutputSerializer)
    def get(self, request):
        tenant = request.tenant
        replicas = chain_status(only=None if tenant.is_hub else tenant.slug)
        data = {"hub_height": hub_height(), "replicas": replicas}
        return Response(self.OutputSerializer(data).data)
