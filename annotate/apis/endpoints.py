"""Endpoints (OpenAI-compatible servers answering a campaign's prompts) and
their generation jobs. ML engineers and staff save, change and delete
endpoints and start and cancel jobs; campaign admins may list and read them
for the campaigns they administer. The API key is write-only: sent in
`api_key`, answered as `has_api_key` only (docs/models.md, "Endpoints")."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import (
    AdminsAndEngineersRead,
    IsAdminOrEngineer,
    IsMLEngineer,
    readable_campaign_or_404,
)
from annotate.apis.schema import CONFLICT
from annotate.models import ExternalModel, GenerationJob
from annotate.selectors.endpoints import (
    endpoints_for,
    endpoints_readable_by,
    generation_job_failures,
    generation_jobs_for,
    generation_jobs_readable_by,
)
from annotate.services.endpoints import (
    endpoint_create,
    endpoint_delete,
    endpoint_update,
    generation_job_cancel,
    generation_job_start,
)


class EndpointOutputSerializer(serializers.ModelSerializer):
    has_api_key = serializers.SerializerMethodField()
    answers = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = ExternalModel
        # Never api_key: has_api_key says whether one is set.
        fields = ["id", "campaign", "name", "kind", "base_url", "model_name", "generation", "max_concurrency",
                  "timeout_s", "has_api_key", "answers", "created_by", "created_at"]

    def get_has_api_key(self, endpoint: ExternalModel) -> bool:
        annotated = getattr(endpoint, "has_api_key", None)
        return bool(annotated) if annotated is not None else bool(endpoint.api_key)

    def get_answers(self, endpoint: ExternalModel) -> int:
        annotated = getattr(endpoint, "answer_count", None)
        return annotated if annotated is not None else endpoint.answers.count()


class GenerationJobOutputSerializer(serializers.ModelSerializer):
    endpoint = serializers.IntegerField(source="model_id")
    endpoint_name = serializers.CharField(source="model.name")
    campaign = serializers.IntegerField(source="model.campaign_id")
    subset = serializers.SerializerMethodField(help_text="true when the job asks some of the campaign's prompts only")
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = GenerationJob
        fields = ["id", "endpoint", "endpoint_name", "campaign", "status", "samples", "subset", "prompts_total",
                  "answered", "failed", "requests", "prompt_tokens", "completion_tokens", "error", "created_by",
                  "created_at", "started_at", "finished_at", "heartbeat_at"]

    def get_subset(self, job: GenerationJob) -> bool:
        return job.prompt_ids is not None


class _EndpointFields(serializers.Serializer):
    """What a client may send for an endpoint. api_key: a string sets or
    replaces it; "" or null clears it (PATCH); left out, it stays."""

    name = serializers.CharField(max_length=200)
    base_url = serializers.CharField(max_length=500, help_text="e.g. http://host:8000/v1")
    model_name = serializers.CharField(max_length=200, help_text="the `model` the server is asked for")
    generation = serializers.JSONField(required=False, help_text="max_tokens, temperature, top_p, seed, stop, ...")
    max_concurrency = serializers.IntegerField(required=False, min_value=1, max_value=256)
    timeout_s = serializers.FloatField(required=False, min_value=1, max_value=3600)
    api_key = serializers.CharField(required=False, allow_blank=True, allow_null=True, write_only=True,
                                    trim_whitespace=True, max_length=4096)


class CampaignEndpointsApi(AdminsAndEngineersRead, APIView):
    """The campaign's endpoints (GET: campaign admins and ML engineers); save
    a new one (POST: ML engineers and staff). Its base_url's host must be
    allowed by RATCHET_ENDPOINT_ALLOWED_HOSTS (every address it resolves to;
    link-local and metadata addresses never by default)."""

    write_permission = IsMLEngineer

    class InputSerializer(_EndpointFields):
        pass

    @extend_schema(responses=EndpointOutputSerializer(many=True))
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        return Response(EndpointOutputSerializer(endpoints_for(campaign=campaign), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: EndpointOutputSerializer, 409: CONFLICT})
    def post(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data["api_key"] = data.get("api_key") or ""
        endpoint = endpoint_create(campaign=campaign, user=request.user, **data)
        return Response(EndpointOutputSerializer(endpoint).data, status=status.HTTP_201_CREATED)


def _endpoint_or_404(request, endpoint_id: int) -> ExternalModel:
    return get_object_or_404(endpoints_readable_by(user=request.user), pk=endpoint_id)


class EndpointDetailApi(AdminsAndEngineersRead, APIView):
    """One endpoint (GET); change some of its fields (PATCH; `api_key`: a
    string replaces it, "" or null clears it, left out it stays); delete it
    with its answers and jobs (DELETE; 409 while a job runs, or once its
    answers are in comparisons). PATCH and DELETE: ML engineers and staff."""

    write_permission = IsMLEngineer

    class InputSerializer(_EndpointFields):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for f in self.fields.values():
                f.required = False

    @extend_schema(responses=EndpointOutputSerializer)
    def get(self, request, endpoint_id: int):
        return Response(EndpointOutputSerializer(_endpoint_or_404(request, endpoint_id)).data)

    @extend_schema(request=InputSerializer, responses={200: EndpointOutputSerializer, 409: CONFLICT})
    def patch(self, request, endpoint_id: int):
        endpoint = _endpoint_or_404(request, endpoint_id)
        serializer = self.InputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoint_update(endpoint=endpoint, user=request.user, changes=dict(serializer.validated_data))
        return Response(EndpointOutputSerializer(endpoint).data)

    @extend_schema(request=None, responses={204: None, 409: CONFLICT})
    def delete(self, request, endpoint_id: int):
        endpoint_delete(endpoint=_endpoint_or_404(request, endpoint_id), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class GenerationJobStartApi(APIView):
    """Ask the endpoint for `samples` answers to every prompt of its campaign
    (or those named in `external_ids`) that it has not answered yet, on the
    `endpoints` queue. 409 while another job of the endpoint is under way."""

    permission_classes = [IsMLEngineer]

    class InputSerializer(serializers.Serializer):
        samples = serializers.IntegerField(required=False, default=1, min_value=1, max_value=16)
        external_ids = serializers.ListField(child=serializers.CharField(max_length=200), required=False,
                                             allow_null=True, default=None, max_length=200_000,
                                             help_text="only these prompts (default: all of the campaign's)")

    @extend_schema(request=InputSerializer, responses={202: GenerationJobOutputSerializer, 409: CONFLICT})
    def post(self, request, endpoint_id: int):
        endpoint = _endpoint_or_404(request, endpoint_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = generation_job_start(endpoint=endpoint, user=request.user, samples=data["samples"],
                                   external_ids=data["external_ids"])
        return Response(GenerationJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class GenerationJobListApi(APIView):
    """The campaign's generation jobs, newest first (the latest 200)."""

    permission_classes = [IsAdminOrEngineer]

    @extend_schema(
        parameters=[OpenApiParameter("endpoint", int, description="only this endpoint's jobs")],
        responses=GenerationJobOutputSerializer(many=True),
    )
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        jobs = generation_jobs_for(campaign=campaign)
        if (endpoint := request.query_params.get("endpoint")) is not None:
            if not endpoint.isdigit():
                return Response({"error": "invalid", "detail": "endpoint must be an integer id"}, status=400)
            jobs = jobs.filter(model_id=int(endpoint))
        return Response(GenerationJobOutputSerializer(jobs[:200], many=True).data)


