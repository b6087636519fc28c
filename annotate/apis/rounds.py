"""A campaign's rounds for admins and engineers: each round's progress and how
its comparisons were chosen (docs/training.md, "Selection"), and one round's
comparisons with the reason and score of each. Annotators never see either."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAdminOrEngineer, readable_campaign_or_404
from annotate.selectors.rounds import campaign_round
from annotate.selectors.selection import campaign_rounds_selection, round_comparisons_selection, rounds_selection


class SelectionSerializer(serializers.Serializer):
    strategy = serializers.CharField(help_text="the strategy used: random when the campaign's fell back")
    note = serializers.CharField(help_text="why it fell back (e.g. no reward model yet); empty otherwise")
    reasons = serializers.DictField(
        child=serializers.DictField(), help_text="per reason: count, score_min, score_mean, score_max"
    )


class RoundListApi(APIView):
    """Every round of the campaign, oldest first: its progress (regular
    comparisons) and its selection."""

    permission_classes = [IsAdminOrEngineer]

    class OutputSerializer(serializers.Serializer):
        round = serializers.IntegerField()
        status = serializers.CharField()
        comparisons = serializers.IntegerField()
        complete_comparisons = serializers.IntegerField()
        ratings = serializers.IntegerField()
        candidate_version = serializers.IntegerField(allow_null=True)
        baseline_version = serializers.IntegerField(allow_null=True)
        opened_at = serializers.DateTimeField()
        selection = SelectionSerializer()

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        return Response(self.OutputSerializer(campaign_rounds_selection(campaign=campaign), many=True).data)


class RoundComparisonsApi(APIView):
    """One round's comparisons, a page at a time in lease order, each with why
    it was chosen and the strategy's score of it."""

    permission_classes = [IsAdminOrEngineer]

    class InputSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
        offset = serializers.IntegerField(min_value=0, max_value=10**9, default=0)

    class OutputSerializer(serializers.Serializer):
        class ComparisonSerializer(serializers.Serializer):
            id = serializers.IntegerField(source="pk")
            prompt = serializers.IntegerField(source="prompt_id")
            prompt_external_id = serializers.CharField(source="prompt__external_id")
            gold = serializers.SerializerMethodField()
            rating_count = serializers.IntegerField()
            selection_reason = serializers.CharField(help_text="uncertainty, spread, exploration, random, gold, "
                                                     "reference; empty: opened before it was recorded")
            selection_score = serializers.FloatField(allow_null=True)

            def get_gold(self, row) -> bool:
                return bool(row["gold_choice"])

        round = serializers.IntegerField()
        count = serializers.IntegerField()
        selection = SelectionSerializer()
        comparisons = ComparisonSerializer(many=True)

    @extend_schema(parameters=[InputSerializer], responses=OutputSerializer)
    def get(self, request, campaign_id: int, index: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        round_ = campaign_round(campaign=campaign, index=index)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        limit, offset = params.validated_data["limit"], params.validated_data["offset"]
        rows = round_comparisons_selection(round_=round_)
        body = {
            "round": round_.index,
            "count": rows.count(),
            "selection": rounds_selection(campaign=campaign, round_ids=[round_.pk])[round_.pk],
            "comparisons": list(rows[offset : offset + limit]),
        }
        return Response(self.OutputSerializer(body).data)
