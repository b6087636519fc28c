"""What training reads and what ML engineers look at: the preference pairs a
reward model learns from (weighted by selectors/quality.py's reliability),
the training runs, the model versions with their lineage, and two policy
versions' answers side by side. Training itself: annotate/training/."""
from collections.abc import Iterator

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import QuerySet

from annotate.models import (
    Answer, Campaign, PolicyVersion, Rating, RewardModelVersion, Round, SFTModelVersion, TrainingRun,
)
from annotate.selectors.access import campaigns_readable_by
from annotate.selectors.exports import answer_model_name, chunks
from annotate.selectors.quality import annotator_weights
from annotate.services.aspects import COMBINED, OVERALL, aspect_sign, aspect_weight

User = get_user_model()


def preference_rows(*, campaign: Campaign) -> list[dict]:
    """Every rating of the campaign that prefers a side, as reward-model pairs
    (see preference_rows_iter), in one list for the snapshot stage."""
    return list(preference_rows_iter(campaign=campaign))


def preference_rows_iter(*, campaign: Campaign, round_: Round | None = None, aspect: str = "") -> Iterator[dict]:
    """Every rating that prefers a side, as reward-model pairs in TRL's schema,
    one at a time, read from the database in chunks. Ties and both-bad say
    nothing about which answer is better; they are counted in the snapshot's
    metadata but not trained on. `weight` is the annotator's reliability
    weight over the whole campaign (annotator_weights), whatever `round_`.
    With campaign.demonstration_pairs on, accepted edits follow as pairs too
    (selectors/demonstrations.py); their chosen_model is "demonstration:<id>".

    A campaign with aspects: each row carries `aspects` ({name: 1 the chosen
    answer is better, -1 the rejected one, 0 same}; aspects not judged are
    absent), the data contract rlhf/ reads. `aspect` picks which judgment
    makes the pair (the preferences export's `aspect` parameter): "" the
    overall choice; an aspect's name: that aspect's A or B (margin 0); or
    "combined": the sign of campaign.aspect_weights' sum over the overall
    choice (+1 A, -1 B, 0 tie or both bad) and the aspects (+1 A, -1 B, 0
    same), a 0 sum making no pair (margin 0). The rankings of k-sets follow
    as ranking rows (ranking_rows_iter; no aspects: a k-set is ranked whole),
    and they and the demonstration pairs join the overall rows only."""
    weights = annotator_weights(campaign=campaign)
    names = [a["name"] for a in campaign.aspects]
    ratings = Rating.objects.filter(comparison__round__campaign=campaign)
    if not aspect:
        ratings = ratings.filter(choice__in=[Rating.Choice.A, Rating.Choice.B])
    elif aspect != COMBINED:
        ratings = ratings.filter(aspects__has_key=aspect)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    ratings = ratings.order_by("pk").values_list(
        "pk", "choice", "strength", "aspects", "annotator_id", "comparison_id", "comparison__round__index",
        "comparison__prompt_id", "comparison__prompt__text", "comparison__prompt__turns",
        "comparison__response_a__text", "comparison__response_b__text",
        answer_model_name("comparison__response_a"), answer_model_name("comparison__response_b"),
    )
    # Small chunks: each row carries a prompt and two answers.
    for (rating_id, choice, strength, judged, annotator_id, comparison_id, round_index, prompt_id, text, turns, a, b,
         model_a, model_b) in ratings.iterator(chunk_size=500):
        chosen_is_a, margin = _pair_side(choice, strength, judged, aspect=aspect, names=names,
                                         combination=campaign.aspect_weights)
        if chosen_is_a is None:
            continue
        chosen, rejected = (a, b) if chosen_is_a else (b, a)
        chosen_model, rejected_model = (model_a, model_b) if chosen_is_a else (model_b, model_a)
        row = {
            "prompt": turns if turns else text,  # as Prompt.content
            "chosen": chosen,
            "rejected": rejected,
            "margin": margin,
            "weight": weights.get(annotator_id, 1.0),
            "prompt_id": str(prompt_id),
            "rating_id": rating_id,
            "comparison_id": comparison_id,
            "annotator_id": annotator_id,
            "round": round_index,
            # Who wrote each: "v3" or an external model's name (null: a gold pair's answer).
            "chosen_model": chosen_model,
            "rejected_model": rejected_model,
        }
        if names:
            row["aspects"] = {n: aspect_sign(judged[n], chosen_is_a=chosen_is_a) for n in names if n in judged}
        yield row
    if aspect:
        return  # rankings and demonstration pairs carry no aspects: they join the overall rows only
    yield from ranking_rows_iter(campaign=campaign, round_=round_, weights=weights)
    if campaign.demonstration_pairs:
        # Accepted edits of the better answer, as the campaign asks.
        from annotate.selectors.demonstrations import demonstration_preference_rows_iter

        yield from demonstration_preference_rows_iter(campaign=campaign, round_=round_, weights=weights)


