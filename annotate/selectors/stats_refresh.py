"""The refresh behind a stale statistic (selectors/memo.py memoized_latest):
stats_refresh_task (annotate/tasks.py) calls this, which computes the
statistic for the campaign's current ratings by calling its selector as a
request would but without `stale_ok`, so the result is kept under its exact
key and as the campaign's latest. Here rather than in memo.py: the selectors
it calls import memo.py."""
from annotate.models import Campaign, Round
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.selectors.memo import refresh_done
from annotate.selectors.quality import campaign_quality


def stats_refresh(*, name: str, campaign_id: int, params: dict) -> None:
    """Compute `name` ("leaderboard" or "quality") with `params` (as
    memoized_latest was given them) for the campaign's current state. A
    campaign deleted since is left alone."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        return
    try:
        if name == "leaderboard":
            campaign_leaderboard(campaign=campaign, **params)
        elif name == "quality":
            round_ = Round.objects.filter(pk=params["round"], campaign=campaign).first() if params["round"] else None
            if params["round"] is None or round_ is not None:
                campaign_quality(campaign=campaign, round_=round_)
        else:
            raise ValueError(f"no statistic named {name!r}")
    finally:
        refresh_done(name, campaign=campaign, params=params)
