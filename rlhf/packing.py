"""Padding-free packing (imports torch): preference pairs for the reward model,
rankings of k answers likewise (pack_groups), and whole sequences for supervised fine-tuning (pack_sequences, at the end).

A pair becomes one "unit": the tokens chosen and rejected share (at least the
formatted prompt), then chosen's own tokens, then rejected's own tokens.
Rejected's positions continue from the shared part, and the attention mask
hides chosen's tokens from rejected's, so each side sees exactly the
sequence it would see alone. Units are packed into rows; a row's attention
never crosses units. The mask is a 4D boolean tensor, which transformers
passes straight to SDPA. No KV cache: with one, SDPA silently gets every
sequence after a row's first wrong when positions restart at 0.

None of this changes a batch's rewards or loss against the padded batch
(tests/rlhf/test_reward_packing.py); rlhf.reward picks packed or padded per
RewardConfig.packing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from rlhf.logprobs import common_prefix


class TokenPair(NamedTuple):
    """One preference row as the model sees it: token ids of prompt+answer+EOS, both sides."""

    chosen: list[int]
    rejected: list[int]
    margin: float
    weight: float
    # Per aspect head (RewardConfig.aspects order): 1 chosen better, -1 rejected better, 0 same or not rated.
    aspects: tuple = ()


# Which part of its pair a packed token belongs to.
SHARED, CHOSEN, REJECTED = 0, 1, 2


@dataclass
class PackedPairs:
    input_ids: torch.Tensor  # (rows, width)
    position_ids: torch.Tensor  # (rows, width), restarting at 0 per sequence
    unit: torch.Tensor  # (rows, width): which pair each token belongs to; -1 = padding
    branch: torch.Tensor  # (rows, width): SHARED, CHOSEN or REJECTED
    chosen_at: torch.Tensor  # (pairs,) flat index (row * width + column) of chosen's last token
    rejected_at: torch.Tensor  # (pairs,) the same for rejected
    tokens: int  # tokens of chosen + rejected, as a padded trainer would count them
    computed: int  # non-padding positions the model runs (fewer than `tokens` when a prefix is shared)

    @property
    def slots(self) -> int:
        return self.input_ids.numel()

    def attention_mask(self) -> torch.Tensor:
        """(rows, 1, width, width) boolean: True where a query token may attend a key token."""
        width = self.unit.size(1)
        causal = torch.ones(width, width, dtype=torch.bool, device=self.unit.device).tril()
        same_unit = self.unit[:, :, None] == self.unit[:, None, :]
        crosses = (self.branch[:, :, None] == REJECTED) & (self.branch[:, None, :] == CHOSEN)
        return (same_unit & causal & ~crosses).unsqueeze(1)

    def to(self, dev: torch.device) -> "PackedPairs":
        moved = {k: v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return PackedPairs(**moved)


def first_fit(lengths: list[int], row_tokens: int, multiple_of: int) -> tuple[list[list[int]], int]:
    """(the indices each row holds, the rows' width): first fit, longest first,
    into rows of max(row_tokens, longest) tokens."""
    capacity = max(row_tokens, max(lengths))
    fill: list[int] = []
    members: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((j for j, f in enumerate(fill) if f + lengths[i] <= capacity), None)
        if row is None:
            fill.append(0)
            members.append([])
            row = len(fill) - 1
        members[row].append(i)
        fill[row] += lengths[i]
    # A width that is a multiple of 16 keeps bf16 tensor-core shapes and SDPA's mask rows aligned.
    return members, -(-max(fill) // multiple_of) * multiple_of


def pack_pairs(pairs: list[TokenPair], pad_id: int, share_prefix: bool = True, row_tokens: int = 0,
               multiple_of: int = 16) -> PackedPairs:
    """Pack pairs into rows of at most max(row_tokens, longest unit) tokens (first fit, longest first)."""
    units = []
    for p in pairs:
        c, r = p.chosen, p.rejected
        # The shared part must leave each side at least its own last token to be scored at.
        s = min(common_prefix(c, r), len(c) - 1, len(r) - 1) if share_prefix else 0
        units.append((c + r[s:], list(range(len(c))) + list(range(s, len(r))),
                      [SHARED] * s + [CHOSEN] * (len(c) - s) + [REJECTED] * (len(r) - s), len(c) - 1))
    members, width = first_fit([len(u[0]) for u in units], row_tokens, multiple_of)
    ids, pos = [[pad_id] * width for _ in members], [[0] * width for _ in members]
    unit, branch = [[-1] * width for _ in members], [[SHARED] * width for _ in members]
    chosen_at, rejected_at = [0] * len(units), [0] * len(units)
    for row, idx in enumerate(members):
        at = 0
        for i in idx:
            tokens, positions, branches, chosen_last = units[i]
            n = len(tokens)
            ids[row][at : at + n], pos[row][at : at + n], branch[row][at : at + n] = tokens, positions, branches
            unit[row][at : at + n] = [i] * n
            chosen_at[i], rejected_at[i] = row * width + at + chosen_last, row * width + at + n - 1
            at += n
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return PackedPairs(as_long(ids), as_long(pos), as_long(unit), as_long(branch), as_long(chosen_at),
                       as_long(rejected_at), tokens=sum(len(p.chosen) + len(p.rejected) for p in pairs),
                       computed=sum(len(u[0]) for u in units))


def packed_rewards(model, packed: PackedPairs) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) from one forward over packed rows."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=packed.input_ids, attention_mask=packed.attention_mask(),
                      position_ids=packed.position_ids, use_cache=False).last_hidden_state
    flat = hidden.reshape(-1, hidden.size(-1))
    scores = model.score(flat[torch.cat([packed.chosen_at, packed.rejected_at])]).squeeze(-1).float()
    return scores[: len(packed.chosen_at)], scores[len(packed.chosen_at) :]



class TokenRanking(NamedTuple):
    """One ranking row as the model sees it: each answer's token ids (prompt+answer+EOS) and its tie
    groups, best first, as indices into `answers`."""

    answers: list[list[int]]
    groups: list[list[int]]
    weight: float


@dataclass
class PackedGroups:
    """Rankings packed like pairs: per ranking, the tokens all its answers share, then each answer's own.
    branch 0 is the shared part, branch j + 1 answer j's own tokens; an answer sees the shared part and
    itself only."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    unit: torch.Tensor
    branch: torch.Tensor
    at: torch.Tensor  # (answers,) flat index of each answer's last token, rankings in order, answers in order
    tokens: int
    computed: int

    def attention_mask(self) -> torch.Tensor:
        width = self.unit.size(1)
        causal = torch.ones(width, width, dtype=torch.bool, device=self.unit.device).tril()
        same_unit = self.unit[:, :, None] == self.unit[:, None, :]
        other_answer = (self.branch[:, None, :] != 0) & (self.branch[:, None, :] != self.branch[:, :, None])
        return (same_unit & causal & ~other_answer).unsqueeze(1)

    def to(self, dev: torch.device) -> "PackedGroups":
        moved = {k: v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return PackedGroups(**moved)


def pack_groups(groups: list[list[list[int]]], pad_id: int, share_prefix: bool = True, row_tokens: int = 0,
                multiple_of: int = 16) -> PackedGroups:
    """Pack each ranking's answers (token lists) as one unit, their common prefix run once."""
    units = []
    for answers in groups:
        s = 0
        if share_prefix:
            s = min(min(common_prefix(answers[0], a) for a in answers[1:]), min(len(a) for a in answers) - 1)
        tokens, positions, branches, last = list(answers[0][:s]), list(range(s)), [0] * s, []
        for j, a in enumerate(answers):
            tokens += a[s:]
            positions += range(s, len(a))
            branches += [j + 1] * (len(a) - s)
            last.append(len(tokens) - 1)
        units.append((tokens, positions, branches, last))
    members, width = first_fit([len(u[0]) for u in units], row_tokens, multiple_of)
    ids, pos = [[pad_id] * width for _ in members], [[0] * width for _ in members]
    unit, branch = [[-1] * width for _ in members], [[0] * width for _ in members]
    at: list[list[int]] = [[] for _ in units]
    for row, idx in enumerate(members):
        start = 0
        for i in idx:
            tokens, positions, branches, last = units[i]
            n = len(tokens)
            ids[row][start : start + n], pos[row][start : start + n] = tokens, positions
            branch[row][start : start + n], unit[row][start : start + n] = branches, [i] * n
            at[i] = [row * width + start + x for x in last]
            start += n
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return PackedGroups(as_long(ids), as_long(pos), as_long(unit), as_long(branch), as_long([x for a in at for x in a]),
                        tokens=sum(len(a) for answers in groups for a in answers), computed=sum(len(u[0]) for u in units))


def packed_group_rewards(model, packed: PackedGroups) -> torch.Tensor:
    """Each answer's score (answers of all rankings in order), from one forward over packed rows."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=packed.input_ids, attention_mask=packed.attention_mask(),
                      position_ids=packed.position_ids, use_cache=False).last_hidden_state
    return model.score(hidden.reshape(-1, hidden.size(-1))[packed.at]).squeeze(-1).float()



@dataclass
class PackedSequences:
    """Whole sequences (conversations) packed into rows, for a language-model loss."""

    input_ids: torch.Tensor  # (rows, width)
    position_ids: torch.Tensor  # (rows, width), restarting at 0 per sequence
    labels: torch.Tensor  # (rows, width): the token where it counts in the loss, else -100 (padding too)
    unit: torch.Tensor  # (rows, width): which sequence each token belongs to; -1 = padding
    tokens: int  # real tokens, padding excluded

    @property
    def slots(self) -> int:
        return self.input_ids.numel()

    def attention_mask(self) -> torch.Tensor:
        """(rows, 1, width, width) boolean: causal within a sequence, nothing across sequences."""
        width = self.unit.size(1)
        causal = torch.ones(width, width, dtype=torch.bool, device=self.unit.device).tril()
        return ((self.unit[:, :, None] == self.unit[:, None, :]) & causal).unsqueeze(1)

    def to(self, dev: torch.device) -> "PackedSequences":
        moved = {k: v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return PackedSequences(**moved)


def pack_sequences(sequences: list[tuple[list[int], list[int]]], pad_id: int, row_tokens: int = 0,
                   multiple_of: int = 16) -> PackedSequences:
    """Pack (input_ids, labels) sequences into rows (first fit, longest first).

    Each sequence's first label is set to -100: in a packed row the position
    before it is the previous sequence's last token, which must not predict it.
    """
    members, width = first_fit([len(ids) for ids, _ in sequences], row_tokens, multiple_of)
    ids, pos = [[pad_id] * width for _ in members], [[0] * width for _ in members]
    labels, unit = [[-100] * width for _ in members], [[-1] * width for _ in members]
    for row, idx in enumerate(members):
        at = 0
        for i in idx:
            seq, lab = sequences[i]
            n = len(seq)
            ids[row][at : at + n], pos[row][at : at + n] = seq, range(n)
            labels[row][at + 1 : at + n], unit[row][at : at + n] = lab[1:], [i] * n
            at += n
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return PackedSequences(as_long(ids), as_long(pos), as_long(labels), as_long(unit),
                           tokens=sum(len(s) for s, _ in sequences))
