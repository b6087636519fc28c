"""A campaign's overview: is the loop working, and is anything stuck?

campaign_overview reads, in a bounded number of queries whatever the number
of rounds, everything the overview page shows: one row of figures per round
(win rates with Wilson intervals, KL to the base, the reward model's
held-out accuracy, ratings per hour, time per stage) and what is happening
now (the round's progress, who is rating, the run in progress with an ETA,
and anything stuck, said in words).

Every figure comes from what the database records: ratings (win rates,
ratings per hour), the rounds' open and close times, the training runs'
stage records (times), the policy and reward versions' final metrics (KL,
held-out accuracy; names as in rlhf/__init__.py). A figure nothing records
is None, and the page says it is not measured. docs/console.md says how each
is computed and the rules for "stuck"."""
from collections import defaultdict
from datetime import datetime

from django.core.cache import cache
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from annotate.models import Answer, Campaign, Comparison, PolicyVersion, Rating, RewardModelVersion, Round, TrainingRun
from annotate.selectors.overview_now import campaign_now, iso, parse_time, seconds_between
from annotate.selectors.selection import selection_chart, selection_reasons
from annotate.stats.intervals import wilson_interval
from annotate.stats.ranking import implied_pairs
from annotate.training.stages import STAGES

# The runs the page lists, newest first.
RECENT_RUNS = 10
# The stages a round's time is split into on the chart: rating (the round
# collecting), queue (the run's stages waiting for a gpu worker), the three
# long stages, and the two short ones together.
TIME_PARTS = ("rating", "queue", "sft", "reward", "policy", "generate", "snapshot_open")
# How long a closed round's tally stays cached: a day, so the entries of
# rounds no one looks at any more leave (a round's key never goes stale).
TALLY_CACHE_S = 24 * 3600


def _win_record(wins: float, ties: float, losses: float) -> dict | None:
    """Ties count half a win (as on the models page); None with no ratings."""
    n = wins + ties + losses
    if not n:
        return None
    lower, upper = wilson_interval(wins + ties / 2, n)
    return {"n": n, "wins": wins, "ties": ties, "losses": losses,
            "win_rate": (wins + ties / 2) / n, "lower": lower, "upper": upper}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _kl(version: dict | None) -> tuple[float | None, str]:
    """KL of a policy version to its step's reference, nats per answer, and
    where it comes from: the estimate for the weights the step kept (with a
    budget), else the step's last reported KL, 0 for the base itself. The
    reference is the base model, or with the campaign's sft_anchor "sft" the
    SFT model the step started from (training/steps.py, _anchor); the
    metric keeps its name (policy/kl_to_base) either way."""
    if version is None:
        return None, ""
    if version["version"] == 0:
        return 0.0, "the base itself"
    metrics = version["metrics"] or {}
    kept = _number(metrics.get("policy/kl_to_base"))
    if kept is not None:
        return kept, "policy/kl_to_base"
    last = _number(metrics.get("policy/kl"))
    if last is not None:
        return last, "policy/kl"
    return None, ""


def _heldout(reward: dict | None) -> dict | None:
    """The reward model's accuracy on its held-out pairs with a Wilson
    interval over their count (the calibration buckets' pairs add up to it)."""
    if reward is None:
        return None
    metrics = reward["metrics"] or {}
    accuracy = _number(metrics.get("eval/reward/accuracy"))
    if accuracy is None:
        return None
    pairs = sum(v for k, v in metrics.items() if k.startswith("eval/reward/pairs_margin_") and _number(v) is not None)
    lower, upper = wilson_interval(accuracy * pairs, pairs) if pairs else (None, None)
    return {"accuracy": accuracy, "pairs": int(pairs) or None, "lower": lower, "upper": upper,
            "split": metrics.get("eval/reward/split") or "heldout", "reward_version": reward["version"]}


def _run_times(run: TrainingRun) -> dict:
    """Seconds each stage of a run took (its successful attempt) and waited
    in the gpu queue (its latest message sent to its start)."""
    times = {"queue": 0.0}
    for stage in STAGES[run.kind]:
        record = run.stages.get(stage, {})
        waited = seconds_between(parse_time(record.get("queued_at")), parse_time(record.get("started_at")))
        if waited is not None and waited > 0:
            times["queue"] += waited
        if record.get("seconds") is not None:
            key = "snapshot_open" if stage in ("snapshot", "open") else stage
            times[key] = times.get(key, 0.0) + float(record["seconds"])
    return times


