"""What annotators call: their campaigns, the next comparison, a rating.

Blind rating: nothing here says which policy wrote which side."""
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAnnotator
from annotate.apis.schema import CONFLICT, NOT_FOUND, TOO_MANY
from annotate.models import Comparison, Rating
from annotate.selectors.access import campaigns_visible_to
from annotate.selectors.leases import annotator_round_status, comparison_lease_payload
from annotate.services.leases import (
    lease_renew,
    lease_skip,
    comparison_lease_next_visible,
)
from annotate.services.ratings import rating_create


class TurnSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField()


class CampaignListApi(APIView):
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        status = serializers.CharField()
        instructions = serializers.CharField()
        overlap = serializers.IntegerField()
        aspects = serializers.ListField(child=serializers.DictField(), help_text="[{name, question, key}]")
        aspects_required = serializers.BooleanField()

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request):
        campaigns = campaigns_visible_to(user=request.user).order_by("pk")
        return Response(self.OutputSerializer(campaigns, many=True).data)


class RoundProgressSerializer(serializers.Serializer):
    # Counts only: which policy is in the round is not the annotator's business.
    round = serializers.IntegerField()
    comparisons = serializers.IntegerField()
    ratings = serializers.IntegerField()
    target_ratings = serializers.IntegerField()
    fraction = serializers.FloatField()


class AnnotatorProgressSerializer(serializers.Serializer):
    mine_today = serializers.IntegerField()
    mine_in_campaign = serializers.IntegerField()


class KSetAnswerSerializer(serializers.Serializer):
    text = serializers.CharField()
    truncated = serializers.BooleanField(help_text="cut at the token limit")


class ComparisonNextApi(APIView):
    """Lease the next comparison to rate (or get back the one you hold).

    `exclude`: comparisons the page already shows; you get another one (your
    other live lease, or a new lease) so the page can prefetch. At most two
    live leases per annotator and campaign."""

    permission_classes = [IsAnnotator]

    class InputSerializer(serializers.Serializer):
        exclude = serializers.ListField(child=serializers.IntegerField(), required=False, max_length=10)

    class OutputSerializer(serializers.Serializer):
        comparison = serializers.IntegerField()
        round = serializers.IntegerField()
        prompt = serializers.CharField()
        prompt_turns = TurnSerializer(many=True, allow_null=True)
        response_a = serializers.CharField()
        response_b = serializers.CharField()
        response_a_truncated = serializers.BooleanField(help_text="answer A was cut at the token limit")
        response_b_truncated = serializers.BooleanField(help_text="answer B was cut at the token limit")
        answers = KSetAnswerSerializer(
            many=True, allow_null=True,
            help_text="a k-set (campaign rank_k 3 or 4): its answers in display order, numbered 1..k (response_a and "
            "response_b are answers 1 and 2); rate it with a ranking. null for a pair",
        )
        leased_until = serializers.DateTimeField()
        progress = AnnotatorProgressSerializer()
        round_progress = RoundProgressSerializer()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, 204: None, 409: CONFLICT, 429: TOO_MANY})
    def post(self, request, campaign_id: int):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        found = comparison_lease_next_visible(
            annotator=request.user, campaign_id=campaign_id, exclude=serializer.validated_data.get("exclude", []),
        )
        if found is None:
            raise Http404("No Campaign matches the given query.")  # as get_object_or_404 says
        campaign, assignment = found
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        # Read once the lease is committed: the comparison's row lock is held
        # no longer than the lease needs.
        payload = comparison_lease_payload(comparison_id=assignment.comparison_id, annotator=request.user,
                                           campaign=campaign)
        return Response(self.OutputSerializer({**payload, "leased_until": assignment.leased_until}).data)


def _visible_comparison_or_404(request, comparison_id: int) -> None:
    """404 for a comparison outside the user's campaigns, as for one that does
    not exist; inside them, the lease services answer 409 for a comparison
    the user holds no lease on (whoever else holds it)."""
    get_object_or_404(
        Comparison.objects.filter(round__campaign__in=campaigns_visible_to(user=request.user)), pk=comparison_id
    )


class LeaseRenewApi(APIView):
    permission_classes = [IsAnnotator]

    class OutputSerializer(serializers.Serializer):
        comparison = serializers.IntegerField(source="comparison_id")
        leased_until = serializers.DateTimeField()

    @extend_schema(request=None, responses={200: OutputSerializer, 409: CONFLICT})
    def post(self, request, comparison_id: int):
        _visible_comparison_or_404(request, comparison_id)
        assignment = lease_renew(annotator=request.user, comparison_id=comparison_id)
        return Response(self.OutputSerializer(assignment).data)


class ComparisonSkipApi(APIView):
    """Give a comparison you hold back unrated, with a reason; you never get it again."""

    permission_classes = [IsAnnotator]

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(allow_blank=True)

    class OutputSerializer(serializers.Serializer):
        comparison = serializers.IntegerField(source="comparison_id")
        status = serializers.CharField()
        skip_reason = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, 409: CONFLICT})
    def post(self, request, comparison_id: int):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        _visible_comparison_or_404(request, comparison_id)
        assignment = lease_skip(
            annotator=request.user, comparison_id=comparison_id, reason=serializer.validated_data["reason"]
        )
        return Response(self.OutputSerializer(assignment).data)


