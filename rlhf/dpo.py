"""DPO policy step straight from the human pairs (Rafailov et al., 2023): no
reward model, no sampling. The policy learns to raise the log-probability of
each chosen answer relative to the rejected one, measured against a frozen
reference so it cannot drift arbitrarily far:

    loss = -(1 - eps) * logsigmoid(beta * d) - eps * logsigmoid(-beta * d)
    d    = (log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))

with each row's `weight` (annotator reliability) weighting its pair. A ranking
row (tie groups of k answers, best first) is one Plackett–Luce term over the
implicit rewards beta * (log pi - log ref) of its answers (rlhf.plackett_luce;
for two answers it is the sigmoid loss above, label smoothing aside, which
applies to pair rows only). Log-probs
are summed over the response tokens only; the prompt is formatted by
rlhf.chat exactly as for reward training. Reference log-probs are computed
once, before the first step, so no second model is held during training.
It reports the policy stage's metrics, policy/* (rlhf/__init__.py lists them).

    python -m rlhf.train_dpo --data pairs.jsonl --policy PATH --ref PATH --out DIR [--beta 0.1 --epochs 1]
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from enum import IntEnum
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from rlhf import _torch
from rlhf.chat import ENCODE_KWARGS, format_prompt
from rlhf.checkpoint import save_checkpoint
from rlhf.configs import DPOConfig, check_config  # DPOConfig re-exported: callers import it from here too
from rlhf.data import validate_preference_rows
from rlhf.kl import KLGuard, sampled_kl
from rlhf.logprobs import common_prefix, sequence_logps
from rlhf.plackett_luce import implied_pairs, ranking_log_likelihood

MetricsFn = Callable[[int, dict], None]
ProgressFn = Callable[[float], None]


def tokenize_answers(tokenizer, prompt, answers: list[str], max_length: int) -> tuple[list[int], list[list[int]]]:
    """(prompt_ids, [answer_ids, ...]) for one prompt and its answers.

    The response tokens start where the tokenized prompt and the tokenized
    prompt+response diverge (BPE can merge across the boundary), the same
    rule as TRL's DPOTrainer. Over max_length, the prompt loses its start
    first, then each response its end.
    """
    prompt_text = format_prompt(tokenizer, prompt)
    eos = tokenizer.eos_token or ""
    prompt_ids = tokenizer(prompt_text, **ENCODE_KWARGS)["input_ids"]
    full = [tokenizer(prompt_text + a + eos, **ENCODE_KWARGS)["input_ids"] for a in answers]
    cut = min(common_prefix(prompt_ids, f) for f in full)
    prompt_ids = prompt_ids[:cut]
    responses = [f[cut:][: max_length - 1] for f in full]
    keep = max(max_length - max(len(r) for r in responses), 1)
    return prompt_ids[-keep:], responses


def tokenize_pair(tokenizer, row: dict, max_length: int) -> tuple[list[int], list[int], list[int]]:
    """(prompt_ids, chosen_ids, rejected_ids) for one pair row."""
    prompt_ids, (chosen, rejected) = tokenize_answers(tokenizer, row["prompt"], [row["chosen"], row["rejected"]],
                                                      max_length)
    return prompt_ids, chosen, rejected


def tokenize_row(tokenizer, row: dict, max_length: int) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """(prompt_ids, answers' ids, tie groups best first as indices into them) of a pair or ranking row;
    a pair is [[chosen], [rejected]]."""
    groups = row["ranking"] if "ranking" in row else [[row["chosen"]], [row["rejected"]]]
    prompt_ids, answers = tokenize_answers(tokenizer, row["prompt"], [t for g in groups for t in g], max_length)
    idx, i = [], 0
    for g in groups:
        idx.append(list(range(i, i + len(g))))
        i += len(g)
    return prompt_ids, answers, idx


def ranking_dpo_loss(policy: torch.Tensor, ref: torch.Tensor, groups: list[list[int]], beta: float) -> torch.Tensor:
    """One ranking's Plackett–Luce negative log-likelihood of its implicit rewards beta * (log pi - log ref)."""
    return -ranking_log_likelihood(beta * (policy - ref), groups)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0,
             weight: torch.Tensor | None = None, weight_total: float | None = None):
    """Sigmoid DPO loss (weighted mean over pairs); returns (loss, chosen_rewards, rejected_rewards).

    The implicit rewards beta * (log pi - log ref) are what policy/chosen_reward and policy/rejected_reward report.
    weight_total normalises by a larger global batch (data parallel ranks).
    """
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    d = beta * (chosen_logratio - rejected_logratio)
    per_pair = -(1 - label_smoothing) * F.logsigmoid(d) - label_smoothing * F.logsigmoid(-d)
    if weight is None:
        weight = torch.ones_like(per_pair)
    total = weight.sum().item() if weight_total is None else weight_total
    loss = (per_pair * weight).sum() / max(total, 1e-8)
    return loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


