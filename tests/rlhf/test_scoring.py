"""The reward scorer runs texts longest first in budgeted batches; each score
must still be the score of that text alone, returned in the caller's order."""

import random

import pytest
import torch
from conftest import synthetic_texts

from rlhf.logprobs import pad_right
from rlhf.scoring import RewardScorer, length_batches, sequence_rewards


@pytest.fixture(scope="module")
def scorer(tiny_model_path):
    torch.manual_seed(0)  # the score head of a causal LM loads random: the same for every test here
    return RewardScorer(tiny_model_path)


def random_answers(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Prompts and answers of very different lengths (one sentence to ~40), in no order."""
    rng = random.Random(seed)
    lines = synthetic_texts(400, seed=seed)
    prompts = [rng.choice(lines).split(" answer:")[0] for _ in range(n)]
    answers = [" ".join(rng.choice(lines) for _ in range(rng.choice([1, 1, 2, 5, 12, 40]))) for _ in range(n)]
    return prompts, answers


def test_length_batches_cover_every_index_once_longest_first_within_both_caps():
    rng = random.Random(3)
    lengths = [rng.randint(1, 300) for _ in range(200)] + [900]  # one longer than the budget
    batches = length_batches(lengths, max_sequences=7, max_tokens=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    assert all(len(b) <= 7 for b in batches)
    assert all(len(b) * lengths[b[0]] <= 600 for b in batches if len(b) > 1)
    assert [900] in [[lengths[i] for i in b] for b in batches]  # over the budget: alone


@pytest.mark.parametrize("batch_size, batch_tokens", [(64, 16 * 1024), (5, 300), (1, 1)])
def test_scores_equal_each_text_scored_alone_in_the_callers_order(scorer, batch_size, batch_tokens):
    prompts, answers = random_answers(60, seed=batch_size)
    ids = scorer.encode(prompts, answers)
    lengths = [len(x) for x in ids]
    assert max(lengths) > 4 * min(lengths) and lengths != sorted(lengths, reverse=True)  # sorting really reorders
    saved, scorer.batch_tokens = scorer.batch_tokens, batch_tokens
    try:
        got = scorer(prompts, answers, batch_size=batch_size)
    finally:
        scorer.batch_tokens = saved
    with torch.no_grad():
        alone = [sequence_rewards(scorer.model, torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long)).item()
                 for x in ids]
    assert got == pytest.approx(alone, abs=1e-4)
    assert len(set(round(r, 4) for r in got)) > len(got) // 2  # distinct scores: a shuffled order would show


def test_scores_equal_the_arrival_order_padded_batches_they_replace(scorer):
    prompts, answers = random_answers(40, seed=11)
    ids = scorer.encode(prompts, answers)
    plain = []
    with torch.no_grad():
        for i in range(0, len(ids), 16):
            input_ids, mask = pad_right(ids[i : i + 16], scorer.tokenizer.pad_token_id, torch.device("cpu"))
            plain.extend(sequence_rewards(scorer.model, input_ids, mask).tolist())
    assert scorer(prompts, answers) == pytest.approx(plain, abs=1e-4)


def test_scorer_keeps_the_end_of_a_text_over_max_length_and_takes_no_texts(scorer):
    prompts, answers = random_answers(3, seed=5)
    long_ = scorer.encode(prompts[:1], [answers[0] + " " + " ".join(synthetic_texts(60))])[0]
    scorer.max_length = 50
    try:
        cut = scorer.encode(prompts[:1], [answers[0] + " " + " ".join(synthetic_texts(60))])[0]
    finally:
        scorer.max_length = 1024
    assert cut == long_[-50:] and cut[-1] == scorer.tokenizer.eos_token_id
    assert scorer([], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        scorer(prompts[:2], answers[:1])
