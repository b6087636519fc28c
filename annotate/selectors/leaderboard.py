"""The models as people see them: Bradley-Terry scores of the campaign's
policy versions and each round's win rate of its candidate.

The path from the API to the maths: annotate/apis/leaderboard.py (the API)
-> this module (tallies the ratings in the database) -> annotate/stats.py
(Bradley-Terry, the bootstrap, Wilson intervals; Django-free)."""
from collections import Counter, defaultdict

from django.db.models import Count

from annotate import stats
from annotate.models import Campaign, PolicyVersion, Rating


def campaign_leaderboard(*, campaign: Campaign, resamples: int = 200, seed: int = 0) -> dict:
    """Bradley-Terry scores of the campaign's policy versions from the ratings
    (A/B a win, tie half a win each, both_bad ignored; a round comparing a
    version with itself says nothing), bootstrap 95% intervals, and each
    round's win rate of its candidate over its baseline. Gold pairs and any
    answer from outside the campaign's policies (no policy version) are left out.

    The database tallies the ratings (a few dozen rows: choice x pair of
    versions x round x side), and the bootstrap resamples those tallies,
    so no rating crosses into Python one by one."""
    rows = list(
        Rating.objects.filter(
            comparison__round__campaign=campaign,
            choice__in=[Rating.Choice.A, Rating.Choice.B, Rating.Choice.TIE],
            comparison__gold_choice="",
            comparison__response_a__policy_version__isnull=False,
            comparison__response_b__policy_version__isnull=False,
        )
        .values_list(
            "choice", "comparison__response_a__policy_version_id", "comparison__response_b__policy_version_id",
            "comparison__round_id", "comparison__candidate_is_a",
        )
        .annotate(ratings=Count("pk"))
        .order_by("choice", "comparison__response_a__policy_version_id", "comparison__response_b__policy_version_id",
                  "comparison__round_id", "comparison__candidate_is_a")
    )
    versions = list(PolicyVersion.objects.filter(campaign=campaign).order_by("version"))
    index = {v.pk: i for i, v in enumerate(versions)}
    score_of_a = {Rating.Choice.A: 1.0, Rating.Choice.B: 0.0, Rating.Choice.TIE: 0.5}
    tallied = [((index[a], index[b], score_of_a[choice]), count) for choice, a, b, _, _, count in rows if a != b]
    outcomes, counts = [o for o, _ in tallied], [count for _, count in tallied]
    games = Counter()
    for (i, j, _), count in tallied:
        games[i] += count
        games[j] += count
    theta, lower, upper = stats.bradley_terry_bootstrap(
        outcomes, len(versions), counts=counts, resamples=resamples, seed=seed
    )

    def elo(x: float) -> float:
        return stats.ELO_BASE + stats.ELO_SCALE * float(x)

    board = [
        {
            "version": v.version,
            "policy_version_id": v.pk,
            "n": games[i],
            "score": elo(theta[i]) if games[i] else None,
            "lower": elo(lower[i]) if games[i] else None,
            "upper": elo(upper[i]) if games[i] else None,
        }
        for i, v in enumerate(versions)
    ]
    board.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0), r["version"]))

    tally = defaultdict(lambda: [0, 0, 0])  # round -> [candidate wins, ties, baseline wins]
    for choice, _, _, round_id, candidate_is_a, count in rows:
        if choice == Rating.Choice.TIE:
            tally[round_id][1] += count
        else:
            tally[round_id][0 if (choice == Rating.Choice.A) == candidate_is_a else 2] += count
    rounds = []
    for r in campaign.rounds.select_related("candidate", "baseline").order_by("index"):
        wins, ties, losses = tally[r.pk]
        n = wins + ties + losses
        low, high = stats.wilson_interval(wins + ties / 2, n)
        rounds.append(
            {
                "round": r.index,
                "candidate_version": r.candidate.version,
                "baseline_version": r.baseline.version,
                "same_policy": r.candidate_id == r.baseline_id,
                "n": n,
                "wins": wins,
                "ties": ties,
                "losses": losses,
                "win_rate": (wins + ties / 2) / n if n else None,
                "lower": low,
                "upper": high,
            }
        )
    return {
        "campaign": campaign.pk,
        "method": "bradley_terry",
        "scale": "Elo-like: 1000 + 400*log10(strength), mean version at 1000; a 400-point gap is 10:1 odds",
        "interval": f"95% percentile bootstrap, {resamples} resamples of the ratings, seed {seed}",
        "n_ratings": sum(counts),
        "versions": board,
        "rounds": rounds,
    }
