"""Selectors: every read that is more than a one-line lookup."""
from collections import Counter, defaultdict
from collections.abc import Iterator

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet, Sum

from annotate import stats
from annotate.errors import ValidationFailed
from annotate.models import (
    Campaign,
    Comparison,
    Membership,
    PolicyVersion,
    Prompt,
    Rating,
    Answer,
    Role,
    Round,
    TrainingRun,
)

User = get_user_model()


def user_is_staff(*, user: User) -> bool:
    """Staff and superusers: every campaign, every role (DESIGN.md, invariant 7)."""
    return bool(user.is_authenticated and (user.is_staff or user.is_superuser))


# Where the API's authentication (annotate/apis/authentication.py) leaves the
# user's role names for the rest of the request: read once, not per check.
ROLES_ATTR = "_ratchet_role_names"


def user_group_roles(*, user: User) -> frozenset[str]:
    """The roles the user's groups give (staff's implied ones not added)."""
    return frozenset(user.groups.filter(name__in=Role.values).values_list("name", flat=True))


def user_roles(*, user: User) -> set[str]:
    if not user.is_authenticated:
        return set()
    # Set only on request users, by the API's authentication; any other user
    # object reads its groups each time (a service may just have changed them).
    names = getattr(user, ROLES_ATTR, None)
    roles = set(user_group_roles(user=user) if names is None else names)
    if user_is_staff(user=user):
        roles |= {Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER}
    return roles


# Who sees which campaign. A campaign outside a user's set answers 404, never
# 403, so that ids reveal nothing about campaigns one has no part in:
# - staff: every campaign;
# - ML engineers: every campaign, to read and to train (the models and data
#   of all campaigns are their work; DESIGN.md gives them no campaign scope);
# - campaign admins: the campaigns they administer (Campaign.admins);
# - annotators: the campaigns whose pool they are in.


def campaigns_managed_by(*, user: User, roles: set[str] | None = None) -> QuerySet[Campaign]:
    """The campaigns this user may change as a campaign admin: staff every
    one, an admin those they administer, anyone else none."""
    roles = user_roles(user=user) if roles is None else roles
    if user_is_staff(user=user):
        return Campaign.objects.all()
    if Role.CAMPAIGN_ADMIN in roles:
        return Campaign.objects.filter(admins=user)
    return Campaign.objects.none()


def campaigns_readable_by(*, user: User, roles: set[str] | None = None) -> QuerySet[Campaign]:
    """The campaigns whose console pages and admin/engineer APIs this user may
    read: staff and ML engineers every one, admins those they administer."""
    roles = user_roles(user=user) if roles is None else roles
    if user_is_staff(user=user) or Role.ML_ENGINEER in roles:
        return Campaign.objects.all()
    return campaigns_managed_by(user=user, roles=roles)


def campaigns_visible_to(*, user: User) -> QuerySet[Campaign]:
    """The campaigns listed to this user and open to them for rating:
    annotators the campaigns whose pool they are in (invariant 7), admins
    those too and the campaigns they administer, staff and engineers all."""
    roles = user_roles(user=user)
    if user_is_staff(user=user) or Role.ML_ENGINEER in roles:
        return Campaign.objects.all()
    # One filter() call: both conditions on the same membership row. A paused
    # annotator still sees the campaign (and is told why there is no work);
    # a removed one does not.
    in_pool = Campaign.objects.filter(
        memberships__annotator=user, memberships__status__in=[Membership.Status.ACTIVE, Membership.Status.PAUSED]
    )
    if Role.CAMPAIGN_ADMIN in roles:
        return Campaign.objects.filter(
            Q(pk__in=in_pool.values("pk")) | Q(pk__in=campaigns_managed_by(user=user, roles=roles).values("pk"))
        )
    return in_pool


