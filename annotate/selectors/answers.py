"""External models: what the models API and the console's answers page list
(annotate/services/answers.py imports their answers)."""
from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet

from annotate.models import Campaign, ExternalModel


def campaign_external_models(*, campaign: Campaign) -> QuerySet[ExternalModel]:
    """The campaign's external models by name, each with `answer_count`,
    `truncated_count` (answers cut at the token limit) and `has_api_key`. The key itself is never read out of the database here: a
    page or an API that lists models cannot show it by mistake."""
    return (
        campaign.external_models.order_by("name")
        .annotate(
            answer_count=Count("answers"),
            # Stopped at max_tokens (annotate/services/generation.py, or an import's own metadata).
            truncated_count=Count("answers", filter=Q(answers__metadata__truncated=True)),
            has_api_key=ExpressionWrapper(~Q(api_key=""), output_field=BooleanField()),
        )
        .only("pk", "campaign_id", "name", "kind", "created_at")
    )
