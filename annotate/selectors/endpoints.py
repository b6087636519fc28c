"""Reads about endpoints and their generation jobs, for the API and the
console. Nothing here returns an endpoint's API key: rows carry
`has_api_key` instead (annotate/endpoints/__init__.py)."""
from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet

from annotate.models import Campaign, ExternalModel, GenerationFailure, GenerationJob
from annotate.selectors.access import campaigns_readable_by


def endpoints_for(*, campaign: Campaign) -> QuerySet[ExternalModel]:
    """The campaign's endpoints by name, each with `has_api_key` and
    `answer_count` annotated; `api_key` itself is deferred, never loaded."""
    return (
        campaign.external_models.filter(kind=ExternalModel.Kind.ENDPOINT)
        .defer("api_key")
        .annotate(
            has_api_key=ExpressionWrapper(~Q(api_key=""), output_field=BooleanField()),
            answer_count=Count("answers", distinct=True),
        )
        .select_related("created_by")
        .order_by("name")
    )


def endpoints_readable_by(*, user) -> QuerySet[ExternalModel]:
    """Endpoints of the campaigns this user may read (as endpoints_for)."""
    return (
        ExternalModel.objects.filter(kind=ExternalModel.Kind.ENDPOINT, campaign__in=campaigns_readable_by(user=user))
        .defer("api_key")
        .annotate(
            has_api_key=ExpressionWrapper(~Q(api_key=""), output_field=BooleanField()),
            answer_count=Count("answers", distinct=True),
        )
        .select_related("created_by")
    )


def generation_jobs_readable_by(*, user) -> QuerySet[GenerationJob]:
    return (
        GenerationJob.objects.filter(model__campaign__in=campaigns_readable_by(user=user))
        .select_related("model", "created_by")
        .defer("model__api_key")
    )


def generation_jobs_for(*, campaign: Campaign, endpoint: ExternalModel | None = None) -> QuerySet[GenerationJob]:
    """The campaign's jobs (or one endpoint's), newest first."""
    jobs = GenerationJob.objects.filter(model__campaign=campaign)
    if endpoint is not None:
        jobs = jobs.filter(model=endpoint)
    return jobs.select_related("model", "created_by").defer("model__api_key").order_by("-created_at", "-pk")


def generation_job_failures(*, job: GenerationJob) -> QuerySet[GenerationFailure]:
    """The prompts the job gave up on, with the server's last error, in the order they failed."""
    return job.failures.select_related("prompt").only(
        "pk", "job_id", "attempts", "error", "created_at", "prompt__id", "prompt__external_id"
    ).order_by("pk")