def campaign_visibility_sql(*, user: User, campaign_column: str) -> tuple[str, list] | None:
    """campaigns_visible_to as a SQL condition on `campaign_column`, for the
    statements the annotator's hot path writes by hand (" AND ...", params);
    "" when every campaign is visible, None when none is. Annotators' rule
    is written out here (the pool, active or paused); others' sets are
    rarer on that path and read through campaigns_visible_to."""
    if not user.is_authenticated:
        return None
    roles = user_roles(user=user)
    if user_is_staff(user=user) or Role.ML_ENGINEER in roles:
        return "", []
    if Role.CAMPAIGN_ADMIN in roles:
        ids = list(campaigns_visible_to(user=user).values_list("pk", flat=True))
        if not ids:
            return None
        return f" AND {campaign_column} IN ({', '.join(['%s'] * len(ids))})", ids
    return (
        f" AND EXISTS (SELECT 1 FROM {Membership._meta.db_table} vm WHERE vm.campaign_id = {campaign_column}"
        " AND vm.annotator_id = %s AND vm.status IN (%s, %s))",
        [user.pk, Membership.Status.ACTIVE, Membership.Status.PAUSED],
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

    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    # Both counts in one statement (the next API sends them with every lease).
    return Rating.objects.filter(annotator=annotator).aggregate(
        mine_today=Count("pk", filter=Q(created_at__gte=today)),
        mine_in_campaign=Count("pk", filter=Q(comparison__round__campaign=campaign)),
    )


def comparison_lease_payload(*, comparison_id: int, annotator: User, campaign: Campaign) -> dict:
    """What the next API sends with a lease, in one statement: the comparison
    (prompt, both answers, round index), the annotator's counts
    (annotator_progress) and the round's (round_progress's counts). SQL: this
    runs on every next call, where three querysets cost more to build than
    to run (bench/load.py)."""
    import json

    from django.db import connection
    from django.utils import timezone

    t = {m.__name__: m._meta.db_table for m in (Comparison, Round, Prompt, Answer, Rating)}
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)  # as annotator_progress
    # Regular comparisons only, as round_progress: gold pairs never hold a round up.
    sql = (
        f"SELECT c.id, r.{connection.ops.quote_name('index')}, p.text, p.turns, ra.text, rb.text,"
        f" (SELECT COUNT(*) FROM {t['Rating']} x WHERE x.annotator_id = %s AND x.created_at >= %s),"
        f" (SELECT COUNT(*) FROM {t['Rating']} x JOIN {t['Comparison']} xc ON xc.id = x.comparison_id"
        f"  JOIN {t['Round']} xr ON xr.id = xc.round_id WHERE x.annotator_id = %s AND xr.campaign_id = %s),"
        " g.n, g.s"
        f" FROM {t['Comparison']} c JOIN {t['Round']} r ON r.id = c.round_id JOIN {t['Prompt']} p ON p.id = c.prompt_id"
        f" JOIN {t['Answer']} ra ON ra.id = c.response_a_id JOIN {t['Answer']} rb ON rb.id = c.response_b_id"
        # Both round counts in one pass over the round.
        f" CROSS JOIN (SELECT COUNT(*) AS n, SUM(rating_count) AS s FROM {t['Comparison']}"
        f"  WHERE round_id = (SELECT round_id FROM {t['Comparison']} WHERE id = %s) AND gold_choice = '') g"
        " WHERE c.id = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [annotator.pk, connection.ops.adapt_datetimefield_value(today), annotator.pk, campaign.pk,
                             comparison_id, comparison_id])
        cid, index, text, turns, a, b, mine_today, mine_in_campaign, comparisons, ratings = cursor.fetchone()
    comparisons, ratings, k = comparisons or 0, int(ratings or 0), campaign.overlap
    return {
        "comparison": cid,
        "round": index,
        "prompt": text,
        "prompt_turns": json.loads(turns) if isinstance(turns, str) else turns,
        "response_a": a,
        "response_b": b,
        "progress": {"mine_today": mine_today, "mine_in_campaign": mine_in_campaign},
        "round_progress": {
            "round": index,
            "comparisons": comparisons,
            "ratings": ratings,
            "target_ratings": comparisons * k,
            "fraction": (ratings / (comparisons * k)) if comparisons else 0.0,
        },
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
        "pk", "choice", "strength", "annotator_id", "comparison_id", "comparison__round__index",
        "comparison__prompt_id", "comparison__prompt__text", "comparison__prompt__turns",
        "comparison__response_a__text", "comparison__response_b__text",
    )
    # Small chunks: each row carries a prompt and two answers.
    for rating_id, choice, strength, annotator_id, comparison_id, round_index, prompt_id, text, turns, a, b in ratings.iterator(
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
            "round": round_index,
        }


def training_runs_for(*, campaign: Campaign) -> QuerySet[TrainingRun]:
    return campaign.training_runs.order_by("-created_at")


