"""Bradley–Terry reward model training (scoring with a trained one: rlhf.scoring).

Loss per pair: -logsigmoid(r_chosen - r_rejected - margin), weighted by the
row's `weight`; optional centering term (TRL's center_rewards_coefficient)
keeps rewards near zero so the RLOO KL coefficient means the same across runs.
A ranking row is one Plackett–Luce term (rlhf.plackett_luce); with
RewardConfig.aspects each aspect has a head of its own, trained on the pairs
that rate it, and the checkpoint is saved with their combination as its one
score (rlhf.scoring; docs/rlhf.md, "Aspects" and "Rankings").
Batches run packed (rlhf.packing) or padded; the metrics are reward/* while
training, eval/reward/val_* on the validation pairs (early stopping reads
them) and eval/reward/* on the test pairs, which only report (split_rows;
rlhf/__init__.py lists the metrics).

One file over the usual length: the trainer is one readable loop, and the
loss, the eval and the scorer it uses must agree on how a pair (and a
ranking, and an aspect head) is batched and scored; split, they would drift
apart.

    python -m rlhf.train_reward --data pairs.jsonl --base PATH --out DIR [--epochs 2 --lr 1e-5]
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from enum import IntEnum
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from rlhf import _torch
from rlhf.chat import ENCODE_KWARGS, format_pair_text
from rlhf.checkpoint import save_checkpoint, unwrap_for_save
from rlhf.configs import aspect_weight_vector
from rlhf.configs import RewardConfig, check_config  # RewardConfig re-exported: callers import it from here too
from rlhf.data import prompt_key, split_by_prompt, validate_preference_rows
from rlhf.logprobs import pad_right
from rlhf.packing import TokenPair, TokenRanking, pack_groups, pack_pairs, packed_group_rewards, packed_rewards
from rlhf.plackett_luce import implied_pairs, ranking_log_likelihood
# Scoring lives in rlhf.scoring; re-exported, as callers import it from here too.
from rlhf.scoring import RewardScorer, save_aspect_heads, score, sequence_rewards  # noqa: F401

MetricsFn = Callable[[int, dict], None]
ProgressFn = Callable[[float], None]
# Below this many distinct prompts a held-out split is too noisy to mean anything.
MIN_PROMPTS_FOR_SPLIT = 4


def tokenize_pairs(tokenizer, rows: list[dict], max_length: int, aspects: list[str] = ()) -> list[TokenPair]:
    """Tokenize each row's two texts once (training reuses them every epoch); with `aspects`, each pair
    carries its label per aspect head (0 where the row does not rate that aspect)."""
    out = []
    for r in rows:
        chosen, rejected = (tokenizer(format_pair_text(tokenizer, r["prompt"], r[k]), **ENCODE_KWARGS)["input_ids"]
                            for k in ("chosen", "rejected"))
        labels = tuple((r.get("aspects") or {}).get(a, 0) for a in aspects)
        # Keep the end: the reward is read at the last token, so cutting the end
        # would score a text the model never finished.
        out.append(TokenPair(chosen[-max_length:], rejected[-max_length:], r.get("margin", 0.0), r.get("weight", 1.0),
                             labels))
    return out


def tokenize_rankings(tokenizer, rows: list[dict], max_length: int) -> list[TokenRanking]:
    """Tokenize each ranking row's answers once; tie groups become index lists into them."""
    out = []
    for r in rows:
        texts = [t for g in r["ranking"] for t in g]
        ids = tokenizer([format_pair_text(tokenizer, r["prompt"], t) for t in texts], **ENCODE_KWARGS)["input_ids"]
        groups, i = [], 0
        for g in r["ranking"]:
            groups.append(list(range(i, i + len(g))))
            i += len(g)
        out.append(TokenRanking([x[-max_length:] for x in ids], groups, r.get("weight", 1.0)))
    return out


