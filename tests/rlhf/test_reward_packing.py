"""Padding-free packing must compute what the padded batch computes: the same
rewards, loss and gradients, with the shared prefix of chosen and rejected run
once, on the tiny model in float32 (differences are summation order only)."""

import pytest
import torch
from conftest import separable_pairs

from rlhf.packing import TokenPair, pack_pairs
from rlhf.reward import RewardConfig, _pair_loss, epoch_batches, tokenize_pairs

# Rewards of the tiny model are O(0.1-1); float32 sums in another order agree to ~1e-7.
TOL = 1e-5


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf._torch import load_tokenizer

    tok = load_tokenizer(tiny_model_path, "right")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1, attn_implementation="sdpa")
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def awkward_rows():
    """Uneven lengths, an answer that extends the other, identical answers, chat turns, margins and weights."""
    rows = separable_pairs(5, 2, seed=7)
    rows[0]["rejected"] = rows[0]["chosen"] + " and the sea is red."  # chosen is a prefix of rejected
    rows[1]["rejected"] = rows[1]["chosen"]  # identical: the whole text is shared
    rows[2]["chosen"] = "no"  # very short
    rows[3]["prompt"] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "is the sky blue?"}]
    for i, r in enumerate(rows):
        r["margin"], r["weight"] = 0.25 * (i % 3), 0.5 + (i % 2)
    return rows


def _loss_and_grads(model, pairs, config, pad_id):
    model.zero_grad(set_to_none=True)
    loss, r_c, r_r, counts = _pair_loss(model, pairs, config, pad_id, torch.device("cpu"))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), r_c, r_r, counts, grads


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("pack_length", [0, 40, 4096])
def test_packed_rewards_loss_and_gradients_equal_the_padded_batch(model_and_tok, share_prefix, pack_length):
    model, tok = model_and_tok
    pairs = tokenize_pairs(tok, awkward_rows(), max_length=512)
    config = RewardConfig(center_rewards_coefficient=0.01)
    padded = _loss_and_grads(model, pairs, RewardConfig(packing=False, center_rewards_coefficient=0.01), tok.pad_token_id)
    packed = _loss_and_grads(model, pairs, RewardConfig(share_prefix=share_prefix, pack_length=pack_length,
                                                        center_rewards_coefficient=config.center_rewards_coefficient),
                             tok.pad_token_id)
    assert packed[0] == pytest.approx(padded[0], abs=TOL)
    assert torch.allclose(packed[1], padded[1], atol=TOL) and torch.allclose(packed[2], padded[2], atol=TOL)
    assert padded[1].std() > 1e-3  # the random head gives the pairs different rewards: the check has teeth
    assert set(packed[4]) == set(padded[4])
    for name, g in padded[4].items():
        assert torch.allclose(packed[4][name], g, atol=TOL, rtol=1e-4), name
    tokens, computed, slots = packed[3]
    assert tokens == padded[3][0] == sum(len(p.chosen) + len(p.rejected) for p in pairs)
    if pack_length == 4096:  # everything in one row: at most 15 positions of padding (width rounded to 16)
        assert computed <= slots < computed + 16
    if share_prefix:
        assert computed < tokens  # the prompts ran once per pair
    else:
        assert computed == tokens


def test_truncation_keeps_the_end_in_both_paths(model_and_tok):
    model, tok = model_and_tok
    pairs = tokenize_pairs(tok, awkward_rows(), max_length=9)
    assert all(len(p.chosen) <= 9 and len(p.rejected) <= 9 for p in pairs)
    full = tokenize_pairs(tok, awkward_rows(), max_length=512)
    assert all(p.chosen == f.chosen[-9:] for p, f in zip(pairs, full))
    with torch.no_grad():
        padded = _pair_loss(model, pairs, RewardConfig(packing=False, max_length=9), tok.pad_token_id, torch.device("cpu"))
        packed = _pair_loss(model, pairs, RewardConfig(max_length=9), tok.pad_token_id, torch.device("cpu"))
    assert packed[0].item() == pytest.approx(padded[0].item(), abs=TOL)


def test_pack_pairs_shares_the_common_prefix_and_masks_chosen_from_rejected():
    pairs = [TokenPair([5, 6, 7, 8], [5, 6, 9], 0.0, 1.0), TokenPair([1, 2], [3], 0.0, 1.0)]
    packed = pack_pairs(pairs, pad_id=0, share_prefix=True, multiple_of=1)
    # Longest unit first: [5 6 | 7 8 | 9] then [1 2 | 3] in the same row (capacity 5: no), so two rows.
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 0, 0, 0]]
    assert packed.chosen_at.tolist() == [3, 6] and packed.rejected_at.tolist() == [4, 7]
    assert (packed.tokens, packed.computed, packed.slots) == (10, 8, 10)
    mask = packed.attention_mask()[0, 0]
    # Rejected's token 9 sees the shared 5 6 and itself, never chosen's 7 8.
    assert mask[4].tolist() == [True, True, False, False, True]
    assert mask[3].tolist() == [True, True, True, True, False]
    # The second row: the two units do not see each other; padding sees only padding.
    row = packed.attention_mask()[1, 0]
    assert row[2].tolist() == [False, False, True, False, False]
    assert row[4].tolist() == [False, False, False, True, True]


def test_length_bucketing_groups_similar_lengths_and_keeps_every_pair_once():
    import random

    lengths = [random.Random(i).randint(10, 500) for i in range(400)]
    plain = epoch_batches(lengths, 8, random.Random(0), bucketing=False)
    bucketed = epoch_batches(lengths, 8, random.Random(0), bucketing=True)
    assert sorted(i for b in bucketed for i in b) == list(range(400))
    spread = lambda batches: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)  # noqa: E731
    assert spread(bucketed) < spread(plain) / 5