def _pair_side(choice: str, strength: int | None, judged: dict, *, aspect: str, names: list[str],
               combination: dict) -> tuple[bool | None, float]:
    """(whether answer A is the pair's chosen one, None for no pair; the
    margin) by the judgment preference_rows_iter's `aspect` picks."""
    if not aspect:
        # Strength 1..3 as the Bradley-Terry margin, scaled to 0..1.
        return choice == Rating.Choice.A, (strength - 1) / 2.0
    if aspect != COMBINED:
        value = judged.get(aspect)
        return (None if value not in ("A", "B") else value == "A"), 0.0
    overall = {Rating.Choice.A: 1, Rating.Choice.B: -1}.get(choice, 0)
    total = aspect_weight(combination, OVERALL) * overall + sum(
        aspect_weight(combination, n) * aspect_sign(judged[n], chosen_is_a=True) for n in names if n in judged
    )
    return (None if total == 0 else total > 0), 0.0


def reward_aspect_settings(campaign: Campaign) -> dict:
    """The RewardConfig fields a campaign's aspect settings set: with
    aspect_training "heads", its aspects (a head each) and aspect_weights
    (the combination the saved score is); nothing with "overall"."""
    if campaign.aspect_training != Campaign.AspectTraining.HEADS or not campaign.aspects:
        return {}
    return {"aspects": [a["name"] for a in campaign.aspects], "aspect_weights": dict(campaign.aspect_weights)}


def ranking_rows_iter(*, campaign: Campaign, round_: Round | None = None,
                      weights: dict[int, float] | None = None) -> Iterator[dict]:
    """Every ranking of a k-set (Rating.ranking), as the ranking rows of the
    training-data contract: {"prompt", "ranking": [[text, ...], ...]} tie
    groups of answer texts, best first, each answer once; beside it
    "ranking_models" (who wrote each, the same shape), the weight and ids
    as pair rows carry. A ranking whose answers are all tied says nothing
    about which is better and is left out, as a pair's tie is. Two samples
    can be the same text; the contract (rlhf/data.py) names each text once,
    so a repeat keeps its best place only (_ranking_texts)."""
    if weights is None:
        weights = annotator_weights(campaign=campaign)
    ratings = Rating.objects.filter(comparison__round__campaign=campaign, choice=Rating.Choice.RANKING)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    rows = ratings.order_by("pk").values_list(
        "pk", "ranking", "annotator_id", "comparison_id", "comparison__round__index", "comparison__answers",
        "comparison__prompt_id", "comparison__prompt__text", "comparison__prompt__turns",
    )
    for chunk in chunks(rows.iterator(chunk_size=500), 500):
        # The chunk's answers in one statement, (text, model) by id; only
        # this chunk's are held, so memory stays flat.
        wanted = {pk for row in chunk for pk in row[5]}
        answers = {pk: (text, model) for pk, text, model in
                   Answer.objects.filter(pk__in=wanted).values_list("pk", "text", answer_model_name(""))}
        for rating_id, ranking, annotator_id, comparison_id, round_index, shown, prompt_id, text, turns in chunk:
            groups = _ranking_texts(ranking, [answers[pk] for pk in shown])
            if len(groups) < 2:
                continue
            yield {
                "prompt": turns if turns else text,  # as Prompt.content
                "ranking": [[t for t, _ in group] for group in groups],
                "weight": weights.get(annotator_id, 1.0),
                "prompt_id": str(prompt_id),
                "rating_id": rating_id,
                "comparison_id": comparison_id,
                "annotator_id": annotator_id,
                "round": round_index,
                "ranking_models": [[m for _, m in group] for group in groups],
            }