def _pair_rewards(model, pairs: list[TokenPair], config: RewardConfig, pad_id: int, dev):
    """(r_chosen, r_rejected, (tokens, computed, slots)) of a batch, packed or padded per config."""
    if config.packing:
        packed = pack_pairs(pairs, pad_id, share_prefix=config.share_prefix, row_tokens=config.pack_length).to(dev)
        with _torch.autocast(dev):
            r_c, r_r = packed_rewards(model, packed)
        return r_c, r_r, (packed.tokens, packed.computed, packed.slots)
    input_ids, mask = pad_right([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, dev)
    with _torch.autocast(dev):
        rewards = sequence_rewards(model, input_ids, mask)
    tokens = sum(len(p.chosen) + len(p.rejected) for p in pairs)
    return rewards[: len(pairs)], rewards[len(pairs) :], (tokens, tokens, input_ids.numel())


def _aspect_terms(r_c: torch.Tensor, r_r: torch.Tensor, pairs: list[TokenPair], dev):
    """Per aspect head: (Bradley–Terry loss per pair, 1 where the pair counts, 1 where the head got it right),
    each (pairs, aspects). A "same" (0) or unrated aspect counts nowhere: Bradley–Terry has no tie, and a
    tie likelihood would need a parameter of its own (docs/rlhf.md)."""
    labels = torch.tensor([p.aspects for p in pairs], dtype=torch.float32).to(dev, non_blocking=True)
    diff = (r_c[:, 1:] - r_r[:, 1:]) * labels
    rated = (labels != 0).float()
    return -F.logsigmoid(diff) * rated, rated, (diff > 0).float() * rated


def _pair_loss(model, pairs: list[TokenPair], config: RewardConfig, pad_id: int, dev,
               weight_total: float | None = None, count_total: int | None = None):
    """Weighted Bradley–Terry loss (+ centering) of a batch; returns (loss, r_chosen, r_rejected, token counts).

    With aspect heads the model scores (pairs, 1 + aspects): the overall
    head (column 0) learns the overall choice as without heads, each aspect
    head the pairs that rate it, every rated aspect one more term of the
    pair's weight; r_chosen / r_rejected returned are the overall head's.
    weight_total / count_total normalise by a larger global batch instead of
    this one, so that per-rank losses of a data-parallel step add up to the
    loss of the whole batch.
    """
    r_c, r_r, counts = _pair_rewards(model, pairs, config, pad_id, dev)
    heads = r_c.dim() == 2
    o_c, o_r = (r_c[:, 0], r_r[:, 0]) if heads else (r_c, r_r)
    margin = torch.tensor([p.margin if config.margin else 0.0 for p in pairs]).to(dev, non_blocking=True)
    weight = torch.tensor([p.weight for p in pairs]).to(dev, non_blocking=True)
    if weight_total is None:
        weight_total = sum(p.weight for p in pairs)
    per_pair = -F.logsigmoid(o_c - o_r - margin)
    if heads:
        per_pair = per_pair + _aspect_terms(r_c, r_r, pairs, dev)[0].sum(dim=1)
    loss = (per_pair * weight).sum() / max(weight_total, 1e-8)
    if config.center_rewards_coefficient:
        loss = loss + config.center_rewards_coefficient * ((r_c + r_r) ** 2).sum() / (count_total or len(pairs))
    return loss, o_c.detach(), o_r.detach(), counts


def _ranking_rewards(model, rankings: list[TokenRanking], config: RewardConfig, pad_id: int, dev):
    """(each answer's score, rankings in order: (answers,) or (answers, heads); token counts), packed or padded."""
    if config.packing:
        packed = pack_groups([r.answers for r in rankings], pad_id, share_prefix=config.share_prefix,
                             row_tokens=config.pack_length).to(dev)
        with _torch.autocast(dev):
            scores = packed_group_rewards(model, packed)
        return scores, (packed.tokens, packed.computed, packed.input_ids.numel())
    answers = [a for r in rankings for a in r.answers]
    input_ids, mask = pad_right(answers, pad_id, dev)
    with _torch.autocast(dev):
        scores = sequence_rewards(model, input_ids, mask)
    tokens = sum(len(a) for a in answers)
    return scores, (tokens, tokens, input_ids.numel())


def _ranking_loss(model, rankings: list[TokenRanking], config: RewardConfig, pad_id: int, dev,
                  weight_total: float | None = None, count_total: int | None = None):
    """Weighted Plackett–Luce loss (+ centering) of a batch of rankings, each one judgement
    (rlhf.plackett_luce); returns (loss, sums, token counts), sums as RankSums (the overall head's)."""
    scores, counts = _ranking_rewards(model, rankings, config, pad_id, dev)
    overall = scores[:, 0] if scores.dim() == 2 else scores
    if weight_total is None:
        weight_total = sum(r.weight for r in rankings)
    nll, center = overall.new_zeros(()), overall.new_zeros(())
    sums = [0.0] * len(RankSums)
    start = 0
    for r in rankings:
        s = overall[start : start + len(r.answers)]
        start += len(r.answers)
        nll = nll + r.weight * -ranking_log_likelihood(s, r.groups)
        # (2 * mean)^2: the pairs' (r_c + r_r)^2 for a ranking of any k.
        center = center + (2 * s.mean()) ** 2
        _ranking_sums(sums, s.detach(), r.groups)
    loss = nll / max(weight_total, 1e-8)
    if config.center_rewards_coefficient:
        loss = loss + config.center_rewards_coefficient * center / (count_total or len(rankings))
    sums[RankSums.LOSS] = float(nll.detach())
    sums[RankSums.CENTER] = float(center.detach())
    sums[RankSums.WEIGHT] = sum(r.weight for r in rankings)
    sums[RankSums.RANKINGS] = len(rankings)
    return loss, sums, counts


class RankSums(IntEnum):
    """Host-side sums over rankings (their implied pairs: answers of different tie groups)."""

    LOSS = 0  # weighted Plackett–Luce negative log-likelihood
    WEIGHT = 1
    CENTER = 2  # (2 * mean score)^2 per ranking
    CORRECT = 3  # implied pairs scored better > worse
    PAIRS = 4
    MARGIN = 5  # better - worse, over implied pairs
    REWARD = 6  # every answer's score
    REWARD_SQ = 7
    ANSWERS = 8
    RANKINGS = 9


def _ranking_sums(sums: list[float], s: torch.Tensor, groups: list[list[int]]) -> None:
    vals = s.double().tolist()
    for i, j in implied_pairs(groups):
        sums[RankSums.CORRECT] += vals[i] > vals[j]
        sums[RankSums.PAIRS] += 1
        sums[RankSums.MARGIN] += vals[i] - vals[j]
    sums[RankSums.REWARD] += sum(vals)
    sums[RankSums.REWARD_SQ] += sum(v * v for v in vals)
    sums[RankSums.ANSWERS] += len(vals)


def epoch_batches(lengths: list[int], batch_size: int, rng: random.Random, bucketing: bool) -> list[list[int]]:
    """Indices of each batch of one epoch: shuffled, or shuffled then grouped by length."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if bucketing:
        # Sort within windows of 50 batches: batches hold pairs of similar
        # length, while which pairs meet in a window stays random.
        window = 50 * batch_size
        order = [i for w in range(0, len(order), window) for i in sorted(order[w : w + window], key=lengths.__getitem__)]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if bucketing:
        rng.shuffle(batches)
    return batches


def freeze_lower_layers(model, keep: int) -> None:
    """Leave only the top `keep` transformer blocks, the final norm and the score head trainable (0: all).

    Few human pairs fit fewer weights with less room to memorise the
    training prompts, and the pretrained lower blocks already give features
    a head can use (bench/RESULTS.md, real-data runs). Frozen blocks at the
    bottom build no autograd graph, so the backward pass stops at the
    lowest trainable block.
    """
    if keep <= 0:  # train_reward refuses a negative count before loading the model
        return
    backbone = getattr(model, model.base_model_prefix)
    blocks = getattr(backbone, "layers", None) or getattr(backbone, "h", None)  # Llama/Qwen/Mistral; GPT-2
    if blocks is None:
        raise ValueError(f"trainable_layers: cannot find the transformer blocks of {type(backbone).__name__}")
    backbone.requires_grad_(False)
    for block in list(blocks)[-keep:]:
        block.requires_grad_(True)
    for name in ("norm", "ln_f"):  # the final norm feeds the head directly
        if isinstance(getattr(backbone, name, None), torch.nn.Module):
            getattr(backbone, name).requires_grad_(True)


# Calibration: accuracy of pairs grouped by how sure the model is (|r_c - r_r|).
# A calibrated model is right more often where its predicted margin is larger.
MARGIN_BUCKETS = [(0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, math.inf)]


def bucket_name(lo: float, hi: float) -> str:
    """A margin bucket as metric names spell it: "0-0.5", "2-inf"."""
    fmt = lambda x: "inf" if math.isinf(x) else f"{x:g}"  # noqa: E731
    return f"{fmt(lo)}-{fmt(hi)}"


class EvalSums(IntEnum):
    """Positions of the held-out sums (float64, reduced across ranks in one
    collective); the (correct, pairs) of margin bucket b follow at
    BUCKETS + 2b and BUCKETS + 2b + 1."""

    LOSS = 0  # weighted Bradley–Terry loss
    WEIGHT = 1
    CENTER = 2  # (r_c + r_r)^2, the centering term
    CORRECT = 3  # pairs with r_c > r_r
    PAIRS = 4
    MARGIN = 5  # r_c - r_r
    REWARD = 6  # r_c + r_r
    REWARD_SQ = 7  # r_c^2 + r_r^2
    BUCKETS = 8


@torch.no_grad()
def evaluate_pairs(model, pairs: list[TokenPair], config: RewardConfig, pad_id: int, dev,
                   dist: _torch.Dist | None = None, on_batch: Callable[[], None] | None = None) -> dict:
    """eval/reward/* metrics over `pairs`; under several processes each rank scores its share.
    `on_batch` is called after each batch this rank scored (progress). With aspect heads the pair metrics
    are the overall head's, the loss includes the aspect terms (the training objective), and each aspect
    gets eval/reward/aspect_<name>_accuracy and _pairs; eval/reward/combined_accuracy is the checkpoint's
    score (the combination) against the overall choice."""
    dist = dist or _torch.Dist()
    mine = dist.shard(pairs)
    sums = torch.zeros(EvalSums.BUCKETS + 2 * len(MARGIN_BUCKETS), dtype=torch.float64, device=dev)
    # Per aspect (loss, correct, rated), then the combination's (correct, 0, pairs).
    aspect_sums = torch.zeros(len(config.aspects) + 1, 3, dtype=torch.float64, device=dev)
    combine = torch.tensor(aspect_weight_vector(config.aspects, config.aspect_weights), device=dev)
    # Longest first, so a batch holds pairs of similar length (eval order does not matter).
    mine = sorted(mine, key=lambda p: -len(p.chosen) - len(p.rejected))
    for i in range(0, len(mine), config.batch_size):
        batch = mine[i : i + config.batch_size]
        r_c, r_r, _ = _pair_rewards(model, batch, config, pad_id, dev)
        margin = torch.tensor([p.margin if config.margin else 0.0 for p in batch], device=dev)
        weight = torch.tensor([p.weight for p in batch], device=dev)
        sums[EvalSums.CENTER] += ((r_c + r_r) ** 2).sum().double()
        if r_c.dim() == 2:
            a_loss, rated, a_right = _aspect_terms(r_c, r_r, batch, dev)
            sums[EvalSums.LOSS] += (a_loss.sum(dim=1) * weight).sum().double()
            aspect_sums[:-1] += torch.stack([a_loss.sum(0), a_right.sum(0), rated.sum(0)], dim=1).double()
            aspect_sums[-1, 0] += (((r_c - r_r) @ combine) > 0).double().sum()
            aspect_sums[-1, 2] += len(batch)
            r_c, r_r = r_c[:, 0], r_r[:, 0]
        diff = r_c - r_r
        right = (diff > 0).double()
        sums[EvalSums.LOSS] += (-F.logsigmoid(diff - margin) * weight).sum().double()
        sums[EvalSums.WEIGHT] += weight.sum().double()
        sums[EvalSums.CORRECT] += right.sum()
        sums[EvalSums.PAIRS] += len(batch)
        sums[EvalSums.MARGIN] += diff.sum().double()
        both = torch.cat([r_c, r_r]).double()
        sums[EvalSums.REWARD] += both.sum()
        sums[EvalSums.REWARD_SQ] += (both**2).sum()
        for b, (lo, hi) in enumerate(MARGIN_BUCKETS):
            in_bucket = (diff.abs() >= lo) & (diff.abs() < hi)
            sums[EvalSums.BUCKETS + 2 * b] += right[in_bucket].sum()
            sums[EvalSums.BUCKETS + 2 * b + 1] += in_bucket.sum()
        if on_batch:
            on_batch()
    dist.sum_(sums)
    s = sums.tolist()
    if config.aspects:
        dist.sum_(aspect_sums)
    n, n_r = max(s[EvalSums.PAIRS], 1.0), max(2 * s[EvalSums.PAIRS], 1.0)
    loss = s[EvalSums.LOSS] / max(s[EvalSums.WEIGHT], 1e-8)
    if config.center_rewards_coefficient:
        loss += config.center_rewards_coefficient * s[EvalSums.CENTER] / n
    mean = s[EvalSums.REWARD] / n_r
    out = {
        "eval/reward/loss": loss,
        "eval/reward/accuracy": s[EvalSums.CORRECT] / n,
        "eval/reward/margin": s[EvalSums.MARGIN] / n,
        "eval/reward/reward_mean": mean,
        "eval/reward/reward_std": math.sqrt(max(s[EvalSums.REWARD_SQ] / n_r - mean * mean, 0.0)),
    }
    for b, (lo, hi) in enumerate(MARGIN_BUCKETS):
        correct, count = s[EvalSums.BUCKETS + 2 * b], s[EvalSums.BUCKETS + 2 * b + 1]
        if count:  # an empty bucket has no accuracy; leaving it out keeps the metrics JSON-clean
            out[f"eval/reward/accuracy_margin_{bucket_name(lo, hi)}"] = correct / count
            out[f"eval/reward/pairs_margin_{bucket_name(lo, hi)}"] = int(count)
    if config.aspects and s[EvalSums.PAIRS]:  # rankings carry no aspects: a split of rankings only has none
        a = aspect_sums.tolist()
        for name, (_, correct, rated) in zip(config.aspects, a):
            out[f"eval/reward/aspect_{name}_pairs"] = int(rated)
            if rated:  # an aspect nobody rated in this split has no accuracy
                out[f"eval/reward/aspect_{name}_accuracy"] = correct / rated
        out["eval/reward/combined_accuracy"] = a[-1][0] / n
    return out


@torch.no_grad()
def evaluate_rankings(model, rankings: list[TokenRanking], config: RewardConfig, pad_id: int, dev,
                      dist: _torch.Dist | None = None, on_batch: Callable[[], None] | None = None) -> list[float]:
    """RankSums over `rankings` (each rank scores its share; summed across ranks)."""
    dist = dist or _torch.Dist()
    mine = sorted(dist.shard(rankings), key=lambda r: -sum(len(a) for a in r.answers))
    total = [0.0] * len(RankSums)
    for i in range(0, len(mine), config.batch_size):
        _, sums, _ = _ranking_loss(model, mine[i : i + config.batch_size], config, pad_id, dev)
        total = [a + b for a, b in zip(total, sums)]
        if on_batch:
            on_batch()
    return dist.sum_(torch.tensor(total, dtype=torch.float64, device=dev)).tolist()


def merge_ranking_metrics(out: dict, r: list[float], config: RewardConfig, pair_weight: float, n_pairs: int) -> dict:
    """Fold ranking sums into eval/reward/* metrics: eval/reward/ranking_* of their own, and the loss (what
    early stopping reads) over pairs and rankings together, each row weighted as one judgement; with no
    pair rows, accuracy and margin are the rankings' implied pairs'."""
    n = max(r[RankSums.RANKINGS], 1.0)
    rank_loss = r[RankSums.LOSS] / max(r[RankSums.WEIGHT], 1e-8)
    if config.center_rewards_coefficient:
        rank_loss += config.center_rewards_coefficient * r[RankSums.CENTER] / n
    out["eval/reward/ranking_loss"] = rank_loss
    out["eval/reward/ranking_accuracy"] = r[RankSums.CORRECT] / max(r[RankSums.PAIRS], 1.0)
    out["eval/reward/rankings"] = int(r[RankSums.RANKINGS])
    if not n_pairs:
        mean = r[RankSums.REWARD] / max(r[RankSums.ANSWERS], 1.0)
        out.update({
            "eval/reward/loss": rank_loss,
            "eval/reward/accuracy": out["eval/reward/ranking_accuracy"],
            "eval/reward/margin": r[RankSums.MARGIN] / max(r[RankSums.PAIRS], 1.0),
            "eval/reward/reward_mean": mean,
            "eval/reward/reward_std": math.sqrt(max(r[RankSums.REWARD_SQ] / max(r[RankSums.ANSWERS], 1.0) - mean * mean, 0.0)),
        })
    else:
        w = pair_weight + r[RankSums.WEIGHT]
        out["eval/reward/loss"] = (out["eval/reward/loss"] * pair_weight + rank_loss * r[RankSums.WEIGHT]) / max(w, 1e-8)
    return out


class Splits(NamedTuple):
    train: list[dict]
    val: list[dict]  # early stopping (and whoever tunes settings) reads these; [] with val_fraction 0
    test: list[dict]  # only reported: eval/reward/accuracy and the rest
    val_split: str  # "heldout", or "train" when too few prompts are left to hold any out
    test_split: str


def split_rows(rows: list[dict], config: RewardConfig, eval_rows: list[dict] | None = None) -> Splits:
    """Train / validation / test by prompt (never one prompt in two splits).

    Test first, with config.seed, exactly as before validation existed, so a
    seed's test questions stay the same: eval_fraction of the prompts, or
    the caller's eval_rows. Validation is then val_fraction of the prompts
    left for training, split by the same seed. Choosing weights (patience)
    or settings on the test split would report a figure chosen for being
    high; the validation split takes that role and the test split stays
    untouched. With too few prompts to hold any out, a split is the
    training rows and says so ("train").
    """
    if eval_rows:
        train, test, test_split = rows, validate_preference_rows(eval_rows, "eval_rows"), "heldout"
    elif len({prompt_key(r) for r in rows}) >= MIN_PROMPTS_FOR_SPLIT and config.eval_fraction > 0:
        train, test = split_by_prompt(rows, config.eval_fraction, config.seed)
        test_split = "heldout"
    else:
        # Too few prompts to hold any out; eval on train and say so in metrics
        # rather than report a held-out number that isn't one.
        train, test, test_split = rows, rows, "train"
    if not config.val_fraction:
        return Splits(train, [], test, "", test_split)
    if len({prompt_key(r) for r in train}) >= MIN_PROMPTS_FOR_SPLIT:
        train, val = split_by_prompt(train, config.val_fraction, config.seed)
        return Splits(train, val, test, "heldout", test_split)
    return Splits(train, train, test, "train", test_split)


class TrainSums(IntEnum):
    """Positions of a training window's sums (float64, reduced across ranks in one collective)."""

    LOSS = 0  # per step: the step's loss (each rank's share of it)
    CORRECT = 1  # pairs with r_c > r_r
    MARGIN = 2  # r_c - r_r
    PAIRS = 3
    REWARD = 4  # r_c + r_r
    REWARD_SQ = 5  # r_c^2 + r_r^2
    STEPS = 6
    SCORES = 7  # answers scored (2 a pair, k a ranking): what reward_mean divides by
    TOKENS = 8  # chosen + rejected tokens, as TRL's num_tokens counts them
    COMPUTED = 9  # positions the model ran, padding excluded
    PADDED = 10  # positions the model ran, padding included


def train_reward(
    config: RewardConfig,
    rows: list[dict],
    base_path: str,
    out_dir: str | Path,
    on_metrics: MetricsFn | None = None,
    on_progress: ProgressFn | None = None,
    meta: dict | None = None,
    eval_rows: list[dict] | None = None,
) -> dict:
    """Train a scalar reward head on preference rows; save to out_dir; return final metrics.

    `meta` is merged into meta.json (dataset sha256, parent version, ...).
    `eval_rows`, when given, is the test set (the caller made that split);
    otherwise rows are split by prompt. Either way the validation split
    comes out of the training rows (split_rows).
    Under torchrun / accelerate launch every rank runs this with the same
    arguments; each takes its share of every batch, gradients are summed, and
    only rank 0 reports and saves (the others return the same metrics).
    """
    from transformers import AutoModelForSequenceClassification

    # --- setup: data split, model, optimizer ---
    rows = validate_preference_rows(rows)
    if not rows:
        raise ValueError("train_reward got no preference rows")
    check_config("reward", config)
    splits = split_rows(rows, config, eval_rows)
    train_rows, val_rows, test_rows = splits.train, splits.val, splits.test
    if eval_rows:
        rows = rows + test_rows
    n_prompts = len({prompt_key(r) for r in rows})
    dist = _torch.Dist()
    on_metrics = on_metrics if dist.main else None
    on_progress = on_progress if dist.main else None
    dev = dist.device()
    _torch.seed_all(config.seed)
    tokenizer = _torch.load_tokenizer(base_path, padding_side="right")
    pad_id = tokenizer.pad_token_id

    def tokenize(split: list[dict]) -> tuple[list[TokenPair], list[TokenRanking]]:
        """A split's pair rows and ranking rows, tokenized."""
        return (tokenize_pairs(tokenizer, [r for r in split if "ranking" not in r], config.max_length, config.aspects),
                tokenize_rankings(tokenizer, [r for r in split if "ranking" in r], config.max_length))

    train_pairs, train_ranks = tokenize(train_rows)
    # A split that fell back to the training rows reuses their tokens.
    test_pairs, test_ranks = (train_pairs, train_ranks) if test_rows is train_rows else tokenize(test_rows)
    val_pairs, val_ranks = (train_pairs, train_ranks) if val_rows is train_rows else tokenize(val_rows)
    # SDPA: the packed path's 4D mask goes straight to it (flash-attention-2 would ignore the mask).
    # With aspects, one score column per head: overall first, then config.aspects (saved as their combination).
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1 + len(config.aspects),
                                                               dtype=torch.float32, attn_implementation="sdpa")
    model.config.pad_token_id = pad_id
    peft_model = None
    freeze_lower_layers(model, config.trainable_layers)
    if config.lora_r:
        peft_model = _torch.add_lora(model, config, "SEQ_CLS", modules_to_save=["score"])
        model = peft_model.get_base_model()
    model.to(dev)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.torch_compile:
        # Compiled in place: the state dict keeps its names; shapes vary per batch, hence dynamic.
        getattr(model, model.base_model_prefix).compile(dynamic=True)
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused AdamW: one kernel for all parameters instead of several per tensor (CUDA only).
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=dev.type == "cuda")
    # Training items: the pairs, then the rankings (index len(train_pairs) + i); a batch may hold both.
    n_items = len(train_pairs) + len(train_ranks)
    steps_per_epoch = math.ceil(n_items / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    lengths = [len(p.chosen) + len(p.rejected) for p in train_pairs] + [sum(map(len, r.answers)) for r in train_ranks]
    item_weight = [p.weight for p in train_pairs] + [r.weight for r in train_ranks]
    order_rng = random.Random(config.seed)
    step, best_loss, best_state, bad_evals, stopped_early = 0, float("inf"), None, 0, False
    kept_step = 0  # the step of the weights early stopping keeps
    metrics: dict = {}
    last_train: dict = {}  # the latest reward/* window, kept in the final metrics
    window = torch.zeros(len(TrainSums), dtype=torch.float64, device=dev)
    seen = [0.0, 0.0, 0.0]  # tokens, computed, padded since the start (all ranks)
    window_start = time.perf_counter()
    # Progress counts work, not steps: an eval batch is as much work as a
    # training step's forward pass, and on a small round the evals are a
    # large share of the stage (a fraction of steps alone sat at 0 through
    # the loading and jumped to 1 before the last eval). The plan: every
    # training step, the evals the schedule holds, and the closing eval when
    # one is due; below 1 until the checkpoint is saved.
    # each eval scores the test split and, when there is one, the validation split
    n_batches = lambda items: math.ceil(len(dist.shard(items)) / config.batch_size)  # noqa: E731
    eval_batches = n_batches(test_pairs) + n_batches(test_ranks) + (
        n_batches(val_pairs) + n_batches(val_ranks) if val_rows else 0)
    planned_evals = (total_steps // config.eval_every + 1) if config.eval_every else (
        config.epochs + (1 if config.patience is not None else 0))
    planned = max(total_steps + planned_evals * eval_batches, 1)
    done_units = 0

    def advance() -> None:
        nonlocal done_units
        done_units += 1
        if on_progress:
            on_progress(min(done_units / planned, 0.99))

    def evaluate_split(pairs: list[TokenPair], ranks: list[TokenRanking]) -> dict:
        out = evaluate_pairs(model, pairs, config, pad_id, dev, dist, on_batch=advance)
        if ranks:
            sums = evaluate_rankings(model, ranks, config, pad_id, dev, dist, on_batch=advance)
            out = merge_ranking_metrics(out, sums, config, sum(p.weight for p in pairs), len(pairs))
        return out

    def evaluate() -> dict:
        """Test metrics (eval/reward/*, reported only) and validation ones (eval/reward/val_*, which
        early stopping reads); the test split never decides anything."""
        model.eval()
        out = {**evaluate_split(test_pairs, test_ranks), "eval/reward/split": splits.test_split}
        if val_rows:
            val = evaluate_split(val_pairs, val_ranks)
            out.update({k.replace("eval/reward/", "eval/reward/val_"): v for k, v in val.items() if "_margin_" not in k})
            out["eval/reward/val_split"] = splits.val_split
        model.train()
        return out

    def run_eval() -> bool:
        """Evaluate, report, track the best weights; True means stop."""
        nonlocal best_loss, best_state, bad_evals, metrics, window_start, kept_step
        metrics = evaluate()
        window_start = time.perf_counter()  # evals are not training time
        if on_metrics:
            on_metrics(step, dict(metrics))
        if config.patience is None:
            return False
        if metrics["eval/reward/val_loss"] < best_loss - 1e-6:
            best_loss, bad_evals, kept_step = metrics["eval/reward/val_loss"], 0, step
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        bad_evals += 1
        return bad_evals >= config.patience

    # --- loop: Bradley–Terry steps, periodic train metrics and evals ---
    model.train()
    for epoch in range(config.epochs):
        for idx in epoch_batches(lengths, config.batch_size, order_rng, config.length_bucketing):
            mine = dist.shard(idx)
            weight_total = sum(item_weight[j] for j in idx)
            optimizer.zero_grad(set_to_none=True)
            pairs = [train_pairs[j] for j in mine if j < len(train_pairs)]
            ranks = [train_ranks[j - len(train_pairs)] for j in mine if j >= len(train_pairs)]
            if pairs:
                loss, r_c, r_r, counts = _pair_loss(model, pairs, config, pad_id, dev,
                                                    weight_total=weight_total, count_total=len(idx))
                loss.backward()
                both = torch.cat([r_c, r_r]).double()
                # One indexed add: fewer small kernels per step than one add per sum.
                window[[TrainSums.LOSS, TrainSums.CORRECT, TrainSums.MARGIN, TrainSums.REWARD, TrainSums.REWARD_SQ]] += (
                    torch.stack([loss.detach().double(), (r_c > r_r).double().sum(), (r_c - r_r).double().sum(),
                                 both.sum(), (both**2).sum()]))
                window[TrainSums.PAIRS] += len(pairs)
                window[TrainSums.SCORES] += 2 * len(pairs)
                # From the host without waiting: a blocking copy would stall the queue of GPU work every step.
                window[TrainSums.TOKENS :] += torch.tensor(counts, dtype=torch.float64).to(dev, non_blocking=True)
            if ranks:
                # Rankings: one Plackett–Luce term each; reward/accuracy and margin count their implied pairs.
                loss, r, counts = _ranking_loss(model, ranks, config, pad_id, dev,
                                                weight_total=weight_total, count_total=len(idx))
                loss.backward()
                window += torch.tensor([loss.item(), r[RankSums.CORRECT], r[RankSums.MARGIN], r[RankSums.PAIRS],
                                        r[RankSums.REWARD], r[RankSums.REWARD_SQ], 0.0, r[RankSums.ANSWERS], *counts],
                                       dtype=torch.float64, device=dev)
            window[TrainSums.STEPS] += 1.0 / dist.world  # summed across ranks: one per step
            dist.sum_grads(params)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            step += 1
            if step % config.log_every == 0 or step == total_steps:
                w = dist.sum_(window.clone()).tolist()  # .tolist() waits for the device: the clock below is honest
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                seen = [a + b for a, b in zip(seen, w[TrainSums.TOKENS :])]
                n, n_r = max(w[TrainSums.PAIRS], 1.0), max(w[TrainSums.SCORES], 1.0)
                mean = w[TrainSums.REWARD] / n_r
                last_train = {
                    "reward/loss": w[TrainSums.LOSS] / max(w[TrainSums.STEPS], 1e-8),
                    "reward/accuracy": w[TrainSums.CORRECT] / n,
                    "reward/margin": w[TrainSums.MARGIN] / n,
                    "reward/reward_mean": mean,
                    "reward/reward_std": math.sqrt(max(w[TrainSums.REWARD_SQ] / n_r - mean * mean, 0.0)),
                    "reward/pairs_per_s": w[TrainSums.PAIRS] / elapsed,
                    "reward/tokens_per_s": w[TrainSums.TOKENS] / elapsed,
                    "reward/tokens": seen[0],  # chosen + rejected tokens, as TRL's num_tokens counts them
                    "reward/tokens_computed": seen[1],  # positions the model ran, padding excluded
                    "reward/tokens_padded": seen[2],  # positions the model ran, padding included
                }
                if on_metrics:
                    on_metrics(step, dict(last_train))
                window.zero_()
                window_start = time.perf_counter()
            advance()
            if config.eval_every and step % config.eval_every == 0 and run_eval():
                stopped_early = True
                break
        if stopped_early:
            break
        if not config.eval_every and run_eval():
            stopped_early = True
            break

    # --- save: best weights (when early stopping), tokenizer, meta.json; rank 0 only ---
    if best_state is not None:
        model.load_state_dict(best_state)
        metrics = evaluate()
    elif not metrics or config.eval_every:
        metrics = evaluate()
    heads_meta = {}
    if config.aspects:
        # The saved model is a plain one-score checkpoint whose head is the combination; the heads go beside it.
        model, peft_model = unwrap_for_save(model, peft_model), None
        heads_meta = save_aspect_heads(out_dir, model, config, dist)
    final = {**last_train, **metrics, "reward/steps": step, "reward/stopped_early": stopped_early,
             "reward/kept_step": kept_step if best_state is not None else step}
    save_checkpoint(out_dir, model, tokenizer, {
        "base": str(base_path),
        "config": asdict(config),
        "metrics": final,
        "n_pairs": sum("ranking" not in r for r in rows),
        "n_train_pairs": len(train_rows),
        "n_val_pairs": len(val_rows),
        "n_eval_pairs": len(test_rows),
        "n_prompts": n_prompts,
        "n_rankings": sum("ranking" in r for r in rows),
        "world_size": dist.world,
        **heads_meta,
        **(meta or {}),
    }, kind="reward", dist=dist, peft_model=peft_model)
    if on_progress:
        on_progress(1.0)
    return final