def _rating_tallies(round_ids: list[int]) -> list[dict]:
    """Ratings of regular comparisons (gold pairs left out), tallied by round,
    choice and the side the candidate was shown on, with the first and last
    rating time. No answer is joined: at 100,000 ratings, grouping by the
    model of each side made PostgreSQL sort every rating on disk (300 ms
    instead of under 100, bench/RESULTS.md)."""
    tallies = list(
        Rating.objects.filter(comparison__round_id__in=round_ids, comparison__gold_choice="")
        .values("comparison__round_id", "choice", "comparison__candidate_is_a")
        .annotate(n=Count("pk"), first=Min("created_at"), last=Max("created_at"))
        .order_by()
    )
    if any(t["choice"] == Rating.Choice.RANKING for t in tallies):
        tallies += _ranking_tallies([t["comparison__round_id"] for t in tallies if t["choice"] == Rating.Choice.RANKING])
    return tallies


def _ranking_tallies(round_ids: list[int]) -> list[dict]:
    """A loop round of k-sets (k-1 answers of the candidate beside the
    baseline's): each ranking read as the candidate's pairs against the
    baseline's answer (above: a win, in the same tie group: a tie, below: a
    loss), each pair weighted 2/k as the leaderboard weighs a ranking's
    implied pairs (selectors/leaderboard.py, _ranking_tallies: a ranking is
    k-1 judgements, not k(k-1)/2), so the two pages give a round the same
    win rate and interval. Rows shaped as _rating_tallies' (choice A / tie /
    B with the candidate shown as A), so _tally_win adds them; their first
    and last are None."""
    rounds = {pk: (candidate, baseline) for pk, candidate, baseline in
              Round.objects.filter(pk__in=set(round_ids)).values_list("pk", "candidate_id", "baseline_id")
              if candidate and baseline and candidate != baseline}
    rankings = list(
        Rating.objects.filter(comparison__round_id__in=list(rounds), comparison__gold_choice="",
                              choice=Rating.Choice.RANKING)
        .values_list("comparison__round_id", "ranking", "comparison__answers")
    )
    answer_ids = {a for _, _, answers in rankings for a in answers or []}
    version_of = dict(Answer.objects.filter(pk__in=answer_ids).values_list("pk", "policy_version_id"))
    outcome = defaultdict(lambda: [0.0, 0.0, 0.0])  # round -> [wins, ties, losses]
    for round_id, order, answers in rankings:
        candidate, baseline = rounds[round_id]
        for x, y, score in implied_pairs(order, len(answers)):
            versions = version_of.get(answers[x - 1]), version_of.get(answers[y - 1])
            if versions in ((candidate, baseline), (baseline, candidate)):
                candidate_score = score if versions[0] == candidate else 1.0 - score
                outcome[round_id][{1.0: 0, 0.5: 1, 0.0: 2}[candidate_score]] += 2.0 / len(answers)
    return [{"comparison__round_id": round_id, "choice": choice, "comparison__candidate_is_a": True, "n": n,
             "first": None, "last": None}
            for round_id, record in outcome.items()
            for choice, n in zip((Rating.Choice.A, Rating.Choice.TIE, Rating.Choice.B), record) if n]


def _tallies(rounds: list[dict], progress: dict, *, references: bool) -> tuple[list[dict], list[dict]]:
    """_rating_tallies and (with `references`) _reference_tallies of the rounds.

    A round that no longer collects takes no ratings (services/ratings.py
    refuses them), so its two tallies are kept in Django's cache and only the
    rounds not found there are read: at 100 rounds the page reads the
    current round's ratings, not all 100,000. The key holds what the page
    has already read of the round from its comparisons (_tally_key), so a
    rating that reaches or leaves the round anyway gives a new key, never a
    stale figure."""
    keys = {r["pk"]: _tally_key(r, progress.get(r["pk"], {}), references) for r in rounds
            if r["status"] != Round.Status.COLLECTING}
    cached = cache.get_many(list(keys.values())) if keys else {}
    found = [pk for pk, key in keys.items() if key in cached]
    missing = [r["pk"] for r in rounds if r["pk"] not in set(found)]
    tallies = _rating_tallies(missing) if missing else []
    # No external model, no answer of one to pair with: nothing to tally.
    external = _reference_tallies(missing) if missing and references else []
    fresh = defaultdict(lambda: ([], []))
    for t in tallies:
        fresh[t["comparison__round_id"]][0].append(t)
    for t in external:
        fresh[t["comparison__round_id"]][1].append(t)
    if missing:
        cache.set_many({keys[pk]: fresh[pk] for pk in missing if pk in keys}, TALLY_CACHE_S)
    for pk in found:
        kept, kept_external = cached[keys[pk]]
        tallies += kept
        external += kept_external
    return tallies, external


