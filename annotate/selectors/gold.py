"""The gold pool: the campaign's pairs with a known answer, and how they
have been answered."""
from django.db.models import Count, F, Q, QuerySet

from annotate.models import Campaign, GoldPair, Rating


def gold_pool(*, campaign: Campaign) -> QuerySet:
    """The campaign's gold pairs (with prompt and both answers) and, per pair,
    how many rounds used it (`used`), how many gold answers it got
    (`answers`) and how many of those were right (`correct`)."""
    ratings = "prompt__comparisons__ratings"
    return (
        GoldPair.objects.filter(campaign=campaign)
        .select_related("prompt", "chosen", "rejected")
        .annotate(
            used=Count("prompt__comparisons", filter=~Q(prompt__comparisons__gold_choice=""), distinct=True),
            answers=Count(ratings, filter=~Q(prompt__comparisons__gold_choice="")),
            correct=Count(ratings, filter=Q(**{f"{ratings}__choice": F("prompt__comparisons__gold_choice")})),
        )
        .order_by("pk")
    )


def gold_pool_totals(*, campaign: Campaign) -> dict:
    """{count: pairs in the pool, answers: gold answers in the campaign,
    correct: those that were right, accuracy}."""
    agg = Rating.objects.filter(comparison__round__campaign=campaign).exclude(comparison__gold_choice="").aggregate(
        answers=Count("pk"), correct=Count("pk", filter=Q(choice=F("comparison__gold_choice")))
    )
    return {
        "count": GoldPair.objects.filter(campaign=campaign).count(),
        "answers": agg["answers"],
        "correct": agg["correct"],
        "accuracy": agg["correct"] / agg["answers"] if agg["answers"] else None,
    }
