"""Prompts: what the console's prompts page lists (services/prompts.py
imports them)."""
from django.db.models import QuerySet

from annotate.models import Campaign, Prompt


def campaign_prompts(*, campaign: Campaign) -> QuerySet[Prompt]:
    """The campaign's own prompts in import order, the gold pairs' prompts
    left out, with only the columns the prompts page shows."""
    return campaign.prompts.filter(gold_pairs__isnull=True).order_by("pk").only(
        "pk", "campaign_id", "external_id", "text", "turns", "metadata", "created_at"
    )
