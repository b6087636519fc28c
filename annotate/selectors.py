"""Selectors: every read that is more than a one-line lookup."""
from collections import Counter, defaultdict
from collections.abc import Iterator
from statistics import median

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet, Sum

from annotate import quality
from annotate.errors import ValidationFailed
from annotate.models import Campaign, Comparison, Membership, PolicyVersion, Rating, Role, Round, TrainingRun

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
    # One filter() call: both conditions on the same membership row. A paused
    # annotator still sees the campaign (and is told why there is no work);
    # a removed one does not.
    return Campaign.objects.filter(
        memberships__annotator=user, memberships__status__in=[Membership.Status.ACTIVE, Membership.Status.PAUSED]
    )


def day_start():
    """Midnight today (settings.TIME_ZONE): where "ratings today" and daily limits start."""
    from django.utils import timezone

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
        "candidate_version": round_.candidate.version,
        "baseline_version": round_.baseline.version,
    }


def round_is_complete(*, round_: Round) -> bool:
    """Every regular comparison has k ratings (gold pairs don't count)."""
    k = round_.campaign.overlap
    comparisons = round_.comparisons.filter(gold_choice="")
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
    """Every rating of the campaign that prefers a side, as reward-model pairs
    (see preference_rows_iter), in one list for the snapshot stage."""
    return list(preference_rows_iter(campaign=campaign))


def preference_rows_iter(*, campaign: Campaign, round_: Round | None = None) -> Iterator[dict]:
    """Every rating that prefers a side, as reward-model pairs in TRL's schema,
    one at a time, read from the database in chunks. Ties and both-bad say
    nothing about which answer is better; they are counted in the snapshot's
    metadata but not trained on. `weight` is the annotator's reliability
    weight over the whole campaign (annotator_weights), whatever `round_`."""
    weights = annotator_weights(campaign=campaign)
    ratings = Rating.objects.filter(
        comparison__round__campaign=campaign, choice__in=[Rating.Choice.A, Rating.Choice.B]
    )
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    ratings = ratings.order_by("pk").values_list(
        "pk", "choice", "strength", "annotator_id", "comparison_id", "comparison__prompt_id",
        "comparison__prompt__text", "comparison__prompt__turns",
        "comparison__response_a__text", "comparison__response_b__text",
    )
    # Small chunks: each row carries a prompt and two answers.
    for rating_id, choice, strength, annotator_id, comparison_id, prompt_id, text, turns, a, b in ratings.iterator(
        chunk_size=500
    ):
        chosen, rejected = (a, b) if choice == Rating.Choice.A else (b, a)
        yield {
            "prompt": turns if turns else text,  # as Prompt.content
            "chosen": chosen,
            "rejected": rejected,
            # Strength 1..3 as the Bradley-Terry margin, scaled to 0..1.
            "margin": (strength - 1) / 2.0,
            "weight": weights.get(annotator_id, 1.0),
            "prompt_id": str(prompt_id),
            "rating_id": rating_id,
            "comparison_id": comparison_id,
            "annotator_id": annotator_id,
        }


def training_runs_for(*, campaign: Campaign) -> QuerySet[TrainingRun]:
    return campaign.training_runs.order_by("-created_at")


def comparisons_of_round(*, round_: Round) -> QuerySet[Comparison]:
    return round_.comparisons.select_related("prompt", "response_a", "response_b")


# --- data quality, leaderboard, exports ----------------------------------------
# The numbers are computed by annotate/quality.py; these gather their rows.

# An annotator needs this many ratings on comparisons someone else also rated
# (or on gold pairs) before Dawid-Skene's estimate of them is worth trusting;
# below it their weight is 1.0.
RELIABILITY_MIN_RATINGS = 20


def campaign_round(*, campaign: Campaign, index: int | str | None) -> Round | None:
    """The campaign's round `index` (None: no round filter); a 400 that says
    which rounds exist when it has no such round."""
    if index is None or index == "":
        return None
    if not str(index).isdigit():
        raise ValidationFailed(f"round must be a round index (0, 1, ...), not {index!r}.")
    round_ = campaign.rounds.filter(index=int(index)).first()
    if round_ is None:
        indexes = list(campaign.rounds.order_by("index").values_list("index", flat=True))
        raise ValidationFailed(
            f"Campaign {campaign.pk} has no round {index}; its rounds are {indexes or 'none yet'}."
        )
    return round_


def _rating_facts(*, campaign: Campaign, round_: Round | None = None) -> list[tuple]:
    """(comparison_id, annotator_id, choice, strength, time_on_task_ms, gold_choice)
    of every rating: small tuples, no text."""
    ratings = Rating.objects.filter(comparison__round__campaign=campaign)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    return list(
        ratings.order_by("pk").values_list(
            "comparison_id", "annotator_id", "choice", "strength", "time_on_task_ms", "comparison__gold_choice"
        )
    )


