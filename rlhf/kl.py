"""The KL budget of a policy step: how far, in nats per answer, a campaign lets
its policy move away from the base model, and the guard that keeps a trainer
inside it.

The KL here is the sequence KL of the policy to the base on the policy's own
answers: the mean over prompts of sum_t log pi(y_t) - log pi_base(y_t), with
y sampled from pi at temperature 1. It is what RLOO folds into its reward
(policy/kl) and what bench/simulated_campaign.py reports per round.

A step with a budget checks that KL as it trains (RLOO: on every round's own
samples, which cost nothing extra; DPO: every kl_check_every steps, on
samples drawn for the check) and once more after its last update. When a
check finds the policy over the budget, the step puts back the last weights
a check found inside it (or the weights it started from) and stops there:
what it publishes is never further from the base than the budget, by the
same estimate.
"""

from __future__ import annotations

import contextlib

import torch

from rlhf import _torch
from rlhf.chat import format_prompt
from rlhf.generate import sample
from rlhf.logprobs import token_logprobs


@torch.no_grad()
def sampled_kl(policy, ref, tokenizer, prompts: list, *, max_new_tokens: int, seed: int, dist: _torch.Dist,
               peft_model=None, batch_size: int = 16) -> float:
    """Mean sequence KL(policy || ref) over `prompts`, one answer sampled per
    prompt at temperature 1. Each rank samples its share of the prompts and
    the sums are reduced, so every rank gets the same figure. `ref` None: the
    reference is the policy with peft_model's adapter disabled."""
    dev = next(policy.parameters()).device
    was_training, side = policy.training, tokenizer.padding_side
    policy.eval()
    tokenizer.padding_side = "left"  # generation continues each prompt from its last token
    total = torch.zeros(2, dtype=torch.float64, device=dev)  # sum of KL, prompts
    # Its own random stream: a check must not shift the trainer's draws.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed + dist.rank)
        mine = prompts[dist.rank :: dist.world]
        for i in range(0, len(mine), batch_size):
            texts = [format_prompt(tokenizer, p) for p in mine[i : i + batch_size]]
            rollout = sample(policy, tokenizer, texts, max_new_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
            args = (rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask, 1.0)
            mask = rollout.completion_mask.float()
            with _torch.autocast(dev):
                logp = token_logprobs(policy, *args)
                with peft_model.disable_adapter() if ref is None else contextlib.nullcontext():
                    ref_logp = token_logprobs(policy if ref is None else ref, *args)
            total[0] += ((logp.float() - ref_logp.float()) * mask).sum().double()
            total[1] += len(texts)
    tokenizer.padding_side = side
    policy.train(was_training)
    total = dist.sum_(total)
    return (total[0] / total[1].clamp(min=1)).item()


class KLGuard:
    """Keeps the last weights a check found inside the budget (at first, the
    weights the step starts from) and puts them back when a check finds the
    policy over it. Only the trainable parameters are kept (with LoRA, the
    adapter's), on the CPU, so a check costs one copy of them.

        guard = KLGuard(budget, params)
        if not guard.check(kl, step, params):  # over: params restored
            break
    """

    def __init__(self, budget: float, params: list[torch.Tensor]):
        if budget < 0:
            raise ValueError(f"kl_budget must be >= 0 nats, got {budget}")
        self.budget = budget
        self.kept = self._copy(params)
        self.kept_step = 0
        self.kept_kl: float | None = None
        self.over_kl: float | None = None  # the estimate that stopped the step

    @staticmethod
    def _copy(params) -> list[torch.Tensor]:
        return [p.detach().to("cpu", copy=True) for p in params]

    def check(self, kl: float, step: int, params: list[torch.Tensor]) -> bool:
        """True and keep the weights if `kl` (of the weights as they are now,
        after `step` updates) is within the budget; else restore the kept ones
        and return False."""
        if kl <= self.budget:
            self.kept, self.kept_step, self.kept_kl = self._copy(params), step, kl
            return True
        self.over_kl = kl
        with torch.no_grad():
            for p, kept in zip(params, self.kept):
                p.copy_(kept.to(p.device))
        return False

    def metrics(self) -> dict:
        """What the policy step reports: the budget, the KL estimate of the
        weights it kept (None when it kept its starting weights unchecked),
        the update those weights are from, and whether the budget stopped it."""
        return {
            "policy/kl_budget": self.budget,
            "policy/kl_to_base": self.kept_kl,
            "policy/kl_kept_step": self.kept_step,
            "policy/kl_budget_stopped": self.over_kl is not None,
            **({"policy/kl_over_estimate": self.over_kl} if self.over_kl is not None else {}),
        }
