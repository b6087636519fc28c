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


def _counted(campaign: Campaign, start) -> dict[int, tuple[int, int]]:
    return {
        a: (total, today)
        for a, total, today in Rating.objects.filter(comparison__round__campaign=campaign).values("annotator")
        .annotate(total=Count("pk"), today=Count("pk", filter=Q(created_at__gte=start)))
        .values_list("annotator", "total", "today")
    }


def rating_counts(*, campaign: Campaign) -> dict[int, tuple[int, int]]:
    """{annotator_id: (ratings in this campaign, of them today)} for everyone
    who rated in it. Memoized: the key is complete, since the counts read the
    campaign's ratings (ratings_state moves with each one) and the start of
    today."""
    start = day_start()
    return memoized("rating_counts", (ratings_state(campaign=campaign), start), lambda: _counted(campaign, start))


def campaign_members(*, campaign: Campaign, include_removed: bool = True, memberships=None) -> list[dict]:
    """The campaign's pool (or `memberships`, a page of it, as the console
    shows it), each member with their ratings today and in all in this
    campaign, in a fixed number of queries however many members and ratings.

    The counts are the memoized ones of the whole pool even for a page:
    counting a page's members afresh (annotator_id IN the page) runs, once
    psycopg prepares the statement (its 5th run on a connection,
    DATABASE_SERVER_SIDE_BINDING), on PostgreSQL's generic plan, which walks
    every comparison of the campaign: 150-250 ms a request at 100,000
    ratings where the memo's key costs 10 ms."""
    if memberships is None:
        memberships = pool_memberships(campaign=campaign, include_removed=include_removed)
    counts = rating_counts(campaign=campaign)
    rows = []
    for m in memberships:
        total, today = counts.get(m.annotator_id, (0, 0))
        rows.append({"membership": m, "username": m.annotator.username, "ratings_total": total, "ratings_today": today})
    return rows


def campaign_admins(*, campaign: Campaign) -> QuerySet[User]:
    """The users who administer the campaign, by username."""
    return campaign.admins.order_by("username")
