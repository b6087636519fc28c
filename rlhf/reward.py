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


def _pair_loss(model, tokenizer, batch: list[dict], config: RewardConfig, dev):
    texts = [format_pair_text(tokenizer, r["prompt"], r["chosen"]) for r in batch]
    texts += [format_pair_text(tokenizer, r["prompt"], r["rejected"]) for r in batch]
    input_ids, mask = _encode(tokenizer, texts, config.max_length, dev)
    with _torch.autocast(dev):
        rewards = sequence_rewards(model, input_ids, mask)
    r_c, r_r = rewards[: len(batch)], rewards[len(batch) :]
    margin = torch.tensor([r["margin"] if config.margin else 0.0 for r in batch], device=dev)
    weight = torch.tensor([r["weight"] for r in batch], device=dev)
    per_pair = -F.logsigmoid(r_c - r_r - margin)
    loss = (per_pair * weight).sum() / weight.sum().clamp(min=1e-8)
    if config.center_rewards_coefficient:
        loss = loss + config.center_rewards_coefficient * ((r_c + r_r) ** 2).mean()
    return loss, r_c.detach(), r_r.detach()


@torch.no_grad()
def _evaluate(model, tokenizer, rows: list[dict], config: RewardConfig, dev) -> dict:
    total, correct, weight_sum = 0.0, 0, 0.0
    for i in range(0, len(rows), config.batch_size):
        batch = rows[i : i + config.batch_size]
        loss, r_c, r_r = _pair_loss(model, tokenizer, batch, config, dev)
        w = sum(r["weight"] for r in batch)
        total += loss.item() * w
        weight_sum += w
        correct += int((r_c > r_r).sum().item())
    return {"eval/loss": total / max(weight_sum, 1e-8), "eval/accuracy": correct / max(len(rows), 1)}


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
    dev = _torch.device()
    _torch.seed_all(config.seed)
    tokenizer = _torch.load_tokenizer(base_path, padding_side="right")
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    order_rng = random.Random(config.seed)
    step, best_loss, best_state, bad_evals, stopped_early = 0, float("inf"), None, 0, False
    metrics: dict = {}
    last_train: dict = {}  # the latest train/* window, kept in the final metrics
    window: list[tuple[float, float, float, torch.Tensor]] = []

    def run_eval() -> bool:
        """Evaluate, report, track the best weights; True means stop."""
        nonlocal best_loss, best_state, bad_evals, metrics
        model.eval()
        metrics = {**_evaluate(model, tokenizer, eval_rows, config, dev), "eval/split": eval_split}
        model.train()
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
            loss, r_c, r_r = _pair_loss(model, tokenizer, batch, config, dev)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            step += 1
            window.append((loss.item(), (r_c > r_r).float().mean().item(), (r_c - r_r).mean().item(), torch.cat([r_c, r_r])))
            if step % config.log_every == 0 or step == total_steps:
                all_r = torch.cat([w[3] for w in window])
                last_train = {
                    "train/loss": sum(w[0] for w in window) / len(window),
                    "train/accuracy": sum(w[1] for w in window) / len(window),
                    "train/margin": sum(w[2] for w in window) / len(window),
                    "reward/mean": all_r.mean().item(),
                    "reward/std": all_r.std().item() if all_r.numel() > 1 else 0.0,
                }
                if on_metrics:
                    on_metrics(step, dict(last_train))
                window.clear()
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

    # --- save: best weights (when early stopping), tokenizer, meta.json ---
    if best_state is not None:
        model.load_state_dict(best_state)
        model.eval()
        metrics = {**_evaluate(model, tokenizer, eval_rows, config, dev), "eval/split": eval_split}
    elif not metrics or config.eval_every:
        model.eval()
        metrics = {**_evaluate(model, tokenizer, eval_rows, config, dev), "eval/split": eval_split}
    final = {**last_train, **metrics, "train/steps": step, "train/stopped_early": stopped_early}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
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
        **(meta or {}),
    }, indent=2, default=str))
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