def _reliability(facts: list[tuple]) -> tuple[quality.DawidSkeneResult, dict, dict]:
    """Dawid-Skene over the comparisons that two or more annotators rated, or
    that have a gold answer (a comparison rated once says nothing about its
    rater). Returns (result, informativeness of annotators with enough
    ratings, weight of every annotator in `facts`)."""
    raters = Counter(c for c, *_ in facts)
    gold = {c: g for c, _, _, _, _, g in facts if g}
    labels = [(c, a, choice) for c, a, choice, *_ in facts if raters[c] >= 2 or c in gold]
    result = quality.dawid_skene(labels, gold=gold)
    labelled = Counter(a for _, a, _ in labels)
    informativeness = {
        a: float(result.informativeness[i])
        for i, a in enumerate(result.workers)
        if labelled[a] >= RELIABILITY_MIN_RATINGS
    }
    trained_on = Counter(a for _, a, choice, *_ in facts if choice in (Rating.Choice.A, Rating.Choice.B))
    counts = {a: trained_on.get(a, 0) for _, a, *_ in facts}
    return result, informativeness, quality.reliability_weights(informativeness, counts)


def annotator_weights(*, campaign: Campaign) -> dict[int, float]:
    """{annotator_id: reward-model sample weight}: Dawid-Skene reliability over
    every rating of the campaign, mean 1 over the A/B ratings; 1.0 for an
    annotator with too few overlapping ratings to judge."""
    return _reliability(_rating_facts(campaign=campaign))[2]


def campaign_quality(*, campaign: Campaign, round_: Round | None = None) -> dict:
    """Agreement, consensus and a per-annotator table over the campaign's
    ratings (or one round's). See README, "Quality, leaderboard and exports"."""
    facts = _rating_facts(campaign=campaign, round_=round_)
    by_comparison = defaultdict(list)
    for c, _, choice, strength, *_ in facts:
        by_comparison[c].append((choice, strength))
    ordinal_units = [
        [v for choice, strength in unit if (v := quality.ordinal_value(choice, strength)) is not None]
        for unit in by_comparison.values()
    ]
    agreement, pairs = quality.percent_agreement([[choice for choice, _ in u] for u in by_comparison.values()])
    result, informativeness, weights = _reliability(facts)
    consensus = result.consensus()
    accuracy = {a: float(result.accuracy[i]) for i, a in enumerate(result.workers)}

    per_annotator = defaultdict(list)
    for c, a, choice, strength, ms, gold in facts:
        per_annotator[a].append((c, choice, ms, gold))
    usernames = dict(User.objects.filter(pk__in=per_annotator).values_list("pk", "username"))
    table = []
    for a, rows in sorted(per_annotator.items()):
        choices = Counter(choice for _, choice, _, _ in rows)
        sided = choices[Rating.Choice.A] + choices[Rating.Choice.B]
        golden = [choice == gold for _, choice, _, gold in rows if gold]
        in_consensus = [choice == consensus[c][0] for c, choice, _, _ in rows if c in consensus]
        times = [ms for _, _, ms, _ in rows if ms is not None]
        table.append(
            {
                "annotator_id": a,
                "username": usernames.get(a, ""),
                "n": len(rows),
                "gold_n": len(golden),
                "gold_accuracy": _share(golden),
                "consensus_n": len(in_consensus),
                "consensus_agreement": _share(in_consensus),
                "left_pick_rate": choices[Rating.Choice.A] / sided if sided else None,
                "tie_rate": choices[Rating.Choice.TIE] / len(rows),
                "both_bad_rate": choices[Rating.Choice.BOTH_BAD] / len(rows),
                "median_seconds": median(times) / 1000.0 if times else None,
                "reliability": informativeness.get(a),
                "estimated_accuracy": accuracy.get(a) if a in informativeness else None,
                "weight": weights.get(a, 1.0),
            }
        )
    return {
        "campaign": campaign.pk,
        "round": round_.index if round_ is not None else None,
        "n_ratings": len(facts),
        "n_comparisons": len(by_comparison),
        "n_annotators": len(per_annotator),
        "alpha": quality.krippendorff_alpha_ordinal(ordinal_units),
        "alpha_units": sum(len(u) >= 2 for u in ordinal_units),
        "alpha_both_bad_missing": sum(choice == Rating.Choice.BOTH_BAD for _, _, choice, *_ in facts),
        "alpha_note": (
            "Krippendorff's alpha, ordinal: A much/clearly/slightly better = -3/-2/-1, tie = 0, "
            "B slightly/clearly/much better = +1/+2/+3; both_bad is off that scale and counted as missing."
        ),
        "percent_agreement": agreement,
        "agreement_pairs": pairs,
        "consensus_method": (
            "Dawid-Skene EM over A/B/tie/both_bad on comparisons rated by two or more annotators "
            "or with a gold answer (gold clamped)"
        ),
        "consensus_labels": dict(Counter(label for label, _ in consensus.values())),
        "annotators": table,
    }


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def campaign_leaderboard(*, campaign: Campaign, resamples: int = 200, seed: int = 0) -> dict:
    """Bradley-Terry scores of the campaign's policy versions from the ratings
    (A/B a win, tie half a win each, both_bad ignored; a round comparing a
    version with itself says nothing), bootstrap 95% intervals, and each
    round's win rate of its candidate over its baseline. Gold pairs and any
    answer from outside the campaign's policies (no policy version) are left out."""
    rows = list(
        Rating.objects.filter(
            comparison__round__campaign=campaign,
            choice__in=[Rating.Choice.A, Rating.Choice.B, Rating.Choice.TIE],
            comparison__gold_choice="",
            comparison__response_a__policy_version__isnull=False,
            comparison__response_b__policy_version__isnull=False,
        ).values_list(
            "choice", "comparison__response_a__policy_version_id", "comparison__response_b__policy_version_id",
            "comparison__round_id", "comparison__candidate_is_a",
        )
    )
    versions = list(PolicyVersion.objects.filter(campaign=campaign).order_by("version"))
    index = {v.pk: i for i, v in enumerate(versions)}
    score_of_a = {Rating.Choice.A: 1.0, Rating.Choice.B: 0.0, Rating.Choice.TIE: 0.5}
    outcomes = [(index[a], index[b], score_of_a[choice]) for choice, a, b, _, _ in rows if a != b]
    games = Counter()
    for i, j, _ in outcomes:
        games[i] += 1
        games[j] += 1
    theta, lower, upper = quality.bradley_terry_bootstrap(outcomes, len(versions), resamples=resamples, seed=seed)

    def elo(x: float) -> float:
        return quality.ELO_BASE + quality.ELO_SCALE * float(x)

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
    for choice, _, _, round_id, candidate_is_a in rows:
        if choice == Rating.Choice.TIE:
            tally[round_id][1] += 1
        else:
            tally[round_id][0 if (choice == Rating.Choice.A) == candidate_is_a else 2] += 1
    rounds = []
    for r in campaign.rounds.select_related("candidate", "baseline").order_by("index"):
        wins, ties, losses = tally[r.pk]
        n = wins + ties + losses
        low, high = quality.wilson_interval(wins + ties / 2, n)
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
        "n_ratings": len(outcomes),
        "versions": board,
        "rounds": rounds,
    }