def _tally_key(row: dict, progress: dict, references: bool) -> str:
    """A round's tally's cache key. Ratings are only ever inserted, each with
    its comparison's rating_count + 1 in the same transaction
    (services/ratings.py), and leave only with their comparison (cascade), so
    any change to a round's ratings changes the count of its regular
    comparisons or the sum of their rating_count. opened_at (to the
    microsecond) keeps two databases' rounds with the same id apart in a
    shared cache."""
    return (f"overview-tally:{row['pk']}:{iso(row['opened_at'])}:{progress.get('comparisons', 0)}:"
            f"{progress.get('ratings') or 0}:{'references' if references else 'regular'}")


def _reference_tallies(round_ids: list[int]) -> list[dict]:
    """The same for the comparisons with an external model's answer on one
    side (a loop round's candidate against the reference model), by that
    model: the few rows that need the answers joined."""
    external = Comparison.objects.filter(round_id__in=round_ids, gold_choice="").filter(
        Q(response_a__external_model__isnull=False) | Q(response_b__external_model__isnull=False)
    )
    return list(
        Rating.objects.filter(comparison__in=external)
        .values("comparison__round_id", "choice", "comparison__candidate_is_a",
                "comparison__response_a__external_model_id", "comparison__response_b__external_model_id")
        .annotate(n=Count("pk"))
        .order_by()
    )


def _tally_win(record: list, choice: str, candidate_is_a: bool, n: int) -> None:
    """Add n ratings of `choice` to [wins, ties, losses] of the model shown as
    A (candidate_is_a) or as B."""
    if choice == Rating.Choice.TIE:
        record[1] += n
    elif choice in (Rating.Choice.A, Rating.Choice.B):
        record[0 if (choice == Rating.Choice.A) == candidate_is_a else 2] += n


def campaign_overview(*, campaign: Campaign, now: datetime | None = None) -> dict:
    """{"kind", "rounds", "charts", "now", "recent_runs", "external_models"}.

    rounds: one dict per round, oldest first: its progress (comparisons,
    complete_comparisons, ratings), opened_at / closed_at, first and last
    rating, ratings_per_hour; a loop round also candidate_version and
    baseline_version, vs_previous / vs_base / vs_reference (win records: n,
    wins, ties, losses, win_rate, lower, upper; None where not measured),
    kl_to_base and kl_source, reward_heldout (accuracy, pairs, lower, upper,
    split), run (the round's train run), seconds (per TIME_PARTS) and
    selection (strategy, note, reasons: selectors/selection.py).
    charts: the same as series over rounds, as the page draws them (None for
    an evaluation campaign). now: overview_now.campaign_now."""
    return _overview(campaign, now or timezone.now(), current_only=False)


def campaign_overview_now(*, campaign: Campaign, now: datetime | None = None) -> dict:
    """campaign_overview's "now" alone, reading only the current round's
    ratings: what the page polls every few seconds."""
    return _overview(campaign, now or timezone.now(), current_only=True)["now"]


