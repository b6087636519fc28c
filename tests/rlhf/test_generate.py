import pytest

from rlhf.generate import GenerateConfig, completion_mask, generate

PROMPTS = ["is the sky blue?", [{"role": "user", "content": "is the sea green?"}], "hi"]


def test_generate_returns_num_samples_strings_per_prompt_deterministically(tiny_model_path):
    config = GenerateConfig(max_new_tokens=6, batch_size=4, seed=3)
    first = generate(tiny_model_path, PROMPTS, config, num_samples=3)
    second = generate(tiny_model_path, PROMPTS, config, num_samples=3)
    assert len(first) == 3 and all(len(group) == 3 and all(isinstance(s, str) for s in group) for group in first)
    assert first == second
    other = generate(tiny_model_path, PROMPTS, GenerateConfig(max_new_tokens=6, batch_size=4, seed=4), num_samples=3)
    assert other != first


def test_generated_text_has_no_prompt_or_special_tokens(tiny_model_path):
    [[text]] = generate(tiny_model_path, ["is the sky blue?"], GenerateConfig(max_new_tokens=8, do_sample=False))
    assert "<|assistant|>" not in text and "</s>" not in text and "<pad>" not in text and "is the sky" not in text


def test_completion_mask_keeps_tokens_through_the_first_eos():
    import torch

    ids = torch.tensor([[7, 8, 2, 9, 2], [7, 7, 7, 7, 7]])
    assert completion_mask(ids, 2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_generate_cli_writes_one_row_per_sample(tiny_model_path, tmp_path):
    from rlhf.data import read_jsonl, write_jsonl
    from rlhf.generate import main

    write_jsonl([{"prompt": "hi", "prompt_id": "a"}, {"prompt": "yo", "prompt_id": "b"}], tmp_path / "p.jsonl")
    assert main(["--model", tiny_model_path, "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "a.jsonl"),
                 "--num-samples", "2", "--max-new-tokens", "4"]) == 0
    rows = read_jsonl(tmp_path / "a.jsonl")
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_row_sampler_draws_from_the_tempered_softmax():
    import torch

    from rlhf.generate import RowSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(20000, 1)
    sampler = RowSampler(seed=0, rows=list(range(20000)), n_rows=20000, temperature=0.5, dev=torch.device("cpu"))
    out = sampler(None, logits)
    assert torch.isfinite(out).sum(dim=1).eq(1).all()  # one token per row, the rest -inf
    counts = torch.bincount(out.argmax(dim=1), minlength=5).float() / 20000
    expected = torch.softmax(logits[0] / 0.5, dim=0)
    # 20,000 draws: the standard error of each share is below 0.004.
    assert torch.allclose(counts, expected, atol=0.015), (counts, expected)
    assert counts[4] == 0


def test_row_sampler_gives_each_row_the_same_completion_however_the_round_is_split(tiny_model_path):
    from rlhf.chat import format_prompt
    from rlhf.generate import RowSampler, load_policy, sample

    model, tok = load_policy(tiny_model_path, torch_device())
    texts = [format_prompt(tok, p) for p in ("is the sky blue?", "hi", "is the sea green today?", "no")] * 2
    rows = list(range(8))

    def run(chunks):
        out = []
        for part in chunks:
            sampler = RowSampler(seed=11, rows=part, n_rows=8, temperature=1.0, dev=torch_device())
            out += sample(model, tok, [texts[r] for r in part], 10, sampler=sampler).completion_ids.tolist()
        return out

    whole = run([rows])
    split = run([[0, 2, 4, 6], [1, 3, 5, 7]])  # as two data-parallel ranks would, in other batches
    by_row = {r: ids for r, ids in zip([0, 2, 4, 6, 1, 3, 5, 7], split)}

    def strip(ids):  # batches pad to their own longest completion
        return [t for t in ids if t != tok.pad_token_id]

    assert all(strip(whole[r]) == strip(by_row[r]) for r in rows)
    assert len({tuple(strip(x)) for x in whole}) > 2  # rows differ: not greedy in disguise
    other = RowSampler(seed=12, rows=rows, n_rows=8, temperature=1.0, dev=torch_device())
    assert sample(model, tok, texts, 10, sampler=other).completion_ids.tolist() != whole


def torch_device():
    import torch

    return torch.device("cpu")


def test_generate_progress_is_the_share_of_answers_done(tiny_model_path):
    progress = []
    generate(tiny_model_path, PROMPTS[:2], GenerateConfig(max_new_tokens=2, batch_size=3, seed=0), num_samples=4,
             on_progress=progress.append)
    assert progress == pytest.approx([3 / 8, 6 / 8, 1.0])


def test_a_completion_without_eos_before_max_new_tokens_is_marked_truncated(tiny_model_path):
    import torch

    from rlhf.chat import format_prompt
    from rlhf.generate import load_policy, sample

    model, tok = load_policy(tiny_model_path, torch_device())
    eos, other = tok.eos_token_id, next(i for i in range(tok.vocab_size) if i not in (tok.eos_token_id, tok.pad_token_id))

    class EosOnRowZero:  # row 0 ends at its third token; row 1 never ends
        def __call__(self, input_ids, scores):
            out = torch.full_like(scores, -torch.inf)
            out[:, other] = 0.0
            if input_ids.shape[1] - prompt_len == 2:
                out[0] = -torch.inf
                out[0, eos] = 0.0
            return out

    texts = [format_prompt(tok, "is the sky blue?")] * 2
    prompt_len = tok(texts, return_tensors="pt", padding=True)["input_ids"].shape[1]
    rollout = sample(model, tok, texts, 6, sampler=EosOnRowZero())
    assert rollout.truncated == [False, True]
    assert rollout.completion_mask.sum(dim=1).tolist() == [3, 6]


def test_generate_samples_and_the_cli_say_which_answers_were_cut(tiny_model_path, tmp_path):
    from rlhf.data import read_jsonl, write_jsonl
    from rlhf.generate import generate_samples, main

    # a 2-token limit: the tiny model (seeded) says no EOS that soon
    short = generate_samples(tiny_model_path, PROMPTS, GenerateConfig(max_new_tokens=2, seed=1), num_samples=2)
    assert all(s.truncated for group in short for s in group)
    assert [[s.text for s in g] for g in short] == generate(tiny_model_path, PROMPTS, GenerateConfig(max_new_tokens=2, seed=1), num_samples=2)
    write_jsonl([{"prompt": "hi"}], tmp_path / "p.jsonl")
    main(["--model", tiny_model_path, "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "a.jsonl"),
          "--max-new-tokens", "2"])
    assert [r["truncated"] for r in read_jsonl(tmp_path / "a.jsonl")] == [True]
