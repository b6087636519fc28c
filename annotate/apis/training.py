"""What ML engineers call: trigger training, watch runs, list model versions."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAdminOrEngineer, IsMLEngineer
from annotate.models import Campaign, PolicyVersion, RewardModelVersion, TrainingRun
from annotate.services.training import training_run_start


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    round = serializers.IntegerField(source="round.index", allow_null=True, default=None)

    class Meta:
        model = TrainingRun
        fields = [
            "id", "campaign", "round", "kind", "stage", "status", "attempts", "progress", "stages",
            "metrics", "config", "error", "dataset_path", "dataset_sha256", "created_at", "started_at", "finished_at",
        ]


class TrainingRunDetailOutputSerializer(TrainingRunOutputSerializer):
    class Meta(TrainingRunOutputSerializer.Meta):
        fields = TrainingRunOutputSerializer.Meta.fields + ["metrics_history"]


class TrainingTriggerApi(APIView):
    """Close the campaign's current round and train on every rating so far.
    The body may override the campaign's training config for this run:
    `{"config": {"reward": {...}, "policy": {...}, "generate": {...}}}`."""

    permission_classes = [IsMLEngineer]

    class InputSerializer(serializers.Serializer):
        config = serializers.JSONField(required=False, default=dict)

    @extend_schema(request=InputSerializer, responses={202: TrainingRunOutputSerializer})
    def post(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = training_run_start(campaign=campaign, user=request.user, overrides=serializer.validated_data["config"])
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunListApi(APIView):
    permission_classes = [IsAdminOrEngineer]

    @extend_schema(
        parameters=[OpenApiParameter("campaign", int, description="only this campaign's runs")],
        responses=TrainingRunOutputSerializer(many=True),
    )
    def get(self, request):
        runs = TrainingRun.objects.select_related("round").order_by("-created_at")
        if campaign := request.query_params.get("campaign"):
            if not campaign.isdigit():
                return Response({"error": "invalid", "detail": "campaign must be an integer id"}, status=400)
            runs = runs.filter(campaign_id=int(campaign))
        return Response(TrainingRunOutputSerializer(runs[:200], many=True).data)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsAdminOrEngineer]

    @extend_schema(responses=TrainingRunDetailOutputSerializer)
    def get(self, request, run_id: int):
        run = get_object_or_404(TrainingRun.objects.select_related("round"), pk=run_id)
        return Response(TrainingRunDetailOutputSerializer(run).data)


class ModelVersionListApi(APIView):
    """The campaign's policy and reward-model versions with their lineage."""

    permission_classes = [IsAdminOrEngineer]

    class PolicySerializer(serializers.ModelSerializer):
        parent = serializers.IntegerField(source="parent.version", allow_null=True, default=None)
        reward_model = serializers.IntegerField(source="reward_model.version", allow_null=True, default=None)

        class Meta:
            model = PolicyVersion
            fields = ["id", "version", "parent", "path", "sha256", "training_run", "reward_model", "metrics", "created_at"]

    class RewardSerializer(serializers.ModelSerializer):
        class Meta:
            model = RewardModelVersion
            fields = ["id", "version", "path", "sha256", "training_run", "dataset_sha256", "metrics", "created_at"]

    @extend_schema(responses=dict)
    def get(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        policies = campaign.policy_versions.select_related("parent", "reward_model").order_by("version")
        rewards = campaign.reward_versions.order_by("version")
        return Response(
            {
                "policies": self.PolicySerializer(policies, many=True).data,
                "reward_models": self.RewardSerializer(rewards, many=True).data,
            }
        )