class RatingCreateApi(APIView):
    """Submit a rating. Send a fresh idempotency_key per rating and the same
    one again when retrying: one rating results."""

    permission_classes = [IsAnnotator]

    class InputSerializer(serializers.Serializer):
        comparison = serializers.IntegerField()
        choice = serializers.CharField(max_length=20, required=False, default="",
                                       help_text="a pair's: A, B, tie or both_bad; leave it out with a ranking")
        # Checked by the service (ranking_validate), which names what is wrong.
        ranking = serializers.JSONField(
            required=False, allow_null=True,
            help_text="a k-set's: tie groups of its answer numbers (1..k), best first, e.g. [[2], [1, 3], [4]]",
        )
        strength = serializers.IntegerField(required=False, allow_null=True)
        reason = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
        time_on_task_ms = serializers.IntegerField(required=False, allow_null=True)
        idempotency_key = serializers.UUIDField()
        # Checked by the service (services/demonstrations.py), which names the
        # field it refuses: {text, origin ("a", "b" or ""), time_on_task_ms}.
        demonstration = serializers.JSONField(
            required=False, allow_null=True,
            help_text="a better answer written with the rating: {text, origin, time_on_task_ms}; "
            "origin is the chosen side ('a'/'b') or '' on both bad",
        )
        # Checked by the service against the campaign's aspects (services/aspects.py).
        aspects = serializers.JSONField(
            required=False, allow_null=True,
            help_text='the campaign\'s rubric aspects judged: {"<aspect name>": "A" | "B" | "same"}; '
            "with aspects_required, every aspect",
        )
        form = serializers.CharField(
            required=False, allow_blank=True, max_length=64,
            help_text="the rating form's version the page was built from (the rating page's config.form); "
            "if the campaign's aspects or written-answer setting changed since, the rating is stored as made "
            "and the answer says form_changed",
        )

    class OutputSerializer(serializers.Serializer):
        # Declared, not a ModelSerializer: that one builds its fields from the
        # model on every call, a cost on the annotator's hot path.
        id = serializers.IntegerField()
        comparison = serializers.IntegerField(source="comparison_id")
        choice = serializers.ChoiceField(choices=Rating.Choice.choices)
        strength = serializers.IntegerField(allow_null=True)
        ranking = serializers.JSONField(allow_null=True)
        reason = serializers.CharField(allow_blank=True)
        time_on_task_ms = serializers.IntegerField(allow_null=True)
        aspects = serializers.DictField(child=serializers.CharField())
        idempotency_key = serializers.UUIDField()
        created_at = serializers.DateTimeField()
        # True when the campaign's form changed since the page was built and
        # the rating was stored as made (services/rating_form.py).
        form_changed = serializers.BooleanField(default=False)

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer, 200: OutputSerializer, 404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        rating, created = rating_create(
            annotator=request.user,
            comparison_id=data["comparison"],
            choice=data["choice"],
            strength=data.get("strength"),
            reason=data.get("reason", ""),
            time_on_task_ms=data.get("time_on_task_ms"),
            idempotency_key=data["idempotency_key"],
            demonstration=data.get("demonstration"),
            aspects=data.get("aspects"),
            ranking=data.get("ranking"),
            form=data.get("form") or None,
        )
        return Response(
            self.OutputSerializer(rating).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class CampaignProgressApi(APIView):
    """Progress of the campaign's current round (anyone who sees the
    campaign), the caller's own counts, and while the round trains, the
    training run's stage and how long it should take (eta_seconds: from the
    campaign's earlier rounds; null before any was timed). The rating page
    polls it while it has nothing to rate, to pick up the next round."""

    class OutputSerializer(serializers.Serializer):
        class RoundSerializer(RoundProgressSerializer):
            status = serializers.CharField()
            complete_comparisons = serializers.IntegerField()
            # Version numbers (no model names); null in an evaluation round.
            candidate_version = serializers.IntegerField(allow_null=True)
            baseline_version = serializers.IntegerField(allow_null=True)

        class MineSerializer(AnnotatorProgressSerializer):
            mine_in_round = serializers.IntegerField()

        class TrainingSerializer(serializers.Serializer):
            run_status = serializers.CharField(allow_null=True)
            stage = serializers.CharField(allow_blank=True)
            eta_seconds = serializers.IntegerField(allow_null=True)

        campaign = serializers.IntegerField()
        status = serializers.CharField()
        auto_train = serializers.BooleanField(help_text="a full round starts training by itself")
        round = RoundSerializer(allow_null=True)
        mine = MineSerializer()
        training = TrainingSerializer(allow_null=True)

    @extend_schema(responses=OutputSerializer)
    def get(self, request, campaign_id: int):
        campaign = get_object_or_404(campaigns_visible_to(user=request.user), pk=campaign_id)
        return Response(self.OutputSerializer(annotator_round_status(annotator=request.user, campaign=campaign)).data)
