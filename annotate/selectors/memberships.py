"""Who is in a campaign: its annotator pool with each member's ratings, and
its admins. A fixed number of queries whatever the number of members or
ratings (pinned in tests/annotate/test_pool.py). Counting a campaign's
ratings by annotator groups every one of them (a quarter of a second at
100,000), so the counts are memoized (selectors/memo.py) per state of the
ratings and day."""
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet

from annotate.models import Campaign, Membership, Rating
from annotate.selectors.memo import memoized, ratings_state
from annotate.selectors.rounds import day_start

User = get_user_model()


def pool_memberships(*, campaign: Campaign, include_removed: bool = True) -> QuerySet[Membership]:
    """The campaign's pool, by username (the console pages it)."""
    memberships = campaign.memberships.select_related("annotator").order_by("annotator__username")
    if not include_removed:
        memberships = memberships.exclude(status=Membership.Status.REMOVED)
    return memberships


def _counted(campaign: Campaign, annotator_ids: list[int] | None, start) -> dict[int, tuple[int, int]]:
    ratings = Rating.objects.filter(comparison__round__campaign=campaign)
    if annotator_ids is not None:
        ratings = ratings.filter(annotator_id__in=annotator_ids)
    return {
        a: (total, today)
        for a, total, today in ratings.values("annotator")
        .annotate(total=Count("pk"), today=Count("pk", filter=Q(created_at__gte=start)))
        .values_list("annotator", "total", "today")
    }


def rating_counts(*, campaign: Campaign) -> dict[int, tuple[int, int]]:
    """{annotator_id: (ratings in this campaign, of them today)} for everyone
    who rated in it. Memoized: the key is complete, since the counts read the
    campaign's ratings (ratings_state moves with each one) and the start of
    today."""
    start = day_start()
    return memoized("rating_counts", (ratings_state(campaign=campaign), start), lambda: _counted(campaign, None, start))


def campaign_members(*, campaign: Campaign, include_removed: bool = True, memberships=None) -> list[dict]:
    """The campaign's pool, each member with their ratings today and in all in
    this campaign, in a fixed number of queries however many members and
    ratings. Given `memberships` (a page of the pool, as the console shows
    it), those members alone, their ratings counted afresh: only theirs are
    read (the index on the rating's annotator), one query fewer than the
    memoized counts of the whole pool take."""
    if memberships is None:
        memberships = list(pool_memberships(campaign=campaign, include_removed=include_removed))
        counts = rating_counts(campaign=campaign)
    else:
        memberships = list(memberships)
        counts = _counted(campaign, [m.annotator_id for m in memberships], day_start())
    rows = []
    for m in memberships:
        total, today = counts.get(m.annotator_id, (0, 0))
        rows.append({"membership": m, "username": m.annotator.username, "ratings_total": total, "ratings_today": today})
    return rows


def campaign_admins(*, campaign: Campaign) -> QuerySet[User]:
    """The users who administer the campaign, by username."""
    return campaign.admins.order_by("username")