def _ranking_texts(ranking: list[list[int]], shown: list[tuple]) -> list[list[tuple]]:
    """A ranking's tie groups of display positions as groups of (text,
    model), best first, each text once: a sample whose text an answer ranked
    above it (or beside it) already has adds nothing the ranking can train
    on, and a group left empty goes."""
    seen, groups = set(), []
    for group in ranking:
        kept = []
        for position in group:
            text, model = shown[position - 1]
            if text not in seen:
                seen.add(text)
                kept.append((text, model))
        if kept:
            groups.append(kept)
    return groups


# --- training runs -------------------------------------------------------------


def training_runs_for(*, campaign: Campaign) -> QuerySet[TrainingRun]:
    """The campaign's runs, newest first."""
    return campaign.training_runs.order_by("-created_at")


def training_runs_readable_by(*, user: User, roles: set[str] | None = None) -> QuerySet[TrainingRun]:
    """Runs of the campaigns this user may read (selectors/access.py): another
    campaign's run is to them as a missing one."""
    return TrainingRun.objects.filter(campaign__in=campaigns_readable_by(user=user, roles=roles))


# --- model versions ---------------------------------------------------------------


def campaign_policy_versions(*, campaign: Campaign) -> QuerySet[PolicyVersion]:
    """The campaign's policy versions, oldest first, with their parent and reward model."""
    return campaign.policy_versions.select_related("parent", "reward_model", "sft_model").order_by("version")


def campaign_sft_versions(*, campaign: Campaign) -> QuerySet[SFTModelVersion]:
    """The campaign's SFT models, oldest first, with the policy each started from."""
    return campaign.sft_versions.select_related("start").order_by("version")


def campaign_reward_versions(*, campaign: Campaign) -> QuerySet[RewardModelVersion]:
    """The campaign's reward-model versions, oldest first, with their parent."""
    return campaign.reward_versions.select_related("parent").order_by("version")


def campaign_lineage(*, campaign: Campaign) -> dict:
    """{policies, rewards, sft}, newest first: each version with where it came
    from (parent, run, reward model, the SFT model its step started from;
    an SFT model: the policy it started from and its demonstrations' snapshot). Each policy also carries
    `dataset_sha256`, the snapshot it was trained on ("" if none), and
    `dataset_run`, the run whose snapshot can be downloaded (or None)."""
    # A run's metric history, stages and config can be megabytes each (and a
    # campaign has a run per round); the table shows none of them.
    heavy = [f"training_run__{f}" for f in ("metrics_history", "metrics", "stages", "config")]
    policies = list(
        campaign.policy_versions.select_related("parent", "reward_model", "training_run", "sft_model")
        .defer(*heavy)
        .order_by("-version")
    )
    for p in policies:
        # The snapshot the reward model learnt from; the policy's own run read the same one.
        p.dataset_sha256 = (p.reward_model and p.reward_model.dataset_sha256) or (
            p.training_run and p.training_run.dataset_sha256
        ) or ""
        p.dataset_run = p.training_run if p.training_run and p.training_run.dataset_path else None
    rewards = campaign.reward_versions.select_related("parent", "training_run").defer(*heavy).order_by("-version")
    sft = list(campaign.sft_versions.select_related("start").order_by("-version"))
    return {"policies": policies, "rewards": rewards, "sft": sft}


def _policy_version(*, campaign: Campaign, label: str | None) -> PolicyVersion | None:
    """The campaign's policy version named by `label` ("3" or "v3"); None
    if the label names none, or the campaign has no such version."""
    if label is None or not label.strip().lstrip("v").isdigit():
        return None
    return PolicyVersion.objects.filter(campaign=campaign, version=int(label.strip().lstrip("v"))).first()


