"""What ML engineers call: trigger and cancel training, watch runs, list
model versions, download checkpoints and dataset snapshots."""
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAdminOrEngineer, IsMLEngineer, readable_campaign_or_404, readable_or_404
from annotate.apis.schema import CONFLICT
from annotate.downloads import IntegrityError, folder_zip_verified
from annotate.errors import Conflict, NotFound
from annotate.models import PolicyVersion, RewardModelVersion, SFTModelVersion, TrainingRun
from annotate.selectors.answers import campaign_external_models
from annotate.selectors.training import (
    campaign_policy_versions, campaign_reward_versions, campaign_sft_versions, training_runs_readable_by,
)
from annotate.training.runs import training_run_cancel, training_run_start


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    round = serializers.IntegerField(source="round.index", allow_null=True, default=None)

    class Meta:
        model = TrainingRun
        fields = [
            "id", "campaign", "round", "kind", "stage", "status", "attempts", "progress", "stages",
            "metrics", "config", "error", "dataset_path", "dataset_sha256", "sft_dataset_path", "sft_dataset_sha256",
            "created_at", "started_at", "finished_at",
        ]


class TrainingRunDetailOutputSerializer(TrainingRunOutputSerializer):
    class Meta(TrainingRunOutputSerializer.Meta):
        fields = TrainingRunOutputSerializer.Meta.fields + ["metrics_history"]


class TrainingTriggerApi(APIView):
    """Close the campaign's current round and train on every rating so far.
    The body may override the campaign's training config for this run:
    `{"config": {"reward": {...}, "policy": {...}, "generate": {...}}}`, and
    choose the policy method: `{"method": "rloo"}` (default: the campaign's),
    and ask for the sft stage (`{"sft": true}`: fine-tune on the accepted
    demonstrations not yet trained on, whatever the campaign's sft_schedule;
    false: not this run; absent or null: the schedule decides)."""

    permission_classes = [IsMLEngineer]

    class InputSerializer(serializers.Serializer):
        config = serializers.JSONField(required=False, default=dict)
        # A plain string, so the service's message names the allowed methods.
        method = serializers.CharField(required=False, allow_null=True, default=None)
        # Any JSON, so the service's message says what is allowed.
        sft = serializers.JSONField(required=False, allow_null=True, default=None,
                                    help_text="true: run the sft stage now; false: skip it; null: the schedule")

    @extend_schema(request=InputSerializer, responses={202: TrainingRunOutputSerializer, 409: CONFLICT})
    def post(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        run = training_run_start(
            campaign=campaign, user=request.user, overrides=data["config"], method=data["method"] or None,
            sft=data["sft"],
        )
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunCancelApi(APIView):
    """Cancel a queued or running run: its running stage stops within a few
    seconds and publishes nothing; a train run's round goes back to
    collecting (unless the next round is already open). 409 for a finished run."""

    permission_classes = [IsMLEngineer]

    @extend_schema(request=None, responses={200: TrainingRunOutputSerializer, 409: CONFLICT})
    def post(self, request, run_id: int):
        run = readable_or_404(request, TrainingRun.objects.all(), run_id)
        run = training_run_cancel(run=run, user=request.user)
        return Response(TrainingRunOutputSerializer(run).data)


class TrainingRunListApi(APIView):
    permission_classes = [IsAdminOrEngineer]

    @extend_schema(
        parameters=[OpenApiParameter("campaign", int, description="only this campaign's runs")],
        responses=TrainingRunOutputSerializer(many=True),
    )
    def get(self, request):
        runs = training_runs_readable_by(user=request.user).select_related("round").order_by("-created_at")
        if campaign := request.query_params.get("campaign"):
            if not campaign.isdigit():
                return Response({"error": "invalid", "detail": "campaign must be an integer id"}, status=400)
            runs = runs.filter(campaign_id=int(campaign))
        return Response(TrainingRunOutputSerializer(runs[:200], many=True).data)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsAdminOrEngineer]

    @extend_schema(responses=TrainingRunDetailOutputSerializer)
    def get(self, request, run_id: int):
        run = readable_or_404(request, TrainingRun.objects.select_related("round"), run_id)
        return Response(TrainingRunDetailOutputSerializer(run).data)