@torch.no_grad()
def _reference_logps(model, pieces, pad_id, batch_size, dev, dist) -> torch.Tensor:
    """(pieces,) reference log-prob of each (prompt_ids, answer_ids); each rank scores its share.
    batch_size counts pairs, so a forward holds 2 x batch_size answers, as before rankings."""
    out = torch.zeros(len(pieces), dtype=torch.float64, device=dev)
    mine = list(range(len(pieces)))[dist.rank :: dist.world]
    for i in range(0, len(mine), 2 * batch_size):
        idx = mine[i : i + 2 * batch_size]
        out[idx] = sequence_logps(model, [pieces[j] for j in idx], pad_id, dev).double()
    return dist.sum_(out).float()


def _batches(n_rows: int, config: DPOConfig):
    """Row indices of each optimizer step: config.epochs shuffled passes,
    config.batch_size rows a step (the last of a pass may be short)."""
    order_rng = random.Random(config.seed)
    for _ in range(config.epochs):
        order = list(range(n_rows))
        order_rng.shuffle(order)
        for i in range(0, n_rows, config.batch_size):
            yield order[i : i + config.batch_size]


def latest_rounds(rows: list[dict], n: int) -> list[dict]:
    """The rows of the last n rounds (by their "round"); all rows when n is 0
    or the rows carry no round (a file from elsewhere)."""
    rounds = sorted({r["round"] for r in rows if r.get("round") is not None})
    if n <= 0 or not rounds:
        return rows
    keep = set(rounds[-n:])
    return [r for r in rows if r.get("round") in keep]


class Sums(IntEnum):
    """Positions of a metrics window's sums (float64, reduced across ranks in one collective)."""

    LOSS = 0  # per step: the step's loss (each rank's share of it)
    CORRECT = 1  # pairs whose chosen implicit reward is above the rejected one
    PAIRS = 2
    CHOSEN_REWARD = 3
    REJECTED_REWARD = 4
    STEPS = 5


