"""Bradley–Terry reward model training and scoring.

Loss per pair: -logsigmoid(r_chosen - r_rejected - margin), weighted by the
row's `weight`; optional centering term (TRL's center_rewards_coefficient)
keeps rewards near zero so the RLOO KL coefficient means the same across runs.

    python -m rlhf.train_reward --data pairs.jsonl --base PATH --out DIR [--epochs 2 --lr 1e-5]
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from rlhf import _torch
from rlhf.chat import ENCODE_KWARGS, format_pair_text
from rlhf.configs import RewardConfig  # re-exported: callers import it from here too
from rlhf.data import prompt_key, split_by_prompt, validate_preference_rows

MetricsFn = Callable[[int, dict], None]
ProgressFn = Callable[[float], None]
# Below this many distinct prompts a held-out split is too noisy to mean anything.
MIN_PROMPTS_FOR_SPLIT = 4


def _encode(tokenizer, texts: list[str], max_length: int, dev: torch.device):
    ids = [tokenizer(t, **ENCODE_KWARGS)["input_ids"] for t in texts]
    # Keep the end: the reward is read at the last token, so cutting the end
    # would score a text the model never finished.
    ids = [x[-max_length:] for x in ids]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=dev)
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=dev)
    return input_ids, mask


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Score each right-padded row at its own last real token.

    transformers' *ForSequenceClassification picks the last token that is not
    pad_token_id, which is wrong when pad == eos (SmolLM2 and most chat
    models): the appended EOS would be skipped. Pooling by attention mask is
    right for any pad choice.
    """
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    last = attention_mask.sum(dim=1) - 1
    pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    return model.score(pooled).squeeze(-1).float()


def _pair_rewards(model, tokenizer, batch: list[dict], config: RewardConfig, dev):
    texts = [format_pair_text(tokenizer, r["prompt"], r["chosen"]) for r in batch]
    texts += [format_pair_text(tokenizer, r["prompt"], r["rejected"]) for r in batch]
    input_ids, mask = _encode(tokenizer, texts, config.max_length, dev)
    with _torch.autocast(dev):
        rewards = sequence_rewards(model, input_ids, mask)
    return rewards[: len(batch)], rewards[len(batch) :]


def _pair_loss(model, tokenizer, batch: list[dict], config: RewardConfig, dev,
               weight_total: float | None = None, count_total: int | None = None):
    """Weighted Bradley–Terry loss (+ centering) of a batch; returns (loss, r_chosen, r_rejected).

    weight_total / count_total normalise by a larger global batch instead of
    this one, so that per-rank losses of a data-parallel step add up to the
    loss of the whole batch.
    """
    r_c, r_r = _pair_rewards(model, tokenizer, batch, config, dev)
    margin = torch.tensor([r["margin"] if config.margin else 0.0 for r in batch], device=dev)
    weight = torch.tensor([r["weight"] for r in batch], device=dev)
    if weight_total is None:
        weight_total = weight.sum().item()
    per_pair = -F.logsigmoid(r_c - r_r - margin)
    loss = (per_pair * weight).sum() / max(weight_total, 1e-8)
    if config.center_rewards_coefficient:
        loss = loss + config.center_rewards_coefficient * ((r_c + r_r) ** 2).sum() / (count_total or len(batch))
    return loss, r_c.detach(), r_r.detach()


# Calibration: accuracy of pairs grouped by how sure the model is (|r_c - r_r|).
# A calibrated model is right more often where its predicted margin is larger.
MARGIN_BUCKETS = [(0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, math.inf)]


def _bucket_name(lo: float, hi: float) -> str:
    fmt = lambda x: "inf" if math.isinf(x) else f"{x:g}"  # noqa: E731
    return f"{fmt(lo)}-{fmt(hi)}"