def policy_versions_compared(
    *, campaign: Campaign, a: str | None, b: str | None, page: str | int | None, per_page: int
) -> dict:
    """Two of the campaign's policy versions, named by their labels ("3" or
    "v3"), side by side: for the prompts both answered, one page of (prompt,
    a's first answer, b's first answer) in prompt order. {versions: every
    version number of the campaign, a, b: the versions (None where a label
    names none), page and pairs: None and [] unless both are found}. With
    neither label given, the latest two: the newest as b, the one before as a
    (what an engineer opens the page to see after a round)."""
    versions = list(campaign.policy_versions.order_by("version").values_list("version", flat=True))
    if a is None and b is None and len(versions) >= 2:
        a, b = str(versions[-2]), str(versions[-1])
    version_a, version_b = _policy_version(campaign=campaign, label=a), _policy_version(campaign=campaign, label=b)
    compared = {"versions": versions, "a": version_a, "b": version_b, "page": None, "pairs": []}
    if version_a is None or version_b is None:
        return compared
    answered_by_b = Answer.objects.filter(policy_version=version_b, sample_index=0).values("prompt_id")
    left = (
        Answer.objects.filter(policy_version=version_a, sample_index=0, prompt_id__in=answered_by_b)
        .select_related("prompt")
        .order_by("prompt_id")
    )
    shown = Paginator(left, per_page).get_page(page)
    right = {
        r.prompt_id: r
        for r in Answer.objects.filter(
            policy_version=version_b, sample_index=0, prompt_id__in=[r.prompt_id for r in shown]
        )
    }
    compared.update(page=shown, pairs=[(r.prompt, r, right[r.prompt_id]) for r in shown])
    return compared


# How many of a campaign's latest finished training runs time the next one.
ETA_RUNS = 5


def stage_seconds_typical(*, campaign: Campaign) -> dict[str, float]:
    """{stage: median seconds} over the campaign's latest ETA_RUNS succeeded
    train runs, from each stage's record (`seconds` of its successful
    attempt); a stage no run has timed is missing."""
    from statistics import median

    from annotate.training.stages import STAGES

    runs = (TrainingRun.objects.filter(campaign=campaign, kind=TrainingRun.Kind.TRAIN,
                                       status=TrainingRun.Status.SUCCEEDED)
            .order_by("-pk").values_list("stages", flat=True)[:ETA_RUNS])
    timed: dict[str, list[float]] = {}
    for stages in runs:
        for name in STAGES[TrainingRun.Kind.TRAIN]:
            seconds = (stages or {}).get(name, {}).get("seconds")
            if isinstance(seconds, (int, float)):
                timed.setdefault(name, []).append(float(seconds))
    return {name: median(values) for name, values in timed.items()}


def round_training_eta(*, round_: Round) -> dict:
    """What the rating page says while a round trains: {run status, stage,
    eta_seconds}: how long the stages left of the round's train run should
    take, timed by earlier rounds (stage_seconds_typical; the stage running
    counts what is left of its typical time). eta_seconds is None when no
    train run exists yet or some stage left was never timed (the first
    round)."""
    from datetime import datetime

    from django.utils import timezone

    from annotate.training.stages import STAGES, StageStatus

    run = (round_.training_runs.filter(kind=TrainingRun.Kind.TRAIN).exclude(status=TrainingRun.Status.CANCELLED)
           .order_by("-pk").only("pk", "status", "stage", "stages").first())
    if run is None:
        return {"run_status": None, "stage": "", "eta_seconds": None}
    typical = stage_seconds_typical(campaign=round_.campaign)
    left, now = 0.0, timezone.now()
    for name in STAGES[TrainingRun.Kind.TRAIN]:
        record = (run.stages or {}).get(name, {})
        if record.get("status") == StageStatus.SUCCEEDED:
            continue
        if name not in typical:
            left = None
            break
        seconds = typical[name]
        if record.get("status") == StageStatus.RUNNING and record.get("started_at"):
            seconds -= (now - datetime.fromisoformat(record["started_at"])).total_seconds()
        left += max(0.0, seconds)
    return {"run_status": run.status, "stage": run.stage,
            "eta_seconds": None if left is None else round(left)}
