"""The models as people see them: Bradley-Terry scores of every model of the
campaign (its policy versions v0, v1, ... and its external models by name),
plain and length-controlled, each loop round's win rate of its candidate
over its baseline and over the reference model, and each pair of models'
record against each other.

The path from the API to the maths: annotate/apis/leaderboard.py (the API)
-> this module (tallies the ratings in the database) -> annotate/stats/
(Bradley-Terry, its length-controlled form, the bootstrap, Wilson
intervals; Django-free)."""
from collections import Counter, defaultdict

from django.db.models import Count, Func, IntegerField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, NullIf

from annotate.stats import intervals, ranking
from annotate.models import Answer, Campaign, PolicyVersion, Rating
from annotate.selectors.memo import memoized_latest, ratings_state

# The normalised length difference of A's answer over B's is tallied in
# steps of 1/LENGTH_STEPS (-1 .. 1, truncated towards 0): the database sends
# one tally per step (at most 201 per pair of models, choice and round)
# instead of a row per comparison, and a hundredth of the range is far finer
# than anything the coefficient can tell apart.
LENGTH_STEPS = 100
SIDES = (
    "comparison__response_a__policy_version_id", "comparison__response_a__external_model_id",
    "comparison__response_b__policy_version_id", "comparison__response_b__external_model_id",
)
SCORE_OF_A = {Rating.Choice.A: 1.0, Rating.Choice.B: 0.0, Rating.Choice.TIE: 0.5}


def _elo(x) -> float:
    return ranking.ELO_BASE + ranking.ELO_SCALE * float(x)


def _model(policy_version_id: int | None, external_model_id: int | None) -> tuple[str, int] | None:
    if external_model_id is not None:
        return ("external", external_model_id)
    if policy_version_id is not None:
        return ("policy", policy_version_id)
    return None