def comparisons_of_round(*, round_: Round) -> QuerySet[Comparison]:
    return round_.comparisons.select_related("prompt", "response_a", "response_b")


# --- data quality, leaderboard, exports ----------------------------------------
# The numbers are computed by annotate/stats.py; these gather their rows.

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


def _rating_facts(*, campaign: Campaign, round_: Round | None = None) -> dict[str, np.ndarray]:
    """Every rating of the campaign (or one round) as numpy columns, one entry
    per rating, in rating id order: comparison, annotator, choice (index into
    stats.CATEGORIES), strength (0: none), ms (time on task; see `timed`),
    timed (has a time on task), gold (the comparison's gold answer as an
    index into stats.CATEGORIES; -1: not a gold pair). Columns, not rows:
    campaign_quality's statistics run on whole arrays, since a campaign has
    100,000 ratings and more and this is read inside a request."""
    ratings = Rating.objects.filter(comparison__round__campaign=campaign)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    rows = list(
        ratings.values_list(
            "pk", "comparison_id", "annotator_id", "choice", "strength", "time_on_task_ms", "comparison__gold_choice"
        )
    )
    pk, comparison, annotator, choice, strength, ms, gold = zip(*rows) if rows else [()] * 7
    code = {c: i for i, c in enumerate(stats.CATEGORIES)}
    columns = {
        "comparison": np.array(comparison, dtype=np.int64),
        "annotator": np.array(annotator, dtype=np.int64),
        "choice": np.array([code[c] for c in choice], dtype=np.int64),
        "strength": np.array([s or 0 for s in strength], dtype=np.int64),
        "ms": np.array([m or 0 for m in ms], dtype=np.int64),
        "timed": np.array([m is not None for m in ms], dtype=bool),
        "gold": np.array([code.get(g, -1) for g in gold], dtype=np.int64),
    }
    # Sorted here rather than by the database: ORDER BY spills 100,000 rows
    # to disk there; the order only fixes floating-point summation order.
    order = np.argsort(np.array(pk, dtype=np.int64), kind="stable")
    return {name: column[order] for name, column in columns.items()}


def _reliability(facts: dict[str, np.ndarray]) -> tuple[stats.DawidSkeneResult, np.ndarray, dict, dict]:
    """Dawid-Skene over the comparisons that two or more annotators rated, or
    that have a gold answer (a comparison rated once says nothing about its
    rater). Returns (result, which ratings it saw, informativeness of
    annotators with enough ratings, weight of every annotator in `facts`)."""
    comparison, annotator, choice = facts["comparison"], facts["annotator"], facts["choice"]
    _, per_comparison = np.unique(comparison, return_inverse=True)
    labelled = (np.bincount(per_comparison)[per_comparison] >= 2) | (facts["gold"] >= 0)
    result = stats.dawid_skene_arrays(
        comparison[labelled], annotator[labelled], choice[labelled], gold=facts["gold"][labelled]
    )
    # result.workers is the sorted distinct annotators of the labels, as np.unique's.
    _, labelled_n = np.unique(annotator[labelled], return_counts=True)
    informativeness = {
        a: float(result.informativeness[i])
        for i, a in enumerate(result.workers)
        if labelled_n[i] >= RELIABILITY_MIN_RATINGS
    }
    annotators, per_annotator = np.unique(annotator, return_inverse=True)
    sided = np.isin(choice, [stats.CATEGORIES.index(Rating.Choice.A), stats.CATEGORIES.index(Rating.Choice.B)])
    trained_on = np.bincount(per_annotator, weights=sided, minlength=len(annotators))
    counts = {int(a): int(n) for a, n in zip(annotators, trained_on)}
    return result, labelled, informativeness, stats.reliability_weights(informativeness, counts)


def annotator_weights(*, campaign: Campaign) -> dict[int, float]:
    """{annotator_id: reward-model sample weight}: Dawid-Skene reliability over
    every rating of the campaign, mean 1 over the A/B ratings; 1.0 for an
    annotator with too few overlapping ratings to judge."""
    return _reliability(_rating_facts(campaign=campaign))[3]