def dpo_train(
    config: DPOConfig,
    rows: list[dict],
    policy_path: str,
    ref_path: str,
    out_dir: str | Path,
    on_metrics: MetricsFn | None = None,
    on_progress: ProgressFn | None = None,
    meta: dict | None = None,
) -> dict:
    """Train the policy on preference rows (pairs, rankings or both) with DPO; save (merged, when LoRA) to
    out_dir; return last metrics."""
    from transformers import AutoModelForCausalLM

    # --- setup: data, policy, reference log-probs (once), optimizer ---
    check_config("dpo", config)
    rows = latest_rounds(validate_preference_rows(rows), config.last_rounds)
    if not rows:
        raise ValueError("dpo_train got no preference rows")
    dist = _torch.Dist()
    on_metrics = on_metrics if dist.main else None
    on_progress = on_progress if dist.main else None
    dev = dist.device()
    _torch.seed_all(config.seed)
    tokenizer = _torch.load_tokenizer(policy_path, padding_side="right")
    pad = tokenizer.pad_token_id
    # Every answer of every row is one piece; slots[j] are row j's pieces (a pair's: chosen, rejected).
    tokenized = [tokenize_row(tokenizer, r, config.max_length) for r in rows]
    pieces, slots = [], []
    for prompt_ids, answers, _ in tokenized:
        slots.append(list(range(len(pieces), len(pieces) + len(answers))))
        pieces += [(prompt_ids, a) for a in answers]
    model = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32).to(dev)
    # The policy's weights equal the reference's before the first step when
    # both are the same checkpoint, so the policy itself scores the reference.
    # A KL check (kl_budget) scores the policy's samples with the reference
    # all through training: then a reference model is kept, unless LoRA on
    # the same checkpoint makes it the policy with its adapter disabled.
    same = _torch.same_checkpoint(policy_path, ref_path)
    checks_kl = config.kl_budget is not None
    ref = None
    if not same or (checks_kl and not config.lora_r):
        ref = AutoModelForCausalLM.from_pretrained(ref_path, dtype=torch.float32).to(dev).eval()
    model.eval()
    ref_logps = _reference_logps(ref or model, pieces, pad, config.ref_batch_size, dev, dist)
    if not checks_kl:
        ref = None  # scored once above; not needed again
    peft_model = None
    if config.lora_r:
        peft_model = _torch.add_lora(model, config, "CAUSAL_LM")
        model = peft_model.get_base_model()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = math.ceil(len(rows) / config.batch_size) * config.epochs
    guard = KLGuard(config.kl_budget, params) if checks_kl else None
    # Progress counts work: each step, and each KL check (it samples answers,
    # as long as a few steps); below 1 until the checkpoint is saved.
    checks = (total_steps // config.kl_check_every + (1 if total_steps % config.kl_check_every else 0)) if checks_kl else 0
    planned, done_units = total_steps + checks, 0
    kl_prompts = list({str(r["prompt"]): r["prompt"] for r in rows}.values())[: config.kl_prompts]
    metrics: dict = {}
    window = torch.zeros(len(Sums), dtype=torch.float64, device=dev)

    # --- loop: DPO steps over shuffled pairs, periodic metrics and KL checks ---
    model.train()
    step = 0
    for step, batch in enumerate(_batches(len(rows), config), start=1):
        mine = dist.shard(batch)
        optimizer.zero_grad(set_to_none=True)
        weight_total = sum(rows[j]["weight"] for j in batch)
        pairs = [j for j in mine if "ranking" not in rows[j]]
        ranks = [j for j in mine if "ranking" in rows[j]]
        if pairs:
            chosen, rejected = [slots[j][0] for j in pairs], [slots[j][1] for j in pairs]
            logps = sequence_logps(model, [pieces[k] for k in chosen + rejected], pad, dev)
            weight = torch.tensor([rows[j]["weight"] for j in pairs], device=dev)
            loss, c_r, r_r = dpo_loss(logps[: len(pairs)], logps[len(pairs) :], ref_logps[chosen], ref_logps[rejected],
                                      config.beta, config.label_smoothing, weight, weight_total=weight_total)
            loss.backward()
            window[Sums.LOSS] += loss.detach().double()
            window[Sums.CORRECT] += (c_r > r_r).double().sum()
            window[Sums.PAIRS] += len(pairs)
            window[Sums.CHOSEN_REWARD] += c_r.double().sum()
            window[Sums.REJECTED_REWARD] += r_r.double().sum()
        if ranks:
            # Rankings: one Plackett–Luce term each; the accuracy and rewards count their implied pairs.
            flat = [k for j in ranks for k in slots[j]]
            logps = sequence_logps(model, [pieces[k] for k in flat], pad, dev)
            loss, start = logps.new_zeros(()), 0
            for j in ranks:
                n = len(slots[j])
                pol, rf = logps[start : start + n], ref_logps[slots[j]]
                start += n
                groups = tokenized[j][2]
                loss = loss + rows[j]["weight"] * ranking_dpo_loss(pol, rf, groups, config.beta)
                implicit = (config.beta * (pol - rf)).detach().double().tolist()
                for a, b in implied_pairs(groups):
                    window[Sums.CORRECT] += float(implicit[a] > implicit[b])
                    window[Sums.PAIRS] += 1
                    window[Sums.CHOSEN_REWARD] += implicit[a]
                    window[Sums.REJECTED_REWARD] += implicit[b]
            loss = loss / max(weight_total, 1e-8)
            loss.backward()
            window[Sums.LOSS] += loss.detach().double()
        window[Sums.STEPS] += 1.0 / dist.world  # summed across ranks: one per step
        dist.sum_grads(params)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        if step % config.log_every == 0 or step == total_steps:
            w = dist.sum_(window.clone()).tolist()
            n = max(w[Sums.PAIRS], 1.0)
            metrics = {
                "policy/loss": w[Sums.LOSS] / max(w[Sums.STEPS], 1e-8),
                "policy/accuracy": w[Sums.CORRECT] / n,
                "policy/margin": (w[Sums.CHOSEN_REWARD] - w[Sums.REJECTED_REWARD]) / n,
                "policy/chosen_reward": w[Sums.CHOSEN_REWARD] / n,
                "policy/rejected_reward": w[Sums.REJECTED_REWARD] / n,
            }
            if on_metrics:
                on_metrics(step, dict(metrics))
            window.zero_()
        done_units += 1
        if on_progress:
            on_progress(min(done_units / planned, 0.99))
        if guard is not None and (step % config.kl_check_every == 0 or step == total_steps):
            kl = sampled_kl(model, ref, tokenizer, kl_prompts, max_new_tokens=config.kl_max_new_tokens,
                            seed=config.seed, dist=dist, peft_model=peft_model)
            done_units += 1
            if on_progress:
                on_progress(min(done_units / planned, 0.99))
            if on_metrics:
                on_metrics(step, {"policy/kl": kl})
            if not guard.check(kl, step, params):
                break  # over the budget: the last weights inside it are back in place
    # --- save: merged policy weights, tokenizer, meta.json; rank 0 only ---
    final = {**metrics, "policy/steps": step, **(guard.metrics() if guard else {})}
    save_checkpoint(out_dir, model, tokenizer, {
        "algorithm": "dpo",
        "parent": str(policy_path),
        "ref": str(ref_path),
        "config": asdict(config),
        "metrics": final,
        "n_pairs": sum("ranking" not in r for r in rows),
        "n_rankings": sum("ranking" in r for r in rows),
        "world_size": dist.world,
        **(meta or {}),
    }, kind="policy", dist=dist, peft_model=peft_model)
    if on_progress:
        on_progress(1.0)
    return final
