"""Data quality, for campaign admins and ML engineers: agreement between
annotators, Dawid-Skene consensus, and each annotator's standing and
reliability weight.

The path to the maths: this API -> annotate/selectors/quality.py (reads the
ratings) -> annotate/stats/ (the statistics). The models' leaderboard is
annotate/apis/leaderboard.py."""
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.leaderboard import AsOfSerializer
from annotate.apis.permissions import IsAdminOrEngineer, readable_campaign_or_404
from annotate.selectors.quality import campaign_quality
from annotate.selectors.rounds import campaign_round


class CampaignQualityApi(APIView):
    """Inter-annotator agreement (Krippendorff's alpha on the ordinal scale,
    percent agreement), Dawid-Skene consensus, and per annotator: gold
    accuracy, agreement with the consensus, left-side pick rate, tie and
    both-bad rates, median seconds, and the reliability weight their A/B
    ratings get in reward-model training. `aspects`: per rubric aspect, its
    alpha (A -1, same 0, B +1), percent agreement, Dawid-Skene consensus over
    A / B / same and per-annotator figures. `?round=N`: that round only."""

    permission_classes = [IsAdminOrEngineer]

    class OutputSerializer(serializers.Serializer):
        class AnnotatorSerializer(serializers.Serializer):
            annotator_id = serializers.IntegerField()
            username = serializers.CharField()
            n = serializers.IntegerField()
            gold_n = serializers.IntegerField()
            gold_accuracy = serializers.FloatField(allow_null=True)
            consensus_n = serializers.IntegerField()
            consensus_agreement = serializers.FloatField(allow_null=True)
            left_pick_rate = serializers.FloatField(allow_null=True, help_text="share of A among A/B picks")
            tie_rate = serializers.FloatField()
            both_bad_rate = serializers.FloatField()
            median_seconds = serializers.FloatField(allow_null=True)
            reliability = serializers.FloatField(allow_null=True, help_text="Dawid-Skene kappa; null: too few ratings")
            estimated_accuracy = serializers.FloatField(allow_null=True)
            weight = serializers.FloatField(help_text="reward-model sample weight")

        class AspectSerializer(serializers.Serializer):
            class AspectAnnotatorSerializer(serializers.Serializer):
                annotator_id = serializers.IntegerField()
                username = serializers.CharField()
                n = serializers.IntegerField()
                consensus_n = serializers.IntegerField()
                consensus_agreement = serializers.FloatField(allow_null=True)
                left_pick_rate = serializers.FloatField(allow_null=True, help_text="share of A among A/B")
                same_rate = serializers.FloatField()
                reliability = serializers.FloatField(allow_null=True, help_text="Dawid-Skene kappa; null: too few")
                estimated_accuracy = serializers.FloatField(allow_null=True)

            name = serializers.CharField()
            question = serializers.CharField()
            n_ratings = serializers.IntegerField()
            n_comparisons = serializers.IntegerField()
            alpha = serializers.FloatField(allow_null=True, help_text="ordinal: A -1, same 0, B +1")
            alpha_units = serializers.IntegerField()
            percent_agreement = serializers.FloatField(allow_null=True)
            agreement_pairs = serializers.IntegerField()
            consensus_labels = serializers.DictField(child=serializers.IntegerField())
            annotators = AspectAnnotatorSerializer(many=True)

        campaign = serializers.IntegerField()
        round = serializers.IntegerField(allow_null=True)
        n_ratings = serializers.IntegerField()
        n_comparisons = serializers.IntegerField()
        n_annotators = serializers.IntegerField()
        alpha = serializers.FloatField(allow_null=True)
        alpha_units = serializers.IntegerField()
        alpha_both_bad_missing = serializers.IntegerField()
        alpha_note = serializers.CharField()
        n_rankings = serializers.IntegerField(help_text="rankings of k-sets (not in n_ratings' pair figures)")
        ranking_alpha = serializers.FloatField(allow_null=True, help_text="Krippendorff's alpha over rankings, ordinal")
        ranking_alpha_units = serializers.IntegerField()
        ranking_alpha_note = serializers.CharField()
        percent_agreement = serializers.FloatField(allow_null=True)
        agreement_pairs = serializers.IntegerField()
        consensus_method = serializers.CharField()
        consensus_labels = serializers.DictField(child=serializers.IntegerField())
        annotators = AnnotatorSerializer(many=True)
        aspects = AspectSerializer(many=True, default=list, help_text="the same figures per rubric aspect")
        stale = serializers.BooleanField(help_text="the previous ratings' result, while the current one is computed")
        as_of = AsOfSerializer(help_text="the ratings the result is of")

    @extend_schema(
        parameters=[OpenApiParameter("round", int, description="only this round's ratings")],
        responses=OutputSerializer,
    )
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        round_ = campaign_round(campaign=campaign, index=request.query_params.get("round"))
        return Response(self.OutputSerializer(campaign_quality(campaign=campaign, round_=round_, stale_ok=True)).data)