class ModelVersionListApi(APIView):
    """The campaign's policy and reward-model versions with their lineage,
    and its external models (imported answers, endpoints) with their answer
    counts. An endpoint's API key is never shown: `has_api_key` says whether
    it has one."""

    permission_classes = [IsAdminOrEngineer]

    class PolicySerializer(serializers.ModelSerializer):
        parent = serializers.IntegerField(source="parent.version", allow_null=True, default=None)
        reward_model = serializers.IntegerField(source="reward_model.version", allow_null=True, default=None)
        sft_model = serializers.IntegerField(source="sft_model.version", allow_null=True, default=None,
                                             help_text="the SFT model its policy step started from; null for none")

        class Meta:
            model = PolicyVersion
            fields = ["id", "version", "parent", "sft_model", "path", "sha256", "training_run", "reward_model",
                      "metrics", "created_at"]

    class SFTSerializer(serializers.ModelSerializer):
        start = serializers.IntegerField(source="start.version", help_text="the policy version it was fine-tuned from")

        class Meta:
            model = SFTModelVersion
            fields = ["id", "version", "start", "path", "sha256", "training_run", "dataset_sha256",
                      "demonstration_ids", "metrics", "created_at"]

    class RewardSerializer(serializers.ModelSerializer):
        class Meta:
            model = RewardModelVersion
            fields = ["id", "version", "path", "sha256", "training_run", "dataset_sha256", "metrics", "created_at"]

    class ExternalSerializer(serializers.Serializer):
        # Named fields only: the model's api_key is write-only.
        id = serializers.IntegerField()
        name = serializers.CharField()
        kind = serializers.CharField()
        answers = serializers.IntegerField(source="answer_count")
        has_api_key = serializers.BooleanField()
        created_at = serializers.DateTimeField()

    @extend_schema(responses=dict)
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        return Response(
            {
                "policies": self.PolicySerializer(campaign_policy_versions(campaign=campaign), many=True).data,
                "reward_models": self.RewardSerializer(campaign_reward_versions(campaign=campaign), many=True).data,
                "sft_models": self.SFTSerializer(campaign_sft_versions(campaign=campaign), many=True).data,
                "external_models": self.ExternalSerializer(campaign_external_models(campaign=campaign), many=True).data,
            }
        )


def _zip_response(*, path: str, sha256: str, name: str) -> StreamingHttpResponse:
    try:
        chunks = folder_zip_verified(path=path, sha256=sha256, prefix=name)
    except IntegrityError as exc:
        raise Conflict(f"Not sent: {name} failed its sha256 check. {exc}") from exc
    answer = StreamingHttpResponse(chunks, content_type="application/zip")
    answer["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    answer["X-Checksum-SHA256"] = sha256
    return answer


# 409: the folder failed its sha256 check, and nothing was sent.
_ZIP = {(200, "application/zip"): OpenApiTypes.BINARY, 409: CONFLICT}


class _VersionDownloadApi(APIView):
    """A model version's store folder as a zip, verified first."""

    permission_classes = [IsAdminOrEngineer]
    model: type[PolicyVersion | RewardModelVersion | SFTModelVersion]
    # The zip's name: campaign-<id>-<name_prefix><version>.
    name_prefix: str

    @extend_schema(responses=_ZIP)
    def get(self, request, version_id: int):
        version = readable_or_404(request, self.model.objects.all(), version_id)
        return _zip_response(
            path=version.path, sha256=version.sha256,
            name=f"campaign-{version.campaign_id}-{self.name_prefix}{version.version}",
        )


class PolicyVersionDownloadApi(_VersionDownloadApi):
    """The policy version's store folder as a zip (safetensors, config,
    tokenizer, meta.json, manifest.json), verified first: 409 if it does not
    match its recorded sha256, which is in the `X-Checksum-SHA256` header."""

    model = PolicyVersion
    name_prefix = "policy-v"


class RewardVersionDownloadApi(_VersionDownloadApi):
    """The reward model version's store folder as a zip, verified first (see
    the policy download)."""

    model = RewardModelVersion
    name_prefix = "reward-r"


class SFTVersionDownloadApi(_VersionDownloadApi):
    """The SFT model's store folder as a zip (the checkpoint the run's sft
    stage fine-tuned on accepted demonstrations; its meta.json names the
    policy version it started from and the demonstrations' snapshot sha256),
    verified first (see the policy download)."""

    model = SFTModelVersion
    name_prefix = "sft-s"


class TrainingRunDatasetApi(APIView):
    """The run's dataset snapshot (preferences.jsonl, manifest.json) as a
    zip, verified first (see the policy download)."""

    permission_classes = [IsAdminOrEngineer]

    @extend_schema(responses=_ZIP)
    def get(self, request, run_id: int):
        run = readable_or_404(request, TrainingRun.objects.all(), run_id)
        if not run.dataset_path:
            raise NotFound(f"Run {run.pk} has no dataset snapshot yet: its snapshot stage has not finished.")
        return _zip_response(
            path=run.dataset_path, sha256=run.dataset_sha256, name=f"campaign-{run.campaign_id}-run{run.pk}-dataset"
        )


class TrainingRunSFTDatasetApi(APIView):
    """The run's demonstrations snapshot (conversations.jsonl, TRL's
    `messages` rows the sft stage trained on, and manifest.json) as a zip,
    verified first (see the policy download). 404 while the run has none:
    its sft stage has not snapshotted, or skipped."""

    permission_classes = [IsAdminOrEngineer]

    @extend_schema(responses=_ZIP)
    def get(self, request, run_id: int):
        run = readable_or_404(request, TrainingRun.objects.all(), run_id)
        if not run.sft_dataset_path:
            raise NotFound(
                f"Run {run.pk} has no demonstrations snapshot: its sft stage has not run yet, or skipped."
            )
        return _zip_response(
            path=run.sft_dataset_path, sha256=run.sft_dataset_sha256,
            name=f"campaign-{run.campaign_id}-run{run.pk}-sft-dataset",
        )
