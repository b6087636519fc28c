"""Staff only: start simulated raters on a campaign (annotate/services/simulation.py)."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.schema import CONFLICT
from annotate.models import Campaign
from annotate.selectors.access import user_is_staff
from annotate.services.simulation import simulation_start


class IsStaff(BasePermission):
    message = "Only staff can start simulated raters."

    def has_permission(self, request, view) -> bool:
        return user_is_staff(user=request.user)


class CampaignSimulateApi(APIView):
    """Start a pool of simulated raters on the campaign: accounts
    `sim-c<id>-<label><i>` (annotator role, `simulated` group) join its pool
    and rate through the same API people use, in a Celery task on the default
    queue. Answers 202 at once; ratings show in the progress, quality and
    export APIs as they come. Bad settings are a 400 naming each field, and
    nothing is written; a paused or archived campaign, or a pool label whose
    usernames belong to people, is a 409."""

    permission_classes = [IsStaff]

    class InputSerializer(serializers.Serializer):
        preference = serializers.CharField(
            required=False,
            help_text="shorter | longer | keyword:<word> | reward:<reward model folder or version id> | reference",
        )
        strength = serializers.FloatField(required=False, help_text="logistic scale of the preference; higher = more decisive")
        noise = serializers.FloatField(required=False, help_text="probability of a random pick")
        position_bias = serializers.FloatField(required=False, help_text="probability of picking the left answer regardless")
        seconds_per_rating = serializers.FloatField(required=False, help_text="mean seconds per rating; 0 = no wait")
        raters = serializers.IntegerField(required=False, help_text="simulated annotators in the pool")
        seed = serializers.IntegerField(required=False)
        label = serializers.CharField(required=False, help_text="names the pool: sim-c<campaign>-<label><i>")
        max_ratings = serializers.IntegerField(required=False, allow_null=True, help_text="stop after this many ratings")
        rounds = serializers.IntegerField(
            required=False, allow_null=True, help_text="rounds to rate from the one open now (default 1)"
        )
        wait_timeout_s = serializers.FloatField(required=False, help_text="give up waiting for a round after this long")
        references = serializers.CharField(
            required=False, allow_blank=True,
            help_text="a JSONL file on the server of {prompt, reference} (or {prompt, chosen}): what the raters write on both bad",
        )
        both_bad_margin = serializers.FloatField(
            required=False, allow_null=True, help_text="both bad when the reference beats the better answer by this (log-odds)"
        )
        write = serializers.BooleanField(required=False, help_text="with references: write on both bad (default) or only judge by them")
        review = serializers.BooleanField(required=False, help_text="simulated reviewers accept what the raters write")

    class OutputSerializer(serializers.Serializer):
        campaign = serializers.IntegerField()
        usernames = serializers.ListField(child=serializers.CharField())
        config = serializers.DictField()
        until_round = serializers.IntegerField(allow_null=True, help_text="the last round index the raters rate")
        task_id = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={202: OutputSerializer, 409: CONFLICT})
    def post(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Keys the serializer does not know go on to the service, which names them.
        unknown = {k: v for k, v in request.data.items() if k not in serializer.fields}
        started = simulation_start(campaign=campaign, values={**serializer.validated_data, **unknown})
        return Response(self.OutputSerializer(started).data, status=status.HTTP_202_ACCEPTED)
