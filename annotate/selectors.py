"""Selectors: every read that is more than a one-line lookup."""
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet, Sum

from annotate.models import Campaign, Comparison, Rating, Role, Round, TrainingRun

User = get_user_model()


def user_roles(*, user: User) -> set[str]:
    if not user.is_authenticated:
        return set()
    roles = set(user.groups.values_list("name", flat=True)) & set(Role.values)
    if user.is_staff:
        roles |= {Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER}
    return roles


def campaigns_visible_to(*, user: User) -> QuerySet[Campaign]:
    """Admins and engineers see every campaign; annotators only the campaigns
    whose pool they are in (invariant 7)."""
    if user.is_staff or user_roles(user=user) & {Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER}:
        return Campaign.objects.all()
    return Campaign.objects.filter(annotators=user)


def campaign_current_round(*, campaign: Campaign) -> Round | None:
    return campaign.rounds.order_by("-index").first()


def round_progress(*, round_: Round) -> dict:
    k = round_.campaign.overlap
    agg = round_.comparisons.aggregate(
        comparisons=Count("pk"),
        ratings=Sum("rating_count"),
        complete=Count("pk", filter=Q(rating_count__gte=k)),
    )
    total = agg["comparisons"] or 0
    ratings = agg["ratings"] or 0
    return {
        "round": round_.index,
        "status": round_.status,
        "comparisons": total,
        "complete_comparisons": agg["complete"] or 0,
        "ratings": ratings,
        "target_ratings": total * k,
        "fraction": (ratings / (total * k)) if total else 0.0,
        "candidate_version": round_.candidate.version,
        "baseline_version": round_.baseline.version,
    }


def round_is_complete(*, round_: Round) -> bool:
    k = round_.campaign.overlap
    comparisons = round_.comparisons
    return comparisons.exists() and not comparisons.filter(rating_count__lt=k).exists()


def annotator_progress(*, annotator: User, campaign: Campaign) -> dict:
    from django.utils import timezone

    mine = Rating.objects.filter(annotator=annotator)
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "mine_today": mine.filter(created_at__gte=today).count(),
        "mine_in_campaign": mine.filter(comparison__round__campaign=campaign).count(),
    }


def preference_rows(*, campaign: Campaign) -> list[dict]:
    """Every rating of the campaign that prefers a side, as reward-model pairs.
    Ties and both-bad say nothing about which answer is better; they are
    counted in the snapshot's metadata but not trained on."""
    ratings = (
        Rating.objects.filter(comparison__round__campaign=campaign, choice__in=[Rating.Choice.A, Rating.Choice.B])
        .select_related("comparison__prompt", "comparison__response_a", "comparison__response_b")
        .order_by("pk")
    )
    rows = []
    for r in ratings.iterator(chunk_size=2000):
        c = r.comparison
        chosen, rejected = (c.response_a, c.response_b) if r.choice == Rating.Choice.A else (c.response_b, c.response_a)
        rows.append(
            {
                "prompt": c.prompt.content,
                "chosen": chosen.text,
                "rejected": rejected.text,
                # Strength 1..3 as the Bradley-Terry margin, scaled to 0..1.
                "margin": (r.strength - 1) / 2.0,
                "prompt_id": str(c.prompt_id),
                "rating_id": r.pk,
                "comparison_id": c.pk,
                "annotator_id": r.annotator_id,
            }
        )
    return rows


def training_runs_for(*, campaign: Campaign) -> QuerySet[TrainingRun]:
    return campaign.training_runs.order_by("-created_at")


def comparisons_of_round(*, round_: Round) -> QuerySet[Comparison]:
    return round_.comparisons.select_related("prompt", "response_a", "response_b")