def _overview(campaign: Campaign, now: datetime, *, current_only: bool) -> dict:
    rounds = list(campaign.rounds.order_by("index").values("pk", "index", "status", "candidate_id", "baseline_id",
                                                             "opened_at", "closed_at", "selection_strategy",
                                                             "selection_note"))
    shown = rounds[-1:] if current_only else rounds
    k = campaign.overlap
    progress = {
        row["round_id"]: row
        for row in Comparison.objects.filter(round_id__in=[r["pk"] for r in shown], gold_choice="")
        .values("round_id")
        .annotate(comparisons=Count("pk"), ratings=Sum("rating_count"), complete=Count("pk", filter=Q(rating_count__gte=k)))
        .order_by()
    }
    # The polled panel needs no tally: its counts come from the comparisons.
    externals = {} if current_only else dict(campaign.external_models.values_list("pk", "name"))
    loop = campaign.kind == Campaign.Kind.LOOP
    tallies, references = ([], []) if current_only else _tallies(shown, progress, references=loop and bool(externals))
    runs = list(
        TrainingRun.objects.filter(campaign=campaign)
        .only("pk", "campaign_id", "round_id", "kind", "stage", "status", "attempts", "progress", "stages", "error",
              "created_at", "started_at", "finished_at", "heartbeat_at")
        .order_by("created_at", "pk")
    )
    if campaign.kind == Campaign.Kind.EVALUATION or current_only:
        by_round = defaultdict(list)
        for t in tallies:
            by_round[t["comparison__round_id"]].append(t)
        rows = [_counts(row, progress, by_round, now) for row in shown]
        overview = {"kind": campaign.kind, "rounds": rows, "charts": None,
                    "now": campaign_now(campaign=campaign, rounds=rounds, rows=rows, runs=runs, now=now)}
        if current_only:
            return overview
        return {**overview, **_listed(rounds, runs, externals)}
    versions = {
        v["pk"]: v for v in PolicyVersion.objects.filter(campaign=campaign).values("pk", "version", "metrics")
    }
    rewards = {
        r["training_run_id"]: r
        for r in RewardModelVersion.objects.filter(campaign=campaign).values("version", "metrics", "training_run_id")
    }
    rows = _loop_rounds(rounds, progress, tallies, references, versions, rewards, externals, runs, now)
    # How each round's comparisons were chosen (annotate/selectors/selection.py).
    reasons = selection_reasons(round_ids=[r["pk"] for r in rounds])
    for row, r in zip(rows, rounds):
        row["selection"] = {"strategy": r["selection_strategy"], "note": r["selection_note"], "reasons": reasons[r["pk"]]}
    return {"kind": campaign.kind, "rounds": rows, "charts": {**_charts(campaign, rows), "selection": selection_chart(rows=rows)},
            "now": campaign_now(campaign=campaign, rounds=rounds, rows=rows, runs=runs, now=now),
            **_listed(rounds, runs, externals)}


def _listed(rounds: list[dict], runs: list[TrainingRun], externals: dict) -> dict:
    """What the page lists besides the figures, from the rows already read:
    the ten newest runs (with their round's index) and the external models
    by name."""
    index = {r["pk"]: r["index"] for r in rounds}
    recent = []
    for run in reversed(runs[-RECENT_RUNS:]):
        run.round_index = index.get(run.round_id)
        recent.append(run)
    return {"recent_runs": recent, "external_models": sorted(externals.items(), key=lambda item: (item[1], item[0]))}


def _round_run(mine: list[TrainingRun]) -> TrainingRun | None:
    """The round's train run, of its train runs (oldest first): the live or
    finished one, else the latest cancelled."""
    kept = [r for r in mine if r.status != TrainingRun.Status.CANCELLED]
    return (kept or mine or [None])[-1]


def _collecting_seconds(row: dict, now: datetime) -> float:
    end = row["closed_at"] or (now if row["status"] == "collecting" else None)
    return max(0.0, seconds_between(row["opened_at"], end) or 0.0)


def _counts(row: dict, progress: dict, tallies_by_round: dict, now: datetime) -> dict:
    """What both kinds of campaign show for a round: its progress and pace."""
    p = progress.get(row["pk"], {})
    comparisons, ratings = p.get("comparisons", 0), p.get("ratings") or 0
    rated = tallies_by_round.get(row["pk"], [])
    hours = _collecting_seconds(row, now) / 3600
    return {
        "round": row["index"],
        "status": row["status"],
        "comparisons": comparisons,
        "complete_comparisons": p.get("complete", 0),
        "ratings": ratings,
        "opened_at": iso(row["opened_at"]),
        "closed_at": iso(row["closed_at"]),
        "first_rating_at": iso(min((t["first"] for t in rated if t["first"]), default=None)),
        "last_rating_at": iso(max((t["last"] for t in rated if t["last"]), default=None)),
        # Over the time the round collected (to now while it still does).
        "ratings_per_hour": ratings / hours if hours > 0 else None,
    }