class GenerationJobDetailApi(APIView):
    """One job: progress, token usage, and its error when it failed."""

    permission_classes = [IsAdminOrEngineer]

    @extend_schema(responses=GenerationJobOutputSerializer)
    def get(self, request, job_id: int):
        job = get_object_or_404(generation_jobs_readable_by(user=request.user), pk=job_id)
        return Response(GenerationJobOutputSerializer(job).data)


class GenerationJobFailuresApi(APIView):
    """The prompts the job gave up on, each with its attempts and the
    server's last error, in the order they failed: `limit` (at most 1000)
    from `offset`. A new job asks them again."""

    permission_classes = [IsAdminOrEngineer]

    class OutputSerializer(serializers.Serializer):
        prompt = serializers.IntegerField(source="prompt_id")
        external_id = serializers.CharField(source="prompt.external_id")
        attempts = serializers.IntegerField()
        error = serializers.CharField()
        created_at = serializers.DateTimeField()

    class QuerySerializer(serializers.Serializer):
        offset = serializers.IntegerField(required=False, default=0, min_value=0)
        limit = serializers.IntegerField(required=False, default=200, min_value=1, max_value=1000)

    @extend_schema(parameters=[QuerySerializer], responses=OutputSerializer(many=True))
    def get(self, request, job_id: int):
        job = get_object_or_404(generation_jobs_readable_by(user=request.user), pk=job_id)
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        offset, limit = query.validated_data["offset"], query.validated_data["limit"]
        failures = generation_job_failures(job=job)[offset:offset + limit]
        return Response(self.OutputSerializer(failures, many=True).data)


class GenerationJobCancelApi(APIView):
    """Stop a queued or running job within a second or so; the answers stored
    so far stay. 409 for a finished job."""

    permission_classes = [IsMLEngineer]

    @extend_schema(request=None, responses={200: GenerationJobOutputSerializer, 409: CONFLICT})
    def post(self, request, job_id: int):
        job = get_object_or_404(generation_jobs_readable_by(user=request.user), pk=job_id)
        job = generation_job_cancel(job=job, user=request.user)
        return Response(GenerationJobOutputSerializer(job).data)
