import pytest

from rlhf.data import prompt_key, read_jsonl, read_preferences, split_by_prompt, validate_preference_rows, write_jsonl


def rows_for(n_prompts, per_prompt):
    return [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(n_prompts) for _ in range(per_prompt)]


@pytest.mark.parametrize("seed", range(5))
def test_split_by_prompt_never_puts_a_prompt_in_both_splits(seed):
    rows = rows_for(20, 3) + [{"prompt": "x", "chosen": "a", "rejected": "b", "prompt_id": f"id{i % 4}"} for i in range(12)]
    train, held = split_by_prompt(rows, 0.25, seed)
    assert len(train) + len(held) == len(rows)
    assert {prompt_key(r) for r in train}.isdisjoint({prompt_key(r) for r in held})
    assert held and train


def test_split_by_prompt_uses_prompt_id_over_text():
    rows = [{"prompt": "same text", "chosen": "a", "rejected": "b", "prompt_id": str(i)} for i in range(10)]
    train, held = split_by_prompt(rows, 0.3, 0)
    assert len(held) == 3 and len(train) == 7


def test_split_by_prompt_is_deterministic_for_a_seed():
    rows = rows_for(30, 2)
    assert split_by_prompt(rows, 0.2, 1) == split_by_prompt(rows, 0.2, 1)


def test_write_then_read_jsonl_round_trip_and_sha(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "hé"}], "chosen": "a", "rejected": "b", "margin": 1.5}]
    sha1 = write_jsonl(rows, tmp_path / "a.jsonl")
    sha2 = write_jsonl(rows, tmp_path / "b.jsonl")
    assert sha1 == sha2 and len(sha1) == 64
    assert read_jsonl(tmp_path / "a.jsonl") == rows


def test_read_jsonl_reports_the_bad_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n{"prompt": oops}\n')
    with pytest.raises(ValueError, match="line 3"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2: expected a JSON object"):
        read_jsonl(path)


def test_preference_rows_get_defaults_and_bad_rows_name_their_row(tmp_path):
    [row] = validate_preference_rows([{"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert row["margin"] == 0.0 and row["weight"] == 1.0
    path = tmp_path / "p.jsonl"
    write_jsonl([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}], path)
    with pytest.raises(ValueError, match="row 2: missing 'rejected'"):
        read_preferences(path)