@torch.no_grad()
def _evaluate(model, tokenizer, rows: list[dict], config: RewardConfig, dev, dist: _torch.Dist | None = None) -> dict:
    """eval/* metrics over `rows`; under several processes each rank scores its share."""
    dist = dist or _torch.Dist()
    mine = dist.shard(rows)
    # Sums reduced across ranks: weighted loss, weight, center term, correct,
    # pairs, margin, reward sum, reward^2 sum, then (correct, pairs) per bucket.
    sums = torch.zeros(8 + 2 * len(MARGIN_BUCKETS), dtype=torch.float64, device=dev)
    for i in range(0, len(mine), config.batch_size):
        batch = mine[i : i + config.batch_size]
        r_c, r_r = _pair_rewards(model, tokenizer, batch, config, dev)
        margin = torch.tensor([r["margin"] if config.margin else 0.0 for r in batch], device=dev)
        weight = torch.tensor([r["weight"] for r in batch], device=dev)
        diff = r_c - r_r
        right = (diff > 0).double()
        sums[0] += (-F.logsigmoid(diff - margin) * weight).sum().double()
        sums[1] += weight.sum().double()
        sums[2] += ((r_c + r_r) ** 2).sum().double()
        sums[3] += right.sum()
        sums[4] += len(batch)
        sums[5] += diff.sum().double()
        both = torch.cat([r_c, r_r]).double()
        sums[6] += both.sum()
        sums[7] += (both**2).sum()
        for b, (lo, hi) in enumerate(MARGIN_BUCKETS):
            in_bucket = (diff.abs() >= lo) & (diff.abs() < hi)
            sums[8 + 2 * b] += right[in_bucket].sum()
            sums[9 + 2 * b] += in_bucket.sum()
    dist.sum_(sums)
    s = sums.tolist()
    n, n_r = max(s[4], 1.0), max(2 * s[4], 1.0)
    loss = s[0] / max(s[1], 1e-8)
    if config.center_rewards_coefficient:
        loss += config.center_rewards_coefficient * s[2] / n
    mean = s[6] / n_r
    out = {
        "eval/loss": loss,
        "eval/accuracy": s[3] / n,
        "eval/margin": s[5] / n,
        "eval/reward_mean": mean,
        "eval/reward_std": math.sqrt(max(s[7] / n_r - mean * mean, 0.0)),
    }
    for b, (lo, hi) in enumerate(MARGIN_BUCKETS):
        correct, count = s[8 + 2 * b], s[9 + 2 * b]
        if count:  # an empty bucket has no accuracy; leaving it out keeps the metrics JSON-clean
            out[f"eval/accuracy_margin_{_bucket_name(lo, hi)}"] = correct / count
            out[f"eval/pairs_margin_{_bucket_name(lo, hi)}"] = int(count)
    return out


