"""Demonstrations for campaign admins and ML engineers: list a campaign's
better answers by review status, and review one (accept, reject with a
reason, or edit and accept). The same selectors and service as the console's
review page (frontend/console/demonstrations.py); who may review, how many
accepts decide and what is refused are in annotate/services/demonstrations.py."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import (
    IsAdminOrEngineer, IsCampaignAdmin, managed_campaign_or_404, readable_campaign_or_404,
)
from annotate.apis.schema import CONFLICT
from annotate.models import Demonstration, DemonstrationReview
from annotate.selectors.demonstrations import demonstration_counts, demonstrations_for_review
from annotate.services.demonstrations import demonstration_review


class DemonstrationReviewOutputSerializer(serializers.Serializer):
    reviewer = serializers.CharField(source="reviewer.username")
    verdict = serializers.ChoiceField(choices=DemonstrationReview.Verdict.choices)
    reason = serializers.CharField()
    edited = serializers.SerializerMethodField(help_text="whether this review replaced the text")
    created_at = serializers.DateTimeField()

    def get_edited(self, review) -> bool:
        return bool(review.edited_text)


class DemonstrationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    comparison = serializers.IntegerField(source="comparison_id")
    round = serializers.IntegerField(source="comparison.round.index")
    prompt = serializers.CharField(source="comparison.prompt.text")
    prompt_turns = serializers.JSONField(source="comparison.prompt.turns", allow_null=True)
    response_a = serializers.CharField(source="comparison.response_a.text")
    response_b = serializers.CharField(source="comparison.response_b.text")
    choice = serializers.CharField(source="rating.choice")
    strength = serializers.IntegerField(source="rating.strength", allow_null=True)
    annotator = serializers.CharField(source="annotator.username")
    origin = serializers.CharField(help_text='"a" / "b": the chosen answer edited; "": written from nothing (both bad)')
    text = serializers.CharField(help_text="the text that trains (a reviewer's edit, if any)")
    submitted_text = serializers.CharField(help_text="the text as its author sent it")
    time_on_task_ms = serializers.IntegerField(allow_null=True)
    diff_chars = serializers.IntegerField(help_text="characters deleted plus inserted from the origin's text")
    status = serializers.ChoiceField(choices=Demonstration.Status.choices)
    reviews = DemonstrationReviewOutputSerializer(many=True, source="reviews.all")
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)


class CampaignDemonstrationsApi(APIView):
    """The campaign's demonstrations with one review status (default
    pending, oldest first: reviewed in the order written), a page at a time,
    with the counts in each status and how many accepting reviews decide."""

    permission_classes = [IsAdminOrEngineer]

    class InputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Demonstration.Status.choices, default=Demonstration.Status.PENDING)
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
        # Bounded: the database takes no offset past a bigint.
        offset = serializers.IntegerField(min_value=0, max_value=10**9, default=0)

    class OutputSerializer(serializers.Serializer):
        campaign = serializers.IntegerField()
        status = serializers.CharField()
        counts = serializers.DictField(child=serializers.IntegerField(), help_text="{pending, accepted, rejected}")
        reviews_required = serializers.IntegerField(help_text="distinct accepting reviewers that decide one")
        demonstrations = DemonstrationOutputSerializer(many=True)

    @extend_schema(parameters=[InputSerializer], responses=OutputSerializer)
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        status, limit, offset = (params.validated_data[k] for k in ("status", "limit", "offset"))
        shown = demonstrations_for_review(campaign=campaign, status=status)[offset : offset + limit]
        body = {
            "campaign": campaign.pk,
            "status": status,
            "counts": demonstration_counts(campaign=campaign),
            "reviews_required": max(1, campaign.demonstration_reviews),
            "demonstrations": list(shown),
        }
        return Response(self.OutputSerializer(body).data)


class DemonstrationReviewApi(APIView):
    """One reviewer's verdict on a pending demonstration (campaign admins of
    its campaign, and staff). `accept` decides once the campaign's
    `demonstration_reviews` distinct reviewers accepted (until then it stays
    pending); `edited_text` with accept replaces the text that trains (the
    author's stays as `submitted_text`). `reject` needs a `reason` and
    decides at once. 409: the author reviewing their own, a second review by
    the same reviewer, or one already decided. Refused: nothing written."""

    permission_classes = [IsCampaignAdmin]

    class InputSerializer(serializers.Serializer):
        # Plain strings, so the service's messages say what is allowed.
        verdict = serializers.CharField(help_text="accept or reject")
        reason = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False,
                                       help_text="why it is rejected (required to reject)")
        # Any JSON, so a number or a list is refused by the service as "not a
        # string" rather than turned into one.
        edited_text = serializers.JSONField(required=False, allow_null=True, default=None,
                                            help_text="with accept: the text as it should train (markdown)")

    @extend_schema(request=InputSerializer, responses={200: DemonstrationOutputSerializer, 409: CONFLICT})
    def post(self, request, campaign_id: int, demonstration_id: int):
        campaign = managed_campaign_or_404(request, campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        demonstration = demonstration_review(
            campaign=campaign, demonstration_id=demonstration_id, reviewer=request.user, verdict=data["verdict"],
            reason=data["reason"], edited_text=data["edited_text"],
        )
        # Read back with everything the list shows (prompt, answers, reviews).
        shown = demonstrations_for_review(campaign=campaign, status=demonstration.status).get(pk=demonstration.pk)
        return Response(DemonstrationOutputSerializer(shown).data)
