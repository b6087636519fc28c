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