class OctetLength(Func):
    """An answer's length in bytes (UTF-8): PostgreSQL reads it from the
    value's header, where counting characters reads the whole text (three
    times the leaderboard's query time at 100,000 ratings, bench/RESULTS.md);
    for answers in one script it is proportional to the characters."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra_context)


def _length_bin():
    """LENGTH_STEPS * (len A - len B) / (len A + len B) in integer arithmetic
    (truncated towards 0), 0 for two empty answers."""
    a, b = OctetLength("comparison__response_a__text"), OctetLength("comparison__response_b__text")
    return Coalesce(Value(LENGTH_STEPS) * (a - b) / NullIf(a + b, Value(0)), Value(0), output_field=IntegerField())


def _win_record(wins: float, ties: float, losses: float) -> dict:
    n = wins + ties + losses
    low, high = intervals.wilson_interval(wins + ties / 2, n)
    return {
        "n": n, "wins": wins, "ties": ties, "losses": losses,
        "win_rate": (wins + ties / 2) / n if n else None, "lower": low, "upper": high,
    }


# Scores after each round (the models page's chart): one bootstrap per
# round over the tallies up to it. The tallies are already grouped (no row
# per rating), so a round's fit costs what the leaderboard's does, whatever
# the ratings: about resamples x models^3. The cost is bounded by charting
# the last BY_ROUND_MAX rounds at BY_ROUND_RESAMPLES resamples each (at 20
# rounds and 100,000 ratings it adds about the leaderboard's own time:
# bench/scores_by_round.py, bench/RESULTS.md), and it runs only when asked
# (by_round=True: the models page, not the API).
BY_ROUND_MAX = 12
BY_ROUND_RESAMPLES = 50


def campaign_leaderboard(*, campaign: Campaign, resamples: int = 200, seed: int = 0, by_round: bool = False,
                         stale_ok: bool = False) -> dict:
    """Bradley-Terry scores of every model of the campaign from the ratings
    (A/B a win, tie half a win each, both_bad ignored; two answers of the
    same model say nothing), with bootstrap 95% intervals; beside them the
    length-controlled score (Chatbot Arena's style control: the normalised
    length difference of the two answers as a covariate in the same
    regression) with its own intervals and the fitted length coefficient.
    Each loop round's win rate of its candidate over its baseline and over
    the reference model; each pair of models' record. Gold pairs and
    answers of no model (gold answers) are left out.

    `models` lists every model; `versions` the policy versions alone, as
    before external models (same keys). The database tallies the ratings
    (choice x models on each side x round x side x length step), and the
    bootstraps resample those tallies, so no rating crosses into Python one
    by one. With `by_round`, also `by_round`: each model's score and interval
    from the ratings up to each round (_scores_by_round).

    Memoized (selectors/memo.py). The key is complete: besides the
    parameters, the function reads the ratings with their comparisons'
    sides, answers, rounds and gold choice (ratings_state moves with any
    change to those), the campaign's policy versions, external models with
    their names and the reference model, and its rounds with their
    candidates and baselines; those small lists are read here in full and
    are the key themselves. With `stale_ok` (the API, the models page), a
    state not computed yet is answered with the previous result, `stale`,
    while a task computes it (memo.memoized_latest); `as_of` says which
    ratings count a result is of."""
    rows = list(PolicyVersion.objects.filter(campaign=campaign).order_by("version").values_list(
        "pk", "version", "sft_model__version"))
    versions = [(pk, version) for pk, version, _ in rows]
    # Which versions were fine-tuned on demonstrations first (their policy
    # step started from that SFT model): read now, not kept with the result.
    sft_of = {pk: sft for pk, _, sft in rows if sft is not None}
    externals = list(campaign.external_models.order_by("name", "pk").values_list("pk", "name"))
    rounds = list(campaign.rounds.select_related("candidate", "baseline").order_by("index"))
    state = ratings_state(campaign=campaign)
    key = (
        state, campaign.kind, campaign.reference_model_id, versions, externals,
        [(r.pk, r.index, r.candidate_id, r.baseline_id) for r in rounds], resamples, seed, by_round,
        [(a["name"], a["question"]) for a in campaign.aspects],
    )
    board = memoized_latest(
        "leaderboard", state=state, params={"resamples": resamples, "seed": seed, "by_round": by_round}, key=key,
        compute=lambda: _leaderboard(campaign, versions, externals, rounds, resamples, seed, by_round),
        stale_ok=stale_ok,
    )
    models = [{**m, "sft_version": sft_of.get(m["policy_version_id"])} for m in board["models"]]
    return {**board, "models": models, "versions": [m for m in models if m["kind"] == "policy"]}


def _leaderboard(campaign: Campaign, versions: list, externals: list, rounds: list, resamples: int, seed: int,
                 by_round: bool) -> dict:
    base = Rating.objects.filter(
        comparison__round__campaign=campaign,
        # Rankings too, only to learn whether there are any (a group each, no
        # query more for a campaign without them); _ranking_tallies reads them.
        choice__in=[Rating.Choice.A, Rating.Choice.B, Rating.Choice.TIE, Rating.Choice.RANKING],
        comparison__gold_choice="",
    )
    # One tally serves both fits and the win rates: a loop round has its own
    # pair of models, so grouping by round as well adds no rows.
    by_length = list(
        base.annotate(length_bin=_length_bin())
        .values_list("choice", *SIDES, "comparison__round_id", "comparison__candidate_is_a", "length_bin")
        .annotate(ratings=Count("pk"))
        .order_by("choice", *SIDES, "comparison__round_id", "comparison__candidate_is_a", "length_bin")
    )
    n_rankings = sum(row[-1] for row in by_length if row[0] == Rating.Choice.RANKING)
    by_length = [row for row in by_length if row[0] != Rating.Choice.RANKING]
    n_pair_ratings = sum(row[-1] for row in by_length)
    if n_rankings:
        by_length += _ranking_tallies(campaign, rounds)
    merged = Counter()
    for row in by_length:
        merged[row[:7]] += row[-1]
    tallies = [(*key, count) for key, count in merged.items()]
    entries = [
        {"kind": "policy", "name": f"v{version}", "version": version, "policy_version_id": pk,
         "external_model_id": None, "reference": False}
        for pk, version in versions
    ] + [
        {"kind": "external", "name": name, "version": None, "policy_version_id": None, "external_model_id": pk,
         "reference": pk == campaign.reference_model_id}
        for pk, name in externals
    ]
    index = {("policy", pk): i for i, (pk, _) in enumerate(versions)}
    index.update({("external", pk): len(versions) + i for i, (pk, _) in enumerate(externals)})

    def sides(row) -> tuple[int | None, int | None]:
        a, b = _model(row[1], row[2]), _model(row[3], row[4])
        return index.get(a), index.get(b)

    # plain Bradley-Terry, as before external models
    outcomes, counts, games = [], [], Counter()
    for row in tallies:
        i, j = sides(row)
        if i is None or j is None or i == j:
            continue
        outcomes.append((i, j, SCORE_OF_A[row[0]]))
        counts.append(row[-1])
        games[i] += row[-1]
        games[j] += row[-1]
    theta, lower, upper = ranking.bradley_terry_bootstrap(
        outcomes, len(entries), counts=counts, resamples=resamples, seed=seed
    )

    # length-controlled: the same ratings, by length step
    styled, styled_counts, feature = [], [], []
    for row in by_length:
        i, j = sides(row)
        if i is None or j is None or i == j:
            continue
        styled.append((i, j, SCORE_OF_A[row[0]]))
        styled_counts.append(row[-1])
        feature.append(float(row[7]) / LENGTH_STEPS)
    style = ranking.standardised(feature, styled_counts)
    fit = ranking.bradley_terry_style_bootstrap(
        styled, style[:, None], len(entries), counts=styled_counts, resamples=resamples, seed=seed
    )

    for i, entry in enumerate(entries):
        scored = bool(games[i])
        entry.update(
            n=games[i],
            score=_elo(theta[i]) if scored else None,
            lower=_elo(lower[i]) if scored else None,
            upper=_elo(upper[i]) if scored else None,
            lc_score=_elo(fit.theta[i]) if scored else None,
            lc_lower=_elo(fit.lower[i]) if scored else None,
            lc_upper=_elo(fit.upper[i]) if scored else None,
        )
    board = sorted(
        entries,
        key=lambda e: (e["score"] is None, -(e["score"] or 0.0), e["kind"] != "policy", e["version"] or 0, e["name"]),
    )
    extra = {"by_round": _scores_by_round(tallies, entries, sides, rounds, seed)} if by_round else {}
    return {
        **extra,
        "campaign": campaign.pk,
        "kind": campaign.kind,
        "method": "bradley_terry",
        "scale": "Elo-like: 1000 + 400*log10(strength), mean model at 1000; a 400-point gap is 10:1 odds",
        "interval": f"95% percentile bootstrap, {resamples} resamples of the ratings, seed {seed}",
        "length_control": {
            "method": "Bradley-Terry with the normalised answer-length difference (len A - len B) / (len A + len B) "
                      "(bytes of UTF-8), standardised, as a covariate (Chatbot Arena's style control); lc_score is "
                      "each model's score with length held equal",
            "coefficient": float(fit.coef[0]),
            "lower": float(fit.coef_lower[0]),
            "upper": float(fit.coef_upper[0]),
        },
        "n_ratings": n_pair_ratings + n_rankings,
        "n_rankings": n_rankings,
        "rankings": (
            "a ranking of k answers counts as its k(k-1)/2 implied pairs (tied answers a tie), each of weight 2/k: "
            "k-1 judgements in all, the choices a ranking is made of (best of k, best of the rest, ...), not "
            "k(k-1)/2 independent ones"
        ),
        "reference_model": next((e["name"] for e in entries if e["reference"]), None),
        "models": board,
        "versions": [e for e in board if e["kind"] == "policy"],
        "rounds": _rounds(rounds, tallies, entries, index),
        "pairs": _pairs(tallies, entries, sides),
        "aspects": [_aspect_board(campaign, aspect, entries, sides, resamples, seed) for aspect in campaign.aspects],
    }


ASPECT_SCORE_OF_A = {"A": 1.0, "B": 0.0, "same": 0.5}


def _aspect_board(campaign: Campaign, aspect: dict, entries: list[dict], sides, resamples: int, seed: int) -> dict:
    """One rubric aspect's Bradley-Terry scores of the models, from the
    ratings' judgments of it (A or B a win, same half a win each), with
    bootstrap 95% intervals as the overall board's; gold pairs left out.
    The database tallies judgment x models on each side."""
    name = aspect["name"]
    tallies = list(
        Rating.objects.filter(comparison__round__campaign=campaign, comparison__gold_choice="", aspects__has_key=name)
        .annotate(judged=KeyTextTransform(name, "aspects"))
        .values_list("judged", *SIDES)
        .annotate(ratings=Count("pk"))
        .order_by("judged", *SIDES)
    )
    outcomes, counts, games = [], [], Counter()
    for row in tallies:
        i, j = sides(row)
        if i is None or j is None or i == j or row[0] not in ASPECT_SCORE_OF_A:
            continue
        outcomes.append((i, j, ASPECT_SCORE_OF_A[row[0]]))
        counts.append(row[-1])
        games[i] += row[-1]
        games[j] += row[-1]
    theta, lower, upper = ranking.bradley_terry_bootstrap(
        outcomes, len(entries), counts=counts, resamples=resamples, seed=seed
    )
    models = [
        {"name": e["name"], "kind": e["kind"], "version": e["version"], "n": games[i],
         "score": _elo(theta[i]) if games[i] else None, "lower": _elo(lower[i]) if games[i] else None,
         "upper": _elo(upper[i]) if games[i] else None}
        for i, e in enumerate(entries)
    ]
    models.sort(key=lambda m: (m["score"] is None, -(m["score"] or 0.0), m["kind"] != "policy", m["version"] or 0,
                               m["name"]))
    return {"name": name, "question": aspect["question"], "n_ratings": sum(counts), "models": models}


def _ranking_tallies(campaign: Campaign, rounds: list) -> list[tuple]:
    """The campaign's rankings of k-sets (gold pairs are never k-sets) as
    implied pairs, in the tallies' row shape (choice of the first over the
    second, the models on each side, round, candidate_is_a, length step,
    weight). Each ranking of k answers gives its
    k(k-1)/2 pairs weight 2/k each, k-1 in all: under Plackett-Luce a
    ranking is k-1 successive choices (the best of k, then of the k-1
    left, ...), so it weighs as k-1 pair judgements, not as k(k-1)/2
    independent ones; the pairs are not independent of each other (a
    ranking cannot be intransitive). candidate_is_a is set where exactly one
    of the two is the round's candidate policy and the other its baseline's
    (a loop round's win rate); null otherwise (two samples of one policy)."""
    rows = list(
        Rating.objects.filter(comparison__round__campaign=campaign, choice=Rating.Choice.RANKING)
        .values_list("ranking", "comparison__answers", "comparison__round_id")
    )
    ids = {pk for _, shown, _ in rows for pk in shown}
    answers = {
        pk: (pv, em, n)
        for pk, pv, em, n in Answer.objects.filter(pk__in=ids)
        .annotate(n=OctetLength("text")).values_list("pk", "policy_version_id", "external_model_id", "n")
    }
    playing = {r.pk: (r.candidate_id, r.baseline_id) for r in rounds}
    merged = Counter()
    for order, shown, round_id in rows:
        k = len(shown)
        candidate, baseline = playing.get(round_id, (None, None))
        for x, y, score in ranking.implied_pairs(order, k):
            (pa, ea, la), (pb, eb, lb) = answers[shown[x - 1]], answers[shown[y - 1]]
            choice = {1.0: Rating.Choice.A, 0.5: Rating.Choice.TIE, 0.0: Rating.Choice.B}[score]
            # As _length_bin: integer arithmetic, truncated towards 0.
            step = (abs(LENGTH_STEPS * (la - lb)) // (la + lb)) * (1 if la >= lb else -1) if la + lb else 0
            sides = {pa, pb}
            candidate_is_a = (pa == candidate) if candidate != baseline and sides == {candidate, baseline} else None
            merged[(choice, pa, ea, pb, eb, round_id, candidate_is_a, step)] += 2.0 / k
    return [(*key, weight) for key, weight in merged.items()]


def _scores_by_round(tallies: list, entries: list[dict], sides, rounds: list, seed: int) -> dict:
    """Each model's Bradley-Terry score with its bootstrap 95% interval after
    each of the last BY_ROUND_MAX rounds, from the ratings of that round and
    every earlier one (the last round's scores are the leaderboard's when
    every model has ratings): {"rounds": [index...], "models": [{name, kind,
    version, score, lower, upper: one value per round, None before the
    model's first rating}]}."""
    order = {r.pk: r.index for r in rounds}
    charted = [r.index for r in rounds][-BY_ROUND_MAX:]
    models = [{"name": e["name"], "kind": e["kind"], "version": e["version"], "score": [], "lower": [], "upper": []}
              for e in entries]
    for upto in charted:
        outcomes, counts, games = [], [], Counter()
        for row in tallies:
            i, j = sides(row)
            if i is None or j is None or i == j or order.get(row[5], upto + 1) > upto:
                continue
            outcomes.append((i, j, SCORE_OF_A[row[0]]))
            counts.append(row[-1])
            games[i] += row[-1]
            games[j] += row[-1]
        # Fitted on the models rated so far only (a fit costs models^3, and
        # the later versions of a long campaign are most of them), centred
        # on those: the mean model rated by then is at 1000.
        local = {i: k for k, i in enumerate(sorted(games))}
        theta, lower, upper = ranking.bradley_terry_bootstrap(
            [(local[i], local[j], score) for i, j, score in outcomes], len(local), counts=counts,
            resamples=BY_ROUND_RESAMPLES, seed=seed,
        )
        for i, model in enumerate(models):
            k = local.get(i)
            model["score"].append(_elo(theta[k]) if k is not None else None)
            model["lower"].append(_elo(lower[k]) if k is not None else None)
            model["upper"].append(_elo(upper[k]) if k is not None else None)
    return {"rounds": charted, "models": [m for m in models if any(v is not None for v in m["score"])],
            "resamples": BY_ROUND_RESAMPLES, "max_rounds": BY_ROUND_MAX}


def _rounds(round_rows: list, tallies: list, entries: list[dict], index: dict) -> list[dict]:
    """Each round: a loop round's candidate against its baseline (both sides
    policy versions) and against the reference (a policy version against an
    external model), from the candidate's side; an evaluation round's count."""
    baseline = defaultdict(lambda: [0, 0, 0])  # round -> [candidate wins, ties, baseline wins]
    reference = defaultdict(lambda: [0, 0, 0])
    reference_name: dict[int, str] = {}
    counted = Counter()
    for row in tallies:
        choice, (pa, ea, pb, eb), round_id, candidate_is_a, count = row[0], row[1:5], row[5], row[6], row[7]
        counted[round_id] += count
        if candidate_is_a is None:
            continue  # an evaluation round: no candidate
        if pa is not None and pb is not None:
            tally = baseline[round_id]
        elif (ea is None) != (eb is None) and (pa is not None or pb is not None):
            tally = reference[round_id]
            other = _model(None, ea if ea is not None else eb)
            if other in index:
                reference_name[round_id] = entries[index[other]]["name"]
        else:
            continue
        if choice == Rating.Choice.TIE:
            tally[1] += count
        else:
            tally[0 if (choice == Rating.Choice.A) == candidate_is_a else 2] += count
    rounds = []
    for r in round_rows:
        if r.candidate_id is None:
            rounds.append(
                {"round": r.index, "candidate_version": None, "baseline_version": None, "same_policy": False,
                 "n": counted[r.pk], "wins": None, "ties": None, "losses": None, "win_rate": None,
                 "lower": None, "upper": None, "against_reference": None}
            )
            continue
        against = None
        if r.pk in reference:
            against = {"model": reference_name.get(r.pk), **_win_record(*reference[r.pk])}
        rounds.append(
            {
                "round": r.index,
                "candidate_version": r.candidate.version,
                "baseline_version": r.baseline.version,
                "same_policy": r.candidate_id == r.baseline_id,
                **_win_record(*baseline[r.pk]),
                "against_reference": against,
            }
        )
    return rounds


def _pairs(tallies: list, entries: list[dict], sides) -> list[dict]:
    """Every pair of models that met: the first one's wins, ties, losses
    against the second, its win rate (ties half) with a Wilson interval.
    Pairs in model order (policy versions first, then external models)."""
    record = defaultdict(lambda: [0, 0, 0])
    for row in tallies:
        i, j = sides(row)
        if i is None or j is None or i == j:
            continue
        first, second = min(i, j), max(i, j)
        if row[0] == Rating.Choice.TIE:
            record[(first, second)][1] += row[-1]
        else:
            first_won = (row[0] == Rating.Choice.A) == (i == first)
            record[(first, second)][0 if first_won else 2] += row[-1]
    return [
        {"model_a": entries[i]["name"], "model_b": entries[j]["name"], **_win_record(*record[(i, j)])}
        for i, j in sorted(record)
    ]
