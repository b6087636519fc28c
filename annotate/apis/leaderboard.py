"""The models as people see them, for campaign admins and ML engineers:
Bradley-Terry scores of every model of the campaign (policy versions and
external models), plain and length-controlled, each round's win rate of its
candidate over its baseline and over the reference model, and each pair of
models' record.

The path to the maths: this API -> annotate/selectors/leaderboard.py
(tallies the ratings) -> annotate/stats/ (Bradley-Terry, its
length-controlled form, the bootstrap, Wilson intervals). Agreement and
annotator quality: annotate/apis/quality.py."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAdminOrEngineer, readable_campaign_or_404
from annotate.selectors.leaderboard import campaign_leaderboard


class LeaderboardWinRecordSerializer(serializers.Serializer):
    # Numbers, not whole numbers: a ranking's implied pairs count 2/k each (selectors/leaderboard.py).
    n = serializers.FloatField()
    wins = serializers.FloatField()
    ties = serializers.FloatField()
    losses = serializers.FloatField()
    win_rate = serializers.FloatField(allow_null=True, help_text="ties count half")
    lower = serializers.FloatField(allow_null=True, help_text="Wilson 95% interval")
    upper = serializers.FloatField(allow_null=True)


class LeaderboardAgainstReferenceSerializer(LeaderboardWinRecordSerializer):
    model = serializers.CharField(allow_null=True, help_text="the reference model met")


class AsOfSerializer(serializers.Serializer):
    ratings = serializers.IntegerField(help_text="the campaign's ratings when the result was computed")
    ratings_now = serializers.IntegerField(help_text="the campaign's ratings now")
    ratings_behind = serializers.IntegerField(help_text="ratings added since the result was computed")
    computed_at = serializers.DateTimeField()


class CampaignLeaderboardApi(APIView):
    """Bradley-Terry scores of the campaign's models (Elo-like scale) with
    bootstrap 95% intervals, and the length-controlled scores beside them
    (the answers' length difference as a covariate, as Chatbot Arena's style
    control) with theirs and the fitted length coefficient; each round's win
    rate of its candidate over its baseline and over the reference model
    with a Wilson 95% interval; each pair of models' record; per rubric
    aspect, Bradley-Terry scores from its judgments (A or B a win, same half
    each) with the same bootstrap."""

    permission_classes = [IsAdminOrEngineer]

    class InputSerializer(serializers.Serializer):
        resamples = serializers.IntegerField(min_value=0, max_value=2000, default=200)

    class OutputSerializer(serializers.Serializer):
        class ModelSerializer(serializers.Serializer):
            kind = serializers.ChoiceField(choices=["policy", "external"])
            name = serializers.CharField(help_text='"v3" for a policy version, an external model\'s own name')
            version = serializers.IntegerField(allow_null=True, help_text="policy versions only")
            policy_version_id = serializers.IntegerField(allow_null=True)
            external_model_id = serializers.IntegerField(allow_null=True)
            reference = serializers.BooleanField(help_text="the campaign's reference model")
            sft_version = serializers.IntegerField(
                allow_null=True, default=None,
                help_text="policy versions whose step started from an SFT model: that model's number (s1, s2…)",
            )
            n = serializers.FloatField(help_text="ratings this model was in; a ranking's implied pairs count 2/k each")
            score = serializers.FloatField(allow_null=True)
            lower = serializers.FloatField(allow_null=True)
            upper = serializers.FloatField(allow_null=True)
            lc_score = serializers.FloatField(allow_null=True, help_text="length-controlled score")
            lc_lower = serializers.FloatField(allow_null=True)
            lc_upper = serializers.FloatField(allow_null=True)

        class RoundSerializer(serializers.Serializer):
            round = serializers.IntegerField()
            candidate_version = serializers.IntegerField(allow_null=True, help_text="null in evaluation rounds")
            baseline_version = serializers.IntegerField(allow_null=True)
            same_policy = serializers.BooleanField()
            n = serializers.FloatField(help_text="a ranking's implied pairs count 2/k each")
            wins = serializers.FloatField(allow_null=True)
            ties = serializers.FloatField(allow_null=True)
            losses = serializers.FloatField(allow_null=True)
            win_rate = serializers.FloatField(allow_null=True, help_text="ties count half")
            lower = serializers.FloatField(allow_null=True)
            upper = serializers.FloatField(allow_null=True)
            against_reference = LeaderboardAgainstReferenceSerializer(
                allow_null=True, help_text="the candidate against the reference model in this round; null without one"
            )

        class PairSerializer(LeaderboardWinRecordSerializer):
            model_a = serializers.CharField()
            model_b = serializers.CharField(help_text="wins, ties, losses are model_a's against model_b")

        class LengthControlSerializer(serializers.Serializer):
            method = serializers.CharField()
            coefficient = serializers.FloatField(
                help_text="log-odds of winning per standard deviation of the normalised length difference"
            )
            lower = serializers.FloatField()
            upper = serializers.FloatField()

        class AspectBoardSerializer(serializers.Serializer):
            class AspectModelSerializer(serializers.Serializer):
                kind = serializers.ChoiceField(choices=["policy", "external"])
                name = serializers.CharField()
                version = serializers.IntegerField(allow_null=True)
                n = serializers.IntegerField(help_text="judgments of this aspect this model was in")
                score = serializers.FloatField(allow_null=True)
                lower = serializers.FloatField(allow_null=True)
                upper = serializers.FloatField(allow_null=True)

            name = serializers.CharField()
            question = serializers.CharField()
            n_ratings = serializers.IntegerField(help_text="A / B / same judgments between two models")
            models = AspectModelSerializer(many=True, help_text="best first on this aspect")

        campaign = serializers.IntegerField()
        kind = serializers.CharField()
        method = serializers.CharField()
        scale = serializers.CharField()
        interval = serializers.CharField()
        length_control = LengthControlSerializer()
        n_ratings = serializers.IntegerField(help_text="pair ratings and rankings")
        n_rankings = serializers.IntegerField(help_text="rankings of k-sets among them")
        rankings = serializers.CharField(help_text="how a ranking enters the fit")
        reference_model = serializers.CharField(allow_null=True)
        models = ModelSerializer(many=True, help_text="every model of the campaign, best first")
        versions = ModelSerializer(many=True, help_text="the policy versions alone, best first")
        rounds = RoundSerializer(many=True)
        pairs = PairSerializer(many=True)
        aspects = AspectBoardSerializer(many=True, default=list,
                                        help_text="per rubric aspect: Bradley-Terry from its A / B / same")
        stale = serializers.BooleanField(help_text="the previous ratings' result, while the current one is computed")
        as_of = AsOfSerializer(help_text="the ratings the result is of")

    @extend_schema(parameters=[InputSerializer], responses=OutputSerializer)
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        board = campaign_leaderboard(campaign=campaign, resamples=params.validated_data["resamples"], stale_ok=True)
        return Response(self.OutputSerializer(board).data)
