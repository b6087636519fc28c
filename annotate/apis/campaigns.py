"""What campaign admins call: create a campaign, import prompts, add annotators,
start, and (evaluation campaigns) add comparisons."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import (
    AdminsAndEngineersRead,
    IsAdminOrEngineer,
    IsCampaignAdmin,
    managed_campaign_or_404,
    readable_campaign_or_404,
)
from annotate.apis.schema import CONFLICT
from annotate.apis.uploads import ImportApi
from annotate.errors import ValidationFailed
from annotate.models import Campaign
from annotate.selectors.rounds import round_progress
from annotate.services.campaigns import (
    campaign_annotators_add,
    campaign_archive,
    campaign_create,
    campaign_pause,
    campaign_resume,
    campaign_start,
    campaign_update,
)
from annotate.services.evaluation import MAX_COMPARISONS_ADDED, evaluation_comparisons_add, evaluation_start
from annotate.services.prompts import prompts_import


ASPECTS_HELP = ('rubric aspects asked beside the overall choice: [{"name", "question", "key"}]; '
                'key: one lowercase letter the rating page does not use itself')
TRAINING_HELP = "overall: the reward model learns the overall choice; heads: a head per aspect, combined by aspect_weights"
WEIGHTS_HELP = '{"overall": w, "<aspect>": w}: the combination; missing names weigh 1 (overall) and 0 (aspects)'


class CampaignOutputSerializer(serializers.ModelSerializer):
    reference_model_name = serializers.CharField(
        source="reference_model.name", read_only=True, allow_null=True, default=None,
        help_text="the reference model's name (loop campaigns); null for none",
    )

    class Meta:
        model = Campaign
        fields = [
            "id", "name", "kind", "instructions", "overlap", "comparisons_per_round", "lease_ttl_seconds",
            "base_model", "training_config", "method", "kl_budget", "auto_train", "status", "created_at",
            "gold_frequency", "gold_min_accuracy", "gold_min_count", "reference_model", "reference_model_name",
            "demonstrations", "demonstration_reviews", "demonstration_pairs", "sft_schedule", "sft_every_n",
            "sft_anchor", "aspects", "aspects_required", "aspect_training", "aspect_weights",
            "selection", "selection_exploration", "selection_pool", "rank_k",
        ]


class CampaignCreateApi(APIView):
    permission_classes = [IsCampaignAdmin]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        kind = serializers.ChoiceField(choices=Campaign.Kind.choices, default=Campaign.Kind.LOOP,
                                       help_text="loop: ratings train the policy; evaluation: compare models, no training")
        base_model = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                           help_text="a local path or a hub id; loop campaigns only (required there)")
        instructions = serializers.CharField(required=False, allow_blank=True, default="", max_length=50000)
        overlap = serializers.IntegerField(min_value=1, max_value=50, default=3)
        rank_k = serializers.IntegerField(min_value=2, max_value=4, default=2,
                                          help_text="answers per comparison: 2 = pairs, 3 or 4 = rank k answers")
        comparisons_per_round = serializers.IntegerField(min_value=1, max_value=100000, default=64)
        lease_ttl_seconds = serializers.IntegerField(min_value=30, max_value=86400, default=600)
        training_config = serializers.JSONField(required=False, default=dict)
        auto_train = serializers.BooleanField(default=True)
        method = serializers.ChoiceField(choices=Campaign.Method.choices, default=Campaign.Method.RLOO,
                                         help_text="how the policy step trains")
        kl_budget = serializers.FloatField(required=False, allow_null=True, default=None,
                                           help_text="nats per answer a policy step may move from the base; null = none")
        gold_frequency = serializers.FloatField(min_value=0.0, max_value=0.9, default=0.1)
        gold_min_accuracy = serializers.FloatField(min_value=0.0, max_value=1.0, default=0.6)
        gold_min_count = serializers.IntegerField(min_value=1, max_value=10000, default=5)
        demonstrations = serializers.ChoiceField(
            choices=Campaign.Demonstrations.choices, default=Campaign.Demonstrations.OFF,
            help_text="better answers written on the rating page: off, optional, or asked for on both bad",
        )
        demonstration_reviews = serializers.IntegerField(default=1, help_text="accepting reviewers needed: 1 or 2")
        demonstration_pairs = serializers.BooleanField(
            default=False, help_text="an accepted edit also joins the reward data as preferences over both answers"
        )
        # Plain strings and numbers: campaign_fields_validate names what is allowed.
        sft_schedule = serializers.CharField(
            default=Campaign.SFTSchedule.EVERY_ROUND,
            help_text="when a train run fine-tunes on new accepted demonstrations: every_round, every_n or trigger",
        )
        sft_every_n = serializers.IntegerField(default=2, help_text="with sft_schedule every_n: every N rounds")
        sft_anchor = serializers.CharField(
            default=Campaign.SFTAnchor.BASE, help_text="the policy step's KL anchor: base, or sft (the latest SFT model)"
        )
        # Checked by services/aspects.py, which names the aspect and the problem.
        aspects = serializers.JSONField(required=False, default=list, help_text=ASPECTS_HELP)
        aspects_required = serializers.BooleanField(default=False, help_text="every rating must judge every aspect")
        aspect_training = serializers.CharField(default=Campaign.AspectTraining.OVERALL, help_text=TRAINING_HELP)
        aspect_weights = serializers.JSONField(required=False, default=dict, help_text=WEIGHTS_HELP)
        selection = serializers.CharField(
            default=Campaign.Selection.RANDOM,
            help_text="how the next round's comparisons are chosen: random, uncertainty or spread",
        )
        selection_exploration = serializers.FloatField(
            default=0.2, help_text="share of each round's picks drawn at random whatever the strategy: 0 to 1"
        )
        selection_pool = serializers.IntegerField(
            default=2, help_text="candidate prompts answered and scored per comparison opened: 1 to 16"
        )

    @extend_schema(request=InputSerializer, responses={201: CampaignOutputSerializer, 409: CONFLICT})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = campaign_create(created_by=request.user, **serializer.validated_data)
        return Response(CampaignOutputSerializer(campaign).data, status=status.HTTP_201_CREATED)


class CampaignDetailApi(AdminsAndEngineersRead, APIView):
    """GET: a campaign's settings (admins and engineers). PATCH: change some
    of them (campaign admins); the base model only before the campaign has
    started. Any invalid field is a 400 naming each one, and nothing changes."""

    write_permission = IsCampaignAdmin

    class UpdateInputSerializer(serializers.Serializer):
        # Types here; ranges and the base-model lock in campaign_fields_validate.
        name = serializers.CharField(required=False, max_length=200)
        base_model = serializers.CharField(required=False, max_length=500)
        instructions = serializers.CharField(required=False, allow_blank=True, max_length=50000, trim_whitespace=False)
        overlap = serializers.IntegerField(required=False)
        rank_k = serializers.IntegerField(required=False, help_text="applies from the next round opened")
        comparisons_per_round = serializers.IntegerField(required=False)
        lease_ttl_seconds = serializers.IntegerField(required=False)
        training_config = serializers.JSONField(required=False)
        auto_train = serializers.BooleanField(required=False)
        method = serializers.ChoiceField(choices=Campaign.Method.choices, required=False)
        kl_budget = serializers.FloatField(required=False, allow_null=True)
        gold_frequency = serializers.FloatField(required=False)
        gold_min_accuracy = serializers.FloatField(required=False)
        gold_min_count = serializers.IntegerField(required=False)
        demonstrations = serializers.ChoiceField(choices=Campaign.Demonstrations.choices, required=False)
        demonstration_reviews = serializers.IntegerField(required=False)
        demonstration_pairs = serializers.BooleanField(required=False)
        sft_schedule = serializers.CharField(required=False)
        sft_every_n = serializers.IntegerField(required=False)
        sft_anchor = serializers.CharField(required=False)
        aspects = serializers.JSONField(required=False, help_text=ASPECTS_HELP)
        aspects_required = serializers.BooleanField(required=False)
        aspect_training = serializers.CharField(required=False, help_text=TRAINING_HELP)
        aspect_weights = serializers.JSONField(required=False, help_text=WEIGHTS_HELP)
        selection = serializers.CharField(required=False)
        selection_exploration = serializers.FloatField(required=False)
        selection_pool = serializers.IntegerField(required=False)
        reference_model = serializers.IntegerField(
            required=False, allow_null=True,
            help_text="loop campaigns: the id of one of the campaign's external models that each round's "
            "candidate also meets; null for none",
        )

    @extend_schema(responses=CampaignOutputSerializer)
    def get(self, request, campaign_id: int):
        return Response(CampaignOutputSerializer(readable_campaign_or_404(request, campaign_id)).data)

    @extend_schema(request=UpdateInputSerializer, responses={200: CampaignOutputSerializer, 409: CONFLICT})
    def patch(self, request, campaign_id: int):
        campaign = managed_campaign_or_404(request, campaign_id)
        unknown = set(request.data) - set(self.UpdateInputSerializer().fields) if hasattr(request.data, "keys") else set()
        if unknown:
            raise ValidationFailed(f"Not campaign settings: {', '.join(sorted(unknown))}.",
                                   details={k: "not an editable setting" for k in unknown})
        serializer = self.UpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = campaign_update(campaign=campaign, fields=serializer.validated_data)
        return Response(CampaignOutputSerializer(campaign).data)


class CampaignPauseApi(APIView):
    """Stop giving out work (leases already held still count). Annotators
    asking for work are told the campaign is paused (409 campaign_paused)."""

    permission_classes = [IsCampaignAdmin]

    @extend_schema(request=None, responses={200: CampaignOutputSerializer, 409: CONFLICT})
    def post(self, request, campaign_id: int):
        campaign = campaign_pause(campaign=managed_campaign_or_404(request, campaign_id))
        return Response(CampaignOutputSerializer(campaign).data)


class CampaignResumeApi(APIView):
    permission_classes = [IsCampaignAdmin]

    @extend_schema(request=None, responses={200: CampaignOutputSerializer, 409: CONFLICT})
    def post(self, request, campaign_id: int):
        campaign = campaign_resume(campaign=managed_campaign_or_404(request, campaign_id))
        return Response(CampaignOutputSerializer(campaign).data)


class CampaignArchiveApi(APIView):
    """Close the campaign for good: no work, live leases released, data kept."""

    permission_classes = [IsCampaignAdmin]

    @extend_schema(request=None, responses=CampaignOutputSerializer)
    def post(self, request, campaign_id: int):
        campaign = campaign_archive(campaign=managed_campaign_or_404(request, campaign_id))
        return Response(CampaignOutputSerializer(campaign).data)


class PromptImportApi(ImportApi):
    """Import prompts from JSONL or CSV. JSONL: one object a line,
    `{"external_id", "prompt"}` or `{"external_id", "messages": [{"role",
    "content"}...]}`, optional `metadata`. CSV: a header line, columns
    `external_id` and `prompt` or `messages` (a JSON list), optional
    `metadata` (JSON). Send the file as the body (application/x-ndjson,
    text/csv) or as the multipart field `file`. Every line is checked first;
    one bad line imports nothing and the answer names each bad line
    (`errors`: [{line, error}]). `?dry_run=1`: check only, write nothing.
    Importing again adds nothing."""

    importer = staticmethod(prompts_import)


class CampaignAnnotatorsAddApi(APIView):
    permission_classes = [IsCampaignAdmin]

    class InputSerializer(serializers.Serializer):
        usernames = serializers.ListField(child=serializers.CharField(max_length=150), min_length=1, max_length=10000)

    @extend_schema(request=InputSerializer, responses=dict)
    def post(self, request, campaign_id: int):
        campaign = managed_campaign_or_404(request, campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        users = campaign_annotators_add(campaign=campaign, usernames=serializer.validated_data["usernames"])
        return Response({"added": sorted(u.username for u in users)})


class CampaignStartApi(APIView):
    """Loop campaigns: import the base model and have it answer round 0 (a
    run on the gpu queue): 202 {training_run, status}. Evaluation campaigns:
    open round 0 with comparisons_per_round comparisons between the models'
    answers, no training: 200 {round, comparisons, status}."""

    permission_classes = [IsAdminOrEngineer]

    @extend_schema(request=None, responses={200: dict, 202: dict})
    def post(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        if campaign.kind == Campaign.Kind.EVALUATION:
            round_, added = evaluation_start(campaign=campaign)
            return Response({"round": round_.index, "comparisons": added, "status": round_.status})
        run = campaign_start(campaign=campaign, user=request.user)
        return Response({"training_run": run.pk, "status": run.status}, status=status.HTTP_202_ACCEPTED)


class EvaluationComparisonsAddApi(APIView):
    """Evaluation campaigns: add `count` comparisons to the current round,
    balanced over pairs of models and prompts with everything compared so
    far. 409 for a loop campaign, one not started, or when every pair of
    models has met on every prompt both answered."""

    permission_classes = [IsAdminOrEngineer]

    class InputSerializer(serializers.Serializer):
        count = serializers.IntegerField(min_value=1, max_value=MAX_COMPARISONS_ADDED,
                                         help_text="comparisons to add (gold pairs come on top)")

    class OutputSerializer(serializers.Serializer):
        round = serializers.IntegerField()
        added = serializers.IntegerField(help_text="regular comparisons added (may be fewer than asked)")
        comparisons = serializers.IntegerField(help_text="regular comparisons in the round now")

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer, 409: CONFLICT})
    def post(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        round_, added = evaluation_comparisons_add(campaign=campaign, count=serializer.validated_data["count"])
        total = round_progress(round_=round_)["comparisons"]
        return Response(self.OutputSerializer({"round": round_.index, "added": added, "comparisons": total}).data,
                        status=status.HTTP_201_CREATED)