def _loop_rounds(rounds, progress, tallies, references, versions, rewards, externals, runs, now):
    """A loop round's regular comparisons pair its candidate with its baseline
    (annotate/services/rounds.py, round_open) or, where a reference model is
    set, with the reference's answer; so the ratings of a round, less those
    against an external model, are the candidate's against the baseline."""
    by_round = defaultdict(list)
    for t in tallies:
        by_round[t["comparison__round_id"]].append(t)
    external_by_round = defaultdict(list)
    for t in references:
        external_by_round[t["comparison__round_id"]].append(t)
    # Grouped once: at 100 rounds, each round's scan of every run cost more than a query.
    train_runs = defaultdict(list)
    for run in runs:
        if run.kind == TrainingRun.Kind.TRAIN:
            train_runs[run.round_id].append(run)
    base = next((v for v in versions.values() if v["version"] == 0), None)
    # met[(x, y)]: [wins, ties, losses] of policy version x against y, over every round they met in.
    met = defaultdict(lambda: [0, 0, 0])
    records = {}
    for row in rounds:
        record, reference = [0, 0, 0], [0, 0, 0]
        for t in by_round[row["pk"]]:
            if t["comparison__candidate_is_a"] is not None:
                _tally_win(record, t["choice"], t["comparison__candidate_is_a"], t["n"])
        names = set()
        for t in external_by_round[row["pk"]]:
            candidate_is_a = t["comparison__candidate_is_a"]
            if candidate_is_a is None:
                continue
            _tally_win(record, t["choice"], candidate_is_a, -t["n"])
            _tally_win(reference, t["choice"], candidate_is_a, t["n"])
            other = t["comparison__response_b__external_model_id" if candidate_is_a
                      else "comparison__response_a__external_model_id"]
            names.add(externals.get(other))
        records[row["pk"]] = (record, reference, ", ".join(sorted(n for n in names if n)) or None)
        if row["candidate_id"] and row["baseline_id"] and row["candidate_id"] != row["baseline_id"]:
            wins, ties, losses = record
            for i, n in enumerate((wins, ties, losses)):
                met[(row["candidate_id"], row["baseline_id"])][i] += n
                met[(row["baseline_id"], row["candidate_id"])][2 - i] += n
    rows = []
    for row in rounds:
        counts = _counts(row, progress, by_round, now)
        candidate, baseline = versions.get(row["candidate_id"]), versions.get(row["baseline_id"])
        record, reference, reference_name = records[row["pk"]]
        distinct = candidate and baseline and candidate["pk"] != baseline["pk"]
        previous = _win_record(*record) if distinct else None
        against_base = None
        if candidate and base and candidate["pk"] != base["pk"]:
            against_base = _win_record(*met.get((candidate["pk"], base["pk"]), (0, 0, 0)))
        kl, kl_source = _kl(candidate)
        run = _round_run(train_runs[row["pk"]])
        reward = rewards.get(run.pk) if run else None
        times = {part: None for part in TIME_PARTS}
        times["rating"] = _collecting_seconds(row, now)
        if run is not None:
            times.update(_run_times(run))
        rows.append({
            **counts,
            "candidate_version": candidate["version"] if candidate else None,
            "baseline_version": baseline["version"] if baseline else None,
            "vs_previous": previous,
            "vs_base": against_base,
            "vs_reference": _win_record(*reference) if candidate else None,
            "reference_model": reference_name,
            "kl_to_base": kl,
            "kl_source": kl_source,
            "reward_heldout": _heldout(reward),
            "run": {"id": run.pk, "status": run.status, "stage": run.stage} if run else None,
            "seconds": times,
        })
    return rows


def _series(rows: list[dict], key: str) -> dict:
    """A win-rate series with its interval: values, lo, hi (None: not measured)."""
    records = [r[key] for r in rows]
    return {
        "values": [x["win_rate"] if x else None for x in records],
        "lo": [x["lower"] if x else None for x in records],
        "hi": [x["upper"] if x else None for x in records],
        "n": [x["n"] if x else 0 for x in records],
    }


def _charts(campaign: Campaign, rows: list[dict]) -> dict:
    """The series the page draws, one chart per question, x = round index."""
    heldout = [r["reward_heldout"] for r in rows]
    return {
        "x": [r["round"] for r in rows],
        "win": {"previous": _series(rows, "vs_previous"), "base": _series(rows, "vs_base"),
                "reference": _series(rows, "vs_reference"),
                "reference_model": next((r["reference_model"] for r in rows if r["reference_model"]), None)},
        # What the policy steps are held to, so the chart names it: the base,
        # or (sft_anchor "sft") the latest SFT model the candidate descends from.
        "kl": {"values": [r["kl_to_base"] for r in rows], "budget": campaign.kl_budget,
               "reference": "sft" if campaign.sft_anchor == Campaign.SFTAnchor.SFT else "base"},
        "heldout": {"values": [h["accuracy"] if h else None for h in heldout],
                    "lo": [h["lower"] if h else None for h in heldout],
                    "hi": [h["upper"] if h else None for h in heldout]},
        "rate": {"values": [r["ratings_per_hour"] for r in rows]},
        "minutes": {
            part: [None if r["seconds"][part] is None else r["seconds"][part] / 60 for r in rows]
            for part in TIME_PARTS
        },
    }
