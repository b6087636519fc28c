"""RLOO policy step: k samples per prompt, leave-one-out baseline, KL to a
frozen reference folded into the reward, clipped importance ratio (as TRL's
RLOOTrainer). It reports the policy stage's metrics, policy/* (rlhf/__init__.py
lists them).

    python -m rlhf.train_policy --prompts p.jsonl --policy PATH --ref PATH --reward PATH --out DIR [--num-iterations 20]
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from rlhf import _torch
from rlhf.chat import format_prompt
from rlhf.checkpoint import save_checkpoint
from rlhf.configs import RLOOConfig, check_config  # RLOOConfig re-exported: callers import it from here too
from rlhf.generate import Rollout, RowSampler, load_policy, sample
from rlhf.kl import KLGuard, sampled_kl
from rlhf.logprobs import token_logprobs

RewardFn = Callable[[list, list[str]], list[float]]


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """rewards grouped prompt-major ([p0s0..p0s(k-1), p1s0, ...]) -> r_i - mean(others)."""
    if k < 2:
        raise ValueError("RLOO needs k >= 2 samples per prompt for a leave-one-out baseline")
    grouped = rewards.view(-1, k)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


def rloo_policy_loss(new_logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
                     cliprange: float, ratio_level: str = "sequence", count: int | None = None) -> torch.Tensor:
    """Clipped surrogate loss from per-token log-probs (n, C) and per-sequence advantages (n,).

    "sequence" is TRL's RLOOTrainer: one ratio per sequence, exp of the summed
    token log-ratios; "token" clips each token's ratio (PPO style). The mean
    over sequences divides by `count` when given (a data-parallel rank holds
    part of a minibatch; the ranks' losses then add up to the minibatch's).
    """
    if ratio_level == "sequence":
        ratio = torch.exp(((new_logps - old_logps) * mask).sum(dim=1))
        clipped = ratio.clamp(1 - cliprange, 1 + cliprange)
        per_sequence = -torch.min(ratio * advantages, clipped * advantages)
    else:
        ratio = torch.exp(new_logps - old_logps)
        clipped = ratio.clamp(1 - cliprange, 1 + cliprange)
        per_token = -torch.min(ratio * advantages[:, None], clipped * advantages[:, None])
        per_sequence = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_sequence.sum() / (count or per_sequence.numel())


@torch.no_grad()
def _batched_logprobs(model, rollout, batch_size, temperature, dev):
    out = []
    for i in range(0, rollout.prompt_ids.size(0), batch_size):
        sl = slice(i, i + batch_size)
        with _torch.autocast(dev):
            out.append(token_logprobs(model, rollout.prompt_ids[sl], rollout.prompt_mask[sl],
                                      rollout.completion_ids[sl], rollout.completion_mask[sl], temperature))
    return torch.cat(out)


def _pad_cat(tensors: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    width = max(t.size(1) for t in tensors)
    padded = []
    for t in tensors:
        fill = t.new_full((t.size(0), width - t.size(1)), value)
        padded.append(torch.cat([fill, t] if left else [t, fill], dim=1))
    return torch.cat(padded)


def _rollout(model, tokenizer, prompt_texts: list[str], rows: list[int], n_rows: int, seed: int,
             config: RLOOConfig, vllm=None):
    """Sample this rank's rows of the round; stitch generate-sized chunks into one padded batch.

    `rows` are the rows' indices in the whole round (n_rows): the samplers
    draw by row index, so a row's completion does not depend on the chunking
    or on which rank generates it.
    """
    if vllm is not None:
        return vllm(tokenizer, prompt_texts, [seed * 100_003 + r for r in rows], config.max_new_tokens,
                    config.temperature)
    dev = next(model.parameters()).device
    size = config.generation_batch_size or len(prompt_texts)
    parts = []
    for i in range(0, len(prompt_texts), size):
        # Every chunk replays the round's stream from its start, so row r always gets draw r.
        sampler = RowSampler(seed, rows[i : i + size], n_rows, config.temperature, dev)
        parts.append(sample(model, tokenizer, prompt_texts[i : i + size], config.max_new_tokens, sampler=sampler,
                            compile_decode=config.generation_compile))
    pad = tokenizer.pad_token_id
    return Rollout(
        prompt_ids=_pad_cat([p.prompt_ids for p in parts], pad, left=True),
        prompt_mask=_pad_cat([p.prompt_mask for p in parts], 0, left=True),
        completion_ids=_pad_cat([p.completion_ids for p in parts], pad, left=False),
        completion_mask=_pad_cat([p.completion_mask for p in parts], 0, left=False),
        texts=[t for p in parts for t in p.texts],
    )


def _generation_backend(config: RLOOConfig, world: int) -> str:
    """"transformers" or "vllm", per config.generation_backend and what this process can run."""
    from rlhf.generate import vllm_available

    # The colocated engine takes full weights in one process: no LoRA layers, no data-parallel ranks.
    fits = not config.lora_r and world == 1
    if config.generation_backend == "vllm":
        if not vllm_available():
            raise ImportError("generation_backend='vllm' needs the 'vllm' package and a CUDA GPU (pip install vllm), "
                              "or generation_backend='transformers'")
        if not fits:
            raise ValueError("generation_backend='vllm' runs in one process without LoRA; use 'transformers' "
                             "(or 'auto') with lora_r > 0 or several processes")
    if config.generation_backend == "auto":
        return "vllm" if vllm_available() and fits else "transformers"
    return config.generation_backend


def rloo_train(
    config: RLOOConfig,
    prompts: list,
    policy_path: str,
    ref_path: str,
    out_dir: str | Path,
    reward_path: str | None = None,
    reward_fn: RewardFn | None = None,
    on_metrics: Callable[[int, dict], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    meta: dict | None = None,
) -> dict:
    """Run config.num_iterations RLOO rounds from policy_path; save to out_dir; return last metrics.

    Under torchrun / accelerate launch every rank runs this with the same
    arguments: each samples, scores and trains on its share of each round's
    prompts (all k samples of a prompt stay on one rank, for the leave-one-out
    baseline), gradients are summed, and rank 0 reports and saves.
    """
    # --- setup: policy (trained), reference (frozen), reward source, sampler, optimizer ---
    check_config("policy", config)
    if (reward_path is None) == (reward_fn is None):
        raise ValueError("pass exactly one of reward_path (a reward model folder) or reward_fn (a callable)")
    if not prompts:
        raise ValueError("rloo_train got no prompts")
    dist = _torch.Dist()
    n_prompts = min(config.prompts_per_iteration, len(prompts))
    if n_prompts < dist.world:
        raise ValueError(f"{dist.world} processes need at least {dist.world} prompts per iteration, got {n_prompts}")
    on_metrics = on_metrics if dist.main else None
    on_progress = on_progress if dist.main else None
    dev = dist.device()
    _torch.seed_all(config.seed)
    policy, tokenizer = load_policy(policy_path, dev)
    peft_model, ref = None, None
    if config.lora_r:
        peft_model = _torch.add_lora(policy, config, "CAUSAL_LM")
        policy = peft_model.get_base_model()
    if peft_model is None or not _torch.same_checkpoint(policy_path, ref_path):
        ref, _ = load_policy(ref_path, dev)
        ref.requires_grad_(False)
    # else: the reference is the policy with its adapter disabled; no second model.
    if reward_fn is None:
        from rlhf.scoring import RewardScorer

        scorer = RewardScorer(reward_path)
        reward_fn = lambda ps, cs: scorer(ps, cs, batch_size=config.reward_batch_size)  # noqa: E731
    vllm = None
    if _generation_backend(config, dist.world) == "vllm":
        from rlhf.generate import VLLMSampler

        vllm = VLLMSampler(policy_path, max_model_len=4096, seed=config.seed,
                           gpu_memory_utilization=config.vllm_gpu_memory_utilization)
    # The policy stays in eval mode: dropout would make the "old" and "new"
    # log-probs of the same weights differ and bias the ratio.
    policy.eval()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, fused=dev.type == "cuda")
    order_rng = random.Random(config.seed)
    order: list[int] = []
    metrics: dict = {}
    k = config.k
    guard = KLGuard(config.kl_budget, params) if config.kl_budget is not None else None
    # Progress counts work: per round, sampling (the longest part), scoring
    # (reward model and both models' log-probs) and each optimizer step;
    # then the closing KL check. A fraction per round alone stood still
    # through a whole round of sampling.
    updates = config.ppo_epochs * math.ceil(n_prompts * config.k / config.minibatch_size)
    per_round = 2 + updates
    planned = config.num_iterations * per_round + (1 if guard is not None else 0)

    def report(units: int) -> None:
        if on_progress:
            on_progress(min(units / planned, 0.99))

    # --- loop: sample k per prompt, score, advantages, clipped updates ---
    for it in range(config.num_iterations):
        batch_prompts = []
        while len(batch_prompts) < n_prompts:
            if not order:
                order = list(range(len(prompts)))
                order_rng.shuffle(order)
            batch_prompts.append(prompts[order.pop()])
        n = n_prompts * k  # rows of the round, prompt-major: row j * k + s is sample s of prompt j
        rows = [j * k + s for j in range(dist.rank, n_prompts, dist.world) for s in range(k)]  # this rank's
        local = {row: i for i, row in enumerate(rows)}
        repeated = [batch_prompts[row // k] for row in rows]
        if vllm is not None:
            vllm.sync(policy)
        round_seed = config.seed * 1_000_003 + it
        rollout = _rollout(policy, tokenizer, [format_prompt(tokenizer, p) for p in repeated], rows, n, round_seed,
                           config, vllm)
        rollout = Rollout(*(t.to(dev) for t in (rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                                                 rollout.completion_mask)), rollout.texts)
        report(it * per_round + 1)
        mask = rollout.completion_mask.float()
        old_logps = _batched_logprobs(policy, rollout, config.logprob_batch_size, config.temperature, dev)
        if ref is not None:
            ref_logps = _batched_logprobs(ref, rollout, config.logprob_batch_size, config.temperature, dev)
        else:
            with peft_model.disable_adapter():
                ref_logps = _batched_logprobs(policy, rollout, config.logprob_batch_size, config.temperature, dev)
        raw = torch.tensor(reward_fn(repeated, rollout.texts), dtype=torch.float32, device=dev)
        kl = ((old_logps - ref_logps) * mask).sum(dim=1)
        # The round's samples are the policy's own, after `it` rounds of
        # updates: their KL is the budget check, at no extra cost.
        if guard is not None and not guard.check(_global_mean(kl, dist), it, params):
            break  # over the budget: the last weights inside it are back in place
        report(it * per_round + 2)
        advantages = rloo_advantages(raw - config.beta * kl, k)
        if config.normalize_advantages:
            mean, std = _global_mean_std(advantages, dist)
            advantages = (advantages - mean) / (std + 1e-4)

        # Minibatches over the whole round, in an order every rank draws alike;
        # each rank computes its rows of a minibatch, gradients are summed.
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        steps = 0
        shuffle = torch.Generator().manual_seed(round_seed)
        for _ in range(config.ppo_epochs):
            perm = torch.randperm(n, generator=shuffle).tolist()
            for i in range(0, n, config.minibatch_size):
                minibatch = perm[i : i + config.minibatch_size]
                idx = torch.tensor([local[r] for r in minibatch if r in local], dtype=torch.long, device=dev)
                optimizer.zero_grad(set_to_none=True)
                if len(idx):
                    with _torch.autocast(dev):
                        new_logps = token_logprobs(policy, rollout.prompt_ids[idx], rollout.prompt_mask[idx],
                                                   rollout.completion_ids[idx], rollout.completion_mask[idx],
                                                   config.temperature)
                    loss = rloo_policy_loss(new_logps, old_logps[idx], mask[idx], advantages[idx],
                                            config.cliprange, config.ratio_level, count=len(minibatch))
                    loss.backward()
                    loss_sum += loss.detach().double()
                dist.sum_grads(params)
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                steps += 1
                report(it * per_round + 2 + steps)

        # Sums over all ranks: KL, reward, advantage, advantage^2, completion length, rows, loss.
        sums = dist.sum_(torch.stack([kl.double().sum(), raw.double().sum(), advantages.double().sum(),
                                      (advantages.double() ** 2).sum(), mask.double().sum(),
                                      torch.tensor(float(len(rows)), dtype=torch.float64, device=dev), loss_sum]))
        s_kl, s_raw, s_adv, s_adv2, s_len, count, s_loss = sums.tolist()
        metrics = {
            "policy/kl": s_kl / count,
            "policy/reward_mean": s_raw / count,
            "policy/loss": s_loss / steps,
            "policy/advantage_std": math.sqrt(max(s_adv2 - s_adv**2 / count, 0.0) / max(count - 1, 1)),
            "policy/completion_length": s_len / count,
        }
        if on_metrics:
            on_metrics(it + 1, dict(metrics))

    # The last round's update has not been checked yet: sample once more.
    if guard is not None and guard.over_kl is None:
        check_prompts = [prompts[i % len(prompts)] for i in range(n_prompts * k)]
        guard.check(sampled_kl(policy, ref, tokenizer, check_prompts, max_new_tokens=config.max_new_tokens,
                               seed=config.seed, dist=dist, peft_model=peft_model), config.num_iterations, params)
    if guard is not None:
        metrics = {**metrics, **guard.metrics()}
        if on_metrics:
            on_metrics(config.num_iterations, dict(metrics))

    # --- save: policy weights (LoRA merged in), tokenizer, meta.json; rank 0 only ---
    save_checkpoint(out_dir, policy, tokenizer, {
        "algorithm": "rloo",
        "parent": str(policy_path),
        "ref": str(ref_path),
        "reward": str(reward_path) if reward_path else "reward_fn",
        "config": asdict(config),
        "metrics": metrics,
        "n_prompts": len(prompts),
        "world_size": dist.world,
        **(meta or {}),
    }, kind="policy", dist=dist, peft_model=peft_model)
    if on_progress:
        on_progress(1.0)
    return metrics


def _global_mean(x: torch.Tensor, dist: _torch.Dist) -> float:
    """Mean of x over all ranks' values (the same float on every rank)."""
    s = dist.sum_(torch.stack([x.double().sum(), x.new_tensor(x.numel(), dtype=torch.float64)]))
    return (s[0] / s[1].clamp(min=1)).item()


def _global_mean_std(x: torch.Tensor, dist: _torch.Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation of x over all ranks' values."""
    s = dist.sum_(torch.stack([x.double().sum(), (x.double() ** 2).sum(), x.new_tensor(x.numel(), dtype=torch.float64)]))
    mean = s[0] / s[2]
    var = (s[1] - s[2] * mean**2) / (s[2] - 1).clamp(min=1)
    return mean.to(x.dtype), var.clamp(min=0).sqrt().to(x.dtype)