# Column of the ratings export -> the lookup that reads it.
RATING_EXPORT_COLUMNS = {
    "rating_id": "pk",
    "campaign_id": "comparison__round__campaign_id",
    "round": "comparison__round__index",
    "comparison_id": "comparison_id",
    "prompt_id": "comparison__prompt_id",
    "prompt_external_id": "comparison__prompt__external_id",
    "annotator_id": "annotator_id",
    "annotator": "annotator__username",
    "choice": "choice",
    "strength": "strength",
    "reason": "reason",
    "time_on_task_ms": "time_on_task_ms",
    "created_at": "created_at",
    "version_a": "comparison__response_a__policy_version__version",
    "version_b": "comparison__response_b__policy_version__version",
    "candidate_is_a": "comparison__candidate_is_a",
    "candidate_version": "comparison__round__candidate__version",
    "baseline_version": "comparison__round__baseline__version",
    "gold_choice": "comparison__gold_choice",
}


def rating_export_rows(*, campaign: Campaign, round_: Round | None = None) -> Iterator[dict]:
    """Every rating with its round, prompt, and the policy version on each side,
    one at a time, read in chunks. For admins and engineers only: it says which
    model wrote which side."""
    ratings = Rating.objects.filter(comparison__round__campaign=campaign)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    for values in ratings.order_by("pk").values_list(*RATING_EXPORT_COLUMNS.values()).iterator(chunk_size=2000):
        row = dict(zip(RATING_EXPORT_COLUMNS, values))
        row["created_at"] = row["created_at"].isoformat()
        yield row



# --- console: campaigns list and annotator pools -------------------------------
# A fixed number of queries whatever the number of campaigns, members or
# ratings (pinned in tests/annotate/test_campaign_admin.py and test_pool.py).


def campaign_console_rows(*, campaigns: QuerySet[Campaign] | None = None) -> list[dict]:
    """Each campaign with its current round's progress, pool size and ratings
    today, in four queries."""
    from django.db.models import OuterRef, Subquery

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


def gold_pool(*, campaign: Campaign) -> QuerySet:
    """The campaign's gold pairs (with prompt and both answers) and, per pair,
    how many rounds used it (`used`), how many gold answers it got
    (`answers`) and how many of those were right (`correct`)."""
    from django.db.models import F

    from annotate.models import GoldPair

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
    from django.db.models import F

    from annotate.models import GoldPair

    agg = Rating.objects.filter(comparison__round__campaign=campaign).exclude(comparison__gold_choice="").aggregate(
        answers=Count("pk"), correct=Count("pk", filter=Q(choice=F("comparison__gold_choice")))
    )
    return {
        "count": GoldPair.objects.filter(campaign=campaign).count(),
        "answers": agg["answers"],
        "correct": agg["correct"],
        "accuracy": agg["correct"] / agg["answers"] if agg["answers"] else None,
    }


def campaign_exports(*, campaign: Campaign) -> QuerySet:
    """The campaign's exports, newest first, with their round and author."""
    return campaign.exports.select_related("round", "created_by").order_by("-created_at", "-pk")