def train_reward(
    config: RewardConfig,
    rows: list[dict],
    base_path: str,
    out_dir: str | Path,
    on_metrics: MetricsFn | None = None,
    on_progress: ProgressFn | None = None,
    meta: dict | None = None,
) -> dict:
    """Train a scalar reward head on preference rows; save to out_dir; return final metrics.

    `meta` is merged into meta.json (dataset sha256, parent version, ...).
    Under torchrun / accelerate launch every rank runs this with the same
    arguments; each takes its share of every batch, gradients are summed, and
    only rank 0 reports and saves (the others return the same metrics).
    """
    from transformers import AutoModelForSequenceClassification

    # --- setup: data split, model, optimizer ---
    rows = validate_preference_rows(rows)
    if not rows:
        raise ValueError("train_reward got no preference rows")
    n_prompts = len({prompt_key(r) for r in rows})
    if n_prompts >= MIN_PROMPTS_FOR_SPLIT and config.eval_fraction > 0:
        train_rows, eval_rows = split_by_prompt(rows, config.eval_fraction, config.seed)
        eval_split = "heldout"
    else:
        # Too few prompts to hold any out; eval on train and say so in metrics
        # rather than report a held-out number that isn't one.
        train_rows, eval_rows, eval_split = rows, rows, "train"
    dist = _torch.Dist()
    on_metrics = on_metrics if dist.main else None
    on_progress = on_progress if dist.main else None
    dev = dist.device()
    _torch.seed_all(config.seed)
    tokenizer = _torch.load_tokenizer(base_path, padding_side="right")
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_model = None
    if config.lora_r:
        peft_model = _torch.add_lora(model, config, "SEQ_CLS", modules_to_save=["score"])
        model = peft_model.get_base_model()
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    order_rng = random.Random(config.seed)
    step, best_loss, best_state, bad_evals, stopped_early = 0, float("inf"), None, 0, False
    metrics: dict = {}
    last_train: dict = {}  # the latest train/* window, kept in the final metrics
    # Window sums (reduced across ranks): loss, correct, margin, pairs, reward sum, reward^2 sum, steps.
    window = torch.zeros(7, dtype=torch.float64, device=dev)

    def evaluate() -> dict:
        model.eval()
        out = {**_evaluate(model, tokenizer, eval_rows, config, dev, dist), "eval/split": eval_split}
        model.train()
        return out

    def run_eval() -> bool:
        """Evaluate, report, track the best weights; True means stop."""
        nonlocal best_loss, best_state, bad_evals, metrics
        metrics = evaluate()
        if on_metrics:
            on_metrics(step, dict(metrics))
        if config.patience is None:
            return False
        if metrics["eval/loss"] < best_loss - 1e-6:
            best_loss, bad_evals = metrics["eval/loss"], 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        bad_evals += 1
        return bad_evals >= config.patience

    # --- loop: Bradley–Terry steps, periodic train metrics and evals ---
    model.train()
    for epoch in range(config.epochs):
        order = list(range(len(train_rows)))
        order_rng.shuffle(order)
        for i in range(0, len(order), config.batch_size):
            batch = [train_rows[j] for j in order[i : i + config.batch_size]]
            mine = dist.shard(batch)
            optimizer.zero_grad(set_to_none=True)
            if mine:
                loss, r_c, r_r = _pair_loss(model, tokenizer, mine, config, dev,
                                            weight_total=sum(r["weight"] for r in batch), count_total=len(batch))
                loss.backward()
                both = torch.cat([r_c, r_r]).double()
                window += torch.stack([loss.detach().double(), (r_c > r_r).double().sum(), (r_c - r_r).double().sum(),
                                       torch.tensor(float(len(mine)), dtype=torch.float64, device=dev),
                                       both.sum(), (both**2).sum(), torch.zeros((), dtype=torch.float64, device=dev)])
            window[6] += 1.0 / dist.world  # summed across ranks: one per step
            dist.sum_grads(params)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            step += 1
            if step % config.log_every == 0 or step == total_steps:
                w = dist.sum_(window.clone()).tolist()
                n, n_r = max(w[3], 1.0), max(2 * w[3], 1.0)
                mean = w[4] / n_r
                last_train = {
                    "train/loss": w[0] / max(w[6], 1e-8),
                    "train/accuracy": w[1] / n,
                    "train/margin": w[2] / n,
                    "reward/mean": mean,
                    "reward/std": math.sqrt(max(w[5] / n_r - mean * mean, 0.0)),
                }
                if on_metrics:
                    on_metrics(step, dict(last_train))
                window.zero_()
            if on_progress:
                on_progress(step / total_steps)
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
    final = {**last_train, **metrics, "train/steps": step, "train/stopped_early": stopped_early}
    if dist.main:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _torch.unwrap_for_save(model, peft_model).save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "meta.json").write_text(json.dumps({
            "kind": "reward",
            "base": str(base_path),
            "config": asdict(config),
            "metrics": final,
            "n_pairs": len(rows),
            "n_train_pairs": len(train_rows),
            "n_eval_pairs": len(eval_rows),
            "n_prompts": n_prompts,
            "world_size": dist.world,
            **(meta or {}),
        }, indent=2, default=str))
    dist.barrier()
    if on_progress:
        on_progress(1.0)
    return final


class RewardScorer:
    """A loaded reward model; RLOO keeps one around instead of reloading per batch."""

    def __init__(self, reward_path: str, max_length: int = 1024):
        from transformers import AutoModelForSequenceClassification

        self.dev = _torch.device()
        self.tokenizer = _torch.load_tokenizer(reward_path, padding_side="right")
        self.model = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1, dtype=torch.float32)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.dev).eval()
        self.max_length = max_length

    @torch.no_grad()
    def __call__(self, prompts: list, responses: list[str], batch_size: int = 16) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
        out: list[float] = []
        for i in range(0, len(prompts), batch_size):
            texts = [format_pair_text(self.tokenizer, p, r) for p, r in zip(prompts[i : i + batch_size], responses[i : i + batch_size])]
            input_ids, mask = _encode(self.tokenizer, texts, self.max_length, self.dev)
            with _torch.autocast(self.dev):
                out.extend(sequence_rewards(self.model, input_ids, mask).tolist())
        return out


def score(reward_path: str, prompts: list, responses: list[str], batch_size: int = 16) -> list[float]:
    """Reward for each (prompt, response), formatted exactly as in training."""
    return RewardScorer(reward_path)(prompts, responses, batch_size=batch_size)
