"""Token-level pieces the trainers share (imports torch): right-padding a
batch of token ids, the log-probability a model gives each sampled token
(RLOO, the KL check), the summed log-probability of a response after its
prompt (DPO), and where two token sequences part (DPO's prompt/response
boundary, the reward trainer's shared prefix)."""

from __future__ import annotations

import torch

from rlhf import _torch


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pad_right(ids: list[list[int]], pad: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token lists padded on the right to the longest."""
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=dev)
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=dev)
    return input_ids, mask


def token_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature: float) -> torch.Tensor:
    """Per-token log-prob of each completion token, (n, C), for left-padded
    prompts followed by right-padded completions (a `generate.Rollout`)."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    # Positions as generate() assigns them under left padding, so the scored
    # distribution is the one that was sampled from.
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    n_completion = completion_ids.size(1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False, logits_to_keep=n_completion + 1).logits
    logits = logits[:, :-1, :].float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def sequence_logps(model, pieces: list[tuple[list[int], list[int]]], pad_id: int, dev) -> torch.Tensor:
    """Sum of log p(response token | everything before it) for each (prompt_ids, response_ids)."""
    input_ids, attention_mask = pad_right([p + c for p, c in pieces], pad_id, dev)
    width = input_ids.size(1)
    # 1 where the token at position t is a response token (right padding, so
    # the default positions 0..n-1 are the right ones).
    response = torch.tensor([[0] * len(p) + [1] * len(c) + [0] * (width - len(p) - len(c)) for p, c in pieces], device=dev)
    with _torch.autocast(dev):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logps = torch.log_softmax(logits[:, :-1, :].float(), dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (logps * response[:, 1:]).sum(dim=1)