def campaign_quality(*, campaign: Campaign, round_: Round | None = None) -> dict:
    """Agreement, consensus and a per-annotator table over the campaign's
    ratings (or one round's). See README, "Quality, leaderboard and exports".
    Whole-array work throughout (bincounts per annotator), no loop over ratings."""
    facts = _rating_facts(campaign=campaign, round_=round_)
    comparison, annotator, choice, gold = facts["comparison"], facts["annotator"], facts["choice"], facts["gold"]
    A, B, TIE, BOTH_BAD = range(len(stats.CATEGORIES))
    ordinal = stats.ordinal_values(choice, facts["strength"])
    on_scale = ~np.isnan(ordinal)
    _, on_scale_unit = np.unique(comparison[on_scale], return_inverse=True)
    agreement, pairs = stats.percent_agreement_ratings(comparison, choice)
    result, labelled, informativeness, weights = _reliability(facts)
    best = result.posteriors.argmax(axis=1)
    # The consensus category of each rating's comparison, where Dawid-Skene saw it.
    consensus = np.full(len(choice), -1)
    consensus[labelled] = best[np.searchsorted(result.items, comparison[labelled])]
    accuracy = {a: float(result.accuracy[i]) for i, a in enumerate(result.workers)}

    annotators, per_annotator = np.unique(annotator, return_inverse=True)
    n_annotators = len(annotators)

    def per_annotator_count(where: np.ndarray) -> list[int]:
        return np.bincount(per_annotator[where], minlength=n_annotators).tolist()

    n = per_annotator_count(np.ones(len(choice), dtype=bool))
    picked = {c: per_annotator_count(choice == c) for c in (A, B, TIE, BOTH_BAD)}
    gold_n, gold_right = per_annotator_count(gold >= 0), per_annotator_count((gold >= 0) & (choice == gold))
    consensus_n, consensus_right = per_annotator_count(labelled), per_annotator_count(labelled & (choice == consensus))
    median_ms = _medians(per_annotator[facts["timed"]], facts["ms"][facts["timed"]], n_annotators)
    usernames = dict(User.objects.filter(pk__in=annotators.tolist()).values_list("pk", "username"))
    table = []
    for i, a in enumerate(annotators.tolist()):
        sided = picked[A][i] + picked[B][i]
        table.append(
            {
                "annotator_id": a,
                "username": usernames.get(a, ""),
                "n": n[i],
                "gold_n": gold_n[i],
                "gold_accuracy": gold_right[i] / gold_n[i] if gold_n[i] else None,
                "consensus_n": consensus_n[i],
                "consensus_agreement": consensus_right[i] / consensus_n[i] if consensus_n[i] else None,
                "left_pick_rate": picked[A][i] / sided if sided else None,
                "tie_rate": picked[TIE][i] / n[i],
                "both_bad_rate": picked[BOTH_BAD][i] / n[i],
                "median_seconds": median_ms[i] / 1000.0 if median_ms[i] is not None else None,
                "reliability": informativeness.get(a),
                "estimated_accuracy": accuracy.get(a) if a in informativeness else None,
                "weight": weights.get(a, 1.0),
            }
        )
    return {
        "campaign": campaign.pk,
        "round": round_.index if round_ is not None else None,
        "n_ratings": len(choice),
        "n_comparisons": len(np.unique(comparison)),
        "n_annotators": n_annotators,
        "alpha": stats.krippendorff_alpha_ordinal_ratings(comparison, ordinal),
        "alpha_units": int((np.bincount(on_scale_unit) >= 2).sum()),
        "alpha_both_bad_missing": int((choice == BOTH_BAD).sum()),
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
        "consensus_labels": dict(Counter(stats.CATEGORIES[b] for b in best.tolist())),
        "annotators": table,
    }


def _medians(group: np.ndarray, values: np.ndarray, groups: int) -> list[float | None]:
    """The median of `values` in each group 0..groups-1 (None for an empty
    one), as statistics.median: the middle value, or the mean of the two."""
    order = np.lexsort((values, group))
    ordered = values[order]
    size = np.bincount(group, minlength=groups)
    start = np.cumsum(size) - size
    medians = []
    for s, m in zip(start.tolist(), size.tolist()):
        if not m:
            medians.append(None)
        elif m % 2:
            medians.append(int(ordered[s + m // 2]))
        else:
            medians.append((int(ordered[s + m // 2 - 1]) + int(ordered[s + m // 2])) / 2)
    return medians


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


def campaign_admins(*, campaign: Campaign) -> QuerySet[User]:
    """The users who administer the campaign, by username."""
    return campaign.admins.order_by("username")


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
