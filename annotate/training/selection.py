"""Which comparisons the next round opens with (docs/training.md,
"Selection"): the generate stage's part, run by the gpu worker.

selection_plan says, before anything is generated, what the round will use:
the campaign's strategy with a pool of selection_pool candidate prompts per
comparison when a reward model is there to score them, else random (the
prompts in turn, as every round before selection) and why. The generate
stage answers the pool, then selection_pick scores it with
rlhf.selection.select and returns the picks, which the stage records in its
outputs and the open stage hands to round_open (annotate/services/rounds.py).
A round never waits for a reward model: without one the plan is random at
once, and says so in the round.

Only candidate-vs-baseline pairs may be picked (Candidate.allowed), so every
regular comparison still pits the new policy against the previous one and
the round's win rate keeps its meaning. torch is imported by rlhf.selection
only when it scores, inside the worker.
"""
from dataclasses import dataclass

from django.conf import settings

from annotate.models import Answer, Campaign, PolicyVersion, Prompt, RewardModelVersion, TrainingRun
from rlhf.store import IntegrityError, ModelStore

NO_REWARD_MODEL = "no reward model yet"
# The rated pairs the uncertainty heads are fit on: the newest ones (by
# round), so the stage's extra scoring (two texts a pair) stays bounded
# whatever the campaign's size; a linear head on a few hundred features
# needs no more.
RATED_ROWS_MAX = 4096


@dataclass
class SelectionPlan:
    asked: str  # the campaign's strategy
    strategy: str  # the one this round uses: asked, or random when it falls back
    note: str  # why it fell back; "" when it did not
    pool: int  # candidate prompts per comparison (1: no more prompts answered than the round shows)
    exploration: float
    reward: RewardModelVersion | None  # the reward model that scores the pool (verified)

    def as_round(self) -> dict:
        """What round_open records when no pick was computed (random)."""
        return {"strategy": self.strategy, "note": self.note, "picks": None}


def _newest_verified_reward(campaign: Campaign, run: TrainingRun | None) -> tuple[RewardModelVersion | None, str]:
    """(the reward model to score with, why none): the run's own (trained on
    every rating so far), else the campaign's newest; one whose files fail
    their sha256 (docs/architecture.md, invariant 4) is passed over, and said."""
    store = ModelStore(settings.MODEL_STORE)
    candidates = list(RewardModelVersion.objects.filter(campaign=campaign).order_by("-version")[:5])
    if run is not None:
        candidates.sort(key=lambda r: r.training_run_id != run.pk)  # stable: the run's first, then newest first
    skipped = []
    for reward in candidates:
        try:
            store.verify(reward.path, reward.sha256)
        except IntegrityError:
            skipped.append(f"v{reward.version}")
            continue
        return reward, ""
    if skipped:
        return None, f"no verified reward model (reward model {', '.join(skipped)} failed its sha256 check)"
    return None, NO_REWARD_MODEL


def round0_selection(*, campaign: Campaign) -> dict:
    """Round 0 opens before any rating, so before any reward model: the
    prompts in turn, and the round says why when the campaign asked for more."""
    note = "" if campaign.selection == Campaign.Selection.RANDOM else _fallback(campaign.selection, NO_REWARD_MODEL)
    return {"strategy": Campaign.Selection.RANDOM, "note": note, "picks": None}


def _fallback(asked: str, why: str) -> str:
    return f"{asked} asked; {why}: random (the prompts in turn)"


def selection_plan(*, campaign: Campaign, run: TrainingRun | None = None) -> SelectionPlan:
    """What the next round uses to choose its comparisons (see the module docstring)."""
    plan = SelectionPlan(asked=campaign.selection, strategy=Campaign.Selection.RANDOM, note="", pool=1,
                         exploration=campaign.selection_exploration, reward=None)
    if campaign.selection == Campaign.Selection.RANDOM:
        return plan
    reward, why = _newest_verified_reward(campaign, run)
    if reward is None:
        plan.note = _fallback(campaign.selection, why)
        return plan
    plan.strategy, plan.pool, plan.reward = campaign.selection, campaign.selection_pool, reward
    return plan


def selection_pick(*, plan: SelectionPlan, campaign: Campaign, index: int, prompts: list[Prompt],
                   candidate: PolicyVersion, baseline: PolicyVersion, rated_rows: list[dict], n: int,
                   samples: list[int]) -> dict:
    """Score the pool (every prompt's candidate and baseline answers of the
    sample indexes `samples`, already generated; not round 0's second sample
    of the base model, say) and pick n comparisons: {"strategy", "note", "reward_version",
    "pool", "picks": [{"prompt", "candidate_sample", "baseline_sample",
    "reason", "score"}]} in the order the strategy ranked them, as round_open
    takes it. Deterministic for a campaign and round."""
    from rlhf.selection import Candidate, SelectionConfig, select

    texts: dict[tuple[int, int], dict[int, str]] = {}
    for prompt_id, policy_id, sample, text in Answer.objects.filter(
        prompt__in=prompts, policy_version__in=[candidate, baseline], sample_index__in=samples
    ).values_list("prompt_id", "policy_version_id", "sample_index", "text"):
        texts.setdefault((prompt_id, policy_id), {})[sample] = text
    candidates, samples = [], {}
    for prompt in prompts:
        new, old = texts.get((prompt.pk, candidate.pk), {}), texts.get((prompt.pk, baseline.pk), {})
        if not new or not old:
            continue  # the generate stage answered it; a prompt without both sides cannot be shown
        news, olds = sorted(new), sorted(old)
        answers = [new[s] for s in news] + [old[s] for s in olds]
        allowed = [(i, len(news) + j) for i in range(len(news)) for j in range(len(olds))]
        candidates.append(Candidate(key=prompt.pk, prompt=prompt.content, answers=answers, allowed=allowed))
        samples[prompt.pk] = (news, olds)
    config = SelectionConfig(strategy=plan.strategy, exploration=plan.exploration, seed=campaign.pk * 100_003 + index)
    pairs = [r for r in rated_rows if "chosen" in r and "rejected" in r]
    newest = sorted(pairs, key=lambda r: r.get("round") or 0)[-RATED_ROWS_MAX:]
    picks = select(candidates, n, config, reward_path=plan.reward.path, rated_rows=newest)
    chosen = []
    for pick in picks:
        news, olds = samples[pick.key]
        a, b = sorted(pick.pair)  # allowed pairs put the candidate's answer first
        chosen.append({"prompt": pick.key, "candidate_sample": news[a], "baseline_sample": olds[b - len(news)],
                       "reason": pick.reason, "score": None if pick.score is None else float(pick.score)})
    return {"strategy": plan.strategy, "note": plan.note, "reward_version": plan.reward.version,
            "pool": len(candidates), "picks": chosen}
