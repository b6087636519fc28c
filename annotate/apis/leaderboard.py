"""The models as people see them, for campaign admins and ML engineers:
Bradley-Terry scores of the campaign's policy versions and each round's win
rate of its candidate over its baseline.

The path to the maths: this API -> annotate/selectors/leaderboard.py
(tallies the ratings) -> annotate/stats.py (Bradley-Terry, the bootstrap,
Wilson intervals). Agreement and annotator quality: annotate/apis/quality.py."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAdminOrEngineer, readable_campaign_or_404
from annotate.selectors.leaderboard import campaign_leaderboard


class CampaignLeaderboardApi(APIView):
    """Bradley-Terry scores of the campaign's policy versions (Elo-like
    scale) with bootstrap 95% intervals, and each round's win rate of its
    candidate over its baseline with a Wilson 95% interval."""

    permission_classes = [IsAdminOrEngineer]

    class InputSerializer(serializers.Serializer):
        resamples = serializers.IntegerField(min_value=0, max_value=2000, default=200)

    class OutputSerializer(serializers.Serializer):
        class VersionSerializer(serializers.Serializer):
            version = serializers.IntegerField()
            policy_version_id = serializers.IntegerField()
            n = serializers.IntegerField(help_text="ratings this version was in")
            score = serializers.FloatField(allow_null=True)
            lower = serializers.FloatField(allow_null=True)
            upper = serializers.FloatField(allow_null=True)

        class RoundSerializer(serializers.Serializer):
            round = serializers.IntegerField()
            candidate_version = serializers.IntegerField()
            baseline_version = serializers.IntegerField()
            same_policy = serializers.BooleanField()
            n = serializers.IntegerField()
            wins = serializers.IntegerField()
            ties = serializers.IntegerField()
            losses = serializers.IntegerField()
            win_rate = serializers.FloatField(allow_null=True, help_text="ties count half")
            lower = serializers.FloatField(allow_null=True)
            upper = serializers.FloatField(allow_null=True)

        campaign = serializers.IntegerField()
        method = serializers.CharField()
        scale = serializers.CharField()
        interval = serializers.CharField()
        n_ratings = serializers.IntegerField()
        versions = VersionSerializer(many=True)
        rounds = RoundSerializer(many=True)

    @extend_schema(parameters=[InputSerializer], responses=OutputSerializer)
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        board = campaign_leaderboard(campaign=campaign, resamples=params.validated_data["resamples"])
        return Response(self.OutputSerializer(board).data)
