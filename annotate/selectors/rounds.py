"""Rounds: the campaign's current one, one by its index, their progress
(regular comparisons only: gold pairs never hold a round up), and where
"today" starts for daily counts and limits."""
from django.db.models import Count, Q, Sum
from django.utils import timezone

from annotate.errors import ValidationFailed
from annotate.models import Campaign, Round


def day_start():
    """Midnight today (settings.TIME_ZONE): where "ratings today" and daily limits start."""
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def campaign_current_round(*, campaign: Campaign) -> Round | None:
    return campaign.rounds.order_by("-index").first()


def round_progress(*, round_: Round) -> dict:
    """Counts over the round's regular comparisons: gold pairs mixed in are
    not what the round is for, and never hold it up."""
    k = round_.campaign.overlap
    agg = round_.comparisons.filter(gold_choice="").aggregate(
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
        # Null in an evaluation round, which pairs several models (no candidate).
        "candidate_version": round_.candidate.version if round_.candidate_id else None,
        "baseline_version": round_.baseline.version if round_.baseline_id else None,
    }


def round_is_complete(*, round_: Round) -> bool:
    """Every regular comparison has k ratings (gold pairs don't count)."""
    k = round_.campaign.overlap
    comparisons = round_.comparisons.filter(gold_choice="")
    return comparisons.exists() and not comparisons.filter(rating_count__lt=k).exists()


def campaign_round(*, campaign: Campaign, index: int | str | None) -> Round | None:
    """The campaign's round `index` (None: no round filter); a 400 that says
    which rounds exist when it has no such round."""
    if index is None or index == "":
        return None
    if not str(index).isdigit():
        raise ValidationFailed(f"round must be a round index (0, 1, ...), not {index!r}.")
    round_ = campaign.rounds.filter(index=int(index)).first()
    if round_ is None:
        indexes = campaign_round_indexes(campaign=campaign)
        raise ValidationFailed(
            f"Campaign {campaign.pk} has no round {index}; its rounds are {indexes or 'none yet'}."
        )
    return round_


def campaign_round_indexes(*, campaign: Campaign) -> list[int]:
    """The indexes of the campaign's rounds, in order (a page's round picker)."""
    return list(campaign.rounds.order_by("index").values_list("index", flat=True))


def campaign_round_summary(*, campaign: Campaign) -> str:
    """One line on where the campaign's loop stands, for a terminal (`make
    run` says it at every start): "round 3 is open: 5 of 8 ratings", "round
    2 is training (stage policy)", "round 1 failed to train", "no round yet"."""
    round_ = campaign_current_round(campaign=campaign)
    if round_ is None:
        return "no round yet" + (" (round 0 is being answered)" if campaign.status == Campaign.Status.ACTIVE else "")
    if round_.status == Round.Status.COLLECTING:
        p = round_progress(round_=round_)
        return f"round {round_.index} is open: {p['ratings']} of {p['target_ratings']} ratings"
    if round_.status == Round.Status.TRAINING:
        run = round_.training_runs.exclude(status="cancelled").order_by("-pk").only("stage").first()
        return f"round {round_.index} is training" + (f" (stage {run.stage})" if run and run.stage else "")
    if round_.status == Round.Status.FAILED:
        return f"round {round_.index} failed to train (the console's runs page says why)"
    return f"round {round_.index} is {round_.status}"
