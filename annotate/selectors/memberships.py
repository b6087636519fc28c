"""Who is in a campaign: its annotator pool with each member's ratings, and
its admins. A fixed number of queries whatever the number of members or
ratings (pinned in tests/annotate/test_pool.py)."""
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet

from annotate.models import Campaign, Membership, Rating
from annotate.selectors.rounds import day_start

User = get_user_model()


def campaign_members(*, campaign: Campaign, include_removed: bool = True) -> list[dict]:
    """The campaign's pool, each member with their ratings today and in all in
    this campaign: two queries however many members and ratings."""
    memberships = campaign.memberships.select_related("annotator").order_by("annotator__username")
    if not include_removed:
        memberships = memberships.exclude(status=Membership.Status.REMOVED)
    counts = {
        a: (total, today)
        for a, total, today in Rating.objects.filter(comparison__round__campaign=campaign)
        .values("annotator")
        .annotate(total=Count("pk"), today=Count("pk", filter=Q(created_at__gte=day_start())))
        .values_list("annotator", "total", "today")
    }
    rows = []
    for m in memberships:
        total, today = counts.get(m.annotator_id, (0, 0))
        rows.append({"membership": m, "username": m.annotator.username, "ratings_total": total, "ratings_today": today})
    return rows


def campaign_admins(*, campaign: Campaign) -> QuerySet[User]:
    """The users who administer the campaign, by username."""
    return campaign.admins.order_by("username")
