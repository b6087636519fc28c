"""The console's campaigns list: each campaign with its current round's
progress, pool size and ratings today, in a fixed number of queries whatever
the number of campaigns, members or ratings (pinned in
tests/annotate/test_campaign_admin.py)."""
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum

from annotate.models import Campaign, Membership, Rating, Round
from annotate.selectors.rounds import day_start


def campaign_console_rows(*, campaigns: QuerySet[Campaign] | None = None) -> list[dict]:
    """Each campaign with its current round's progress, pool size and ratings
    today, in four queries."""
    latest = Round.objects.filter(campaign=OuterRef("pk")).order_by("-index").values("pk")[:1]
    campaigns = list(
        (campaigns if campaigns is not None else Campaign.objects.all())
        .annotate(
            current_round_id=Subquery(latest),
            n_annotators=Count("memberships", filter=Q(memberships__status=Membership.Status.ACTIVE), distinct=True),
            n_paused=Count("memberships", filter=Q(memberships__status=Membership.Status.PAUSED), distinct=True),
        )
        .order_by("-created_at", "-pk")
    )
    round_ids = [c.current_round_id for c in campaigns if c.current_round_id]
    rounds = {
        r["pk"]: r
        for r in Round.objects.filter(pk__in=round_ids)
        .annotate(
            # Regular comparisons only, as round_progress counts them: gold
            # pairs never hold a round up.
            n_comparisons=Count("comparisons", filter=Q(comparisons__gold_choice="")),
            n_ratings=Sum("comparisons__rating_count", filter=Q(comparisons__gold_choice="")),
        )
        .values("pk", "index", "status", "n_comparisons", "n_ratings")
    }
    today = dict(
        Rating.objects.filter(created_at__gte=day_start(), comparison__round__campaign__in=[c.pk for c in campaigns])
        .values("comparison__round__campaign")
        .annotate(n=Count("pk"))
        .values_list("comparison__round__campaign", "n")
    )
    rows = []
    for c in campaigns:
        r = rounds.get(c.current_round_id)
        progress = None
        if r is not None:
            target = r["n_comparisons"] * c.overlap
            ratings = r["n_ratings"] or 0
            progress = {
                "round": r["index"], "status": r["status"], "comparisons": r["n_comparisons"],
                "ratings": ratings, "target_ratings": target, "fraction": ratings / target if target else 0.0,
            }
        rows.append(
            {"campaign": c, "progress": progress, "annotators": c.n_annotators, "paused": c.n_paused,
             "ratings_today": today.get(c.pk, 0)}
        )
    return rows
