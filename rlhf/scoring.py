"""Scoring texts with a trained reward model (imports torch): RLOO scores its
samples here, the simulated annotators their answers.

Texts are tokenized once, then run longest first in batches capped by a
sequence count and by a token budget (rows x the batch's longest), so a
batch holds texts of similar length and pads little; the scores come back
in the caller's order. Arrival-order batches of 16 padded every short
answer to the longest of its batch (bench/reward_scoring.py measures the
difference). Each row is still a plain right-padded forward, scored at its
own last real token, so the scores are those of one text alone
(tests/rlhf/test_scoring.py). Packing several texts into one row (as the
reward trainer does) would save the little padding sorting leaves, but
costs attention over the whole row on every text in it; sorted batches pad
too little for that to pay.
"""

from __future__ import annotations

import torch

from rlhf import _torch
from rlhf.chat import ENCODE_KWARGS, format_pair_text
from rlhf.logprobs import pad_right

# Padded positions per forward. The arrival-order scorer's worst batch was
# 16 texts of 1,024 tokens: the budget keeps peak memory at that.
BATCH_TOKENS = 16 * 1024


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Score each right-padded row at its own last real token.

    transformers' *ForSequenceClassification picks the last token that is not
    pad_token_id, which is wrong when pad == eos (SmolLM2 and most chat
    models): the appended EOS would be skipped. Pooling by attention mask is
    right for any pad choice.
    """
    return model.score(last_token_features(model, input_ids, attention_mask)).squeeze(-1).float()


def last_token_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The backbone's final hidden state at each right-padded row's last real
    token: what the score head reads (rlhf.selection fits its heads on it)."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


def length_batches(lengths: list[int], max_sequences: int, max_tokens: int) -> list[list[int]]:
    """Indices, longest first, cut into batches of at most max_sequences texts and
    max_tokens padded positions (a text longer than the budget goes alone)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        # Longest first: a batch's width is its first text's length.
        if batches and len(batches[-1]) < max_sequences and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class RewardScorer:
    """A loaded reward model; RLOO keeps one around instead of reloading per batch."""

    def __init__(self, reward_path: str, max_length: int = 1024, batch_tokens: int = BATCH_TOKENS):
        from transformers import AutoModelForSequenceClassification

        self.dev = _torch.device()
        self.tokenizer = _torch.load_tokenizer(reward_path, padding_side="right")
        self.model = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1, dtype=torch.float32)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.dev).eval()
        self.max_length = max_length
        self.batch_tokens = batch_tokens

    def encode(self, prompts: list, responses: list[str]) -> list[list[int]]:
        """Token ids of each prompt + response + EOS, as in training; over max_length, the end is kept
        (the reward is read at the last token)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
        texts = [format_pair_text(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        return [ids[-self.max_length :] for ids in self.tokenizer(texts, **ENCODE_KWARGS)["input_ids"]] if texts else []

    @torch.no_grad()
    def score_ids(self, ids: list[list[int]], batch_size: int = 64) -> list[float]:
        """Reward of each token list, in the order given; batch_size caps texts per forward."""
        out = [0.0] * len(ids)
        for batch in length_batches([len(x) for x in ids], batch_size, self.batch_tokens):
            input_ids, mask = pad_right([ids[i] for i in batch], self.tokenizer.pad_token_id, self.dev)
            with _torch.autocast(self.dev):
                for i, r in zip(batch, sequence_rewards(self.model, input_ids, mask).tolist()):
                    out[i] = r
        return out

    @torch.no_grad()
    def score_features_ids(self, ids: list[list[int]], batch_size: int = 64) -> tuple[list[float], torch.Tensor]:
        """Reward and last-token features (n, hidden; float32 on the CPU) of each token list, in the order
        given, from the same sorted, budgeted forwards as score_ids: selection reads both at no extra cost."""
        out = [0.0] * len(ids)
        feats = torch.zeros(len(ids), self.model.config.hidden_size)
        for batch in length_batches([len(x) for x in ids], batch_size, self.batch_tokens):
            input_ids, mask = pad_right([ids[i] for i in batch], self.tokenizer.pad_token_id, self.dev)
            with _torch.autocast(self.dev):
                pooled = last_token_features(self.model, input_ids, mask)
                rewards = self.model.score(pooled).squeeze(-1).float()
            feats[batch] = pooled.float().cpu()
            for i, r in zip(batch, rewards.tolist()):
                out[i] = r
        return out, feats

    def score_features(self, prompts: list, responses: list[str], batch_size: int = 64) -> tuple[list[float], torch.Tensor]:
        return self.score_features_ids(self.encode(prompts, responses), batch_size=batch_size)

    def head_weight(self) -> torch.Tensor:
        """The score head's weight (hidden,), float32 on the CPU: a reward is this dot the features
        (plus a bias, if the head has one, that cancels in any pair)."""
        return self.model.score.weight.detach()[0].float().cpu()

    def __call__(self, prompts: list, responses: list[str], batch_size: int = 64) -> list[float]:
        return self.score_ids(self.encode(prompts, responses), batch_size=batch_size)


def score(reward_path: str, prompts: list, responses: list[str], batch_size: int = 64) -> list[float]:
    """Reward for each (prompt, response), formatted exactly as in training."""
    return RewardScorer(reward_path)(prompts, responses, batch_size=batch_size)
