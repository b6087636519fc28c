import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import separable_pairs

from rlhf.data import write_jsonl
from rlhf.dpo import DPOConfig, dpo_loss, dpo_train, latest_rounds, tokenize_pair
from rlhf.logprobs import sequence_logps


def test_dpo_loss_on_known_numbers_with_label_smoothing_and_weights():
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])
    # log-ratios: chosen (1, 0), rejected (-1, 1) -> d = beta * (2, -1)
    loss, c, r = dpo_loss(pc, pr, rc, rr, beta=0.5)
    d = torch.tensor([1.0, -0.5])
    assert loss.item() == pytest.approx((-torch.nn.functional.logsigmoid(d)).mean().item())
    assert c.tolist() == pytest.approx([0.5, 0.0]) and r.tolist() == pytest.approx([-0.5, 0.5])
    smooth, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    expected = (-0.9 * torch.nn.functional.logsigmoid(d) - 0.1 * torch.nn.functional.logsigmoid(-d)).mean()
    assert smooth.item() == pytest.approx(expected.item())
    weighted, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, weight=torch.tensor([0.0, 2.0]))
    assert weighted.item() == pytest.approx(-torch.nn.functional.logsigmoid(d[1]).item())


def test_sequence_logps_count_only_response_tokens(tiny_model_path):
    from transformers import AutoModelForCausalLM

    from rlhf._torch import load_tokenizer

    tok = load_tokenizer(tiny_model_path, "right")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    row = separable_pairs(1, 1)[0]
    p, c, r = tokenize_pair(tok, row, max_length=512)
    assert tok.decode(c).startswith("yes") and c[-1] == tok.eos_token_id
    with torch.no_grad():
        batched = sequence_logps(model, [(p, c), (p, r)], tok.pad_token_id, torch.device("cpu"))
        logits = model(torch.tensor([p + c])).logits[0]
    by_hand = sum(torch.log_softmax(logits[len(p) + i - 1], -1)[t].item() for i, t in enumerate(c))
    assert batched[0].item() == pytest.approx(by_hand, abs=1e-4)  # padding of the other row changes nothing


@pytest.fixture(scope="module")
def dpo_trained(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "policy"
    calls = []
    config = DPOConfig(lr=3e-3, beta=0.5, epochs=2, batch_size=8, log_every=4)
    final = dpo_train(config, separable_pairs(12, 2), tiny_model_path, tiny_model_path, out,
                      on_metrics=lambda s, m: calls.append((s, m)))
    return out, final, calls


def test_dpo_learns_the_human_preference(dpo_trained):
    _, final, calls = dpo_trained
    assert {"policy/loss", "policy/accuracy", "policy/margin", "policy/chosen_reward",
            "policy/rejected_reward"} <= set(final)
    assert calls[-1][1]["policy/loss"] < calls[0][1]["policy/loss"] < 0.7
    assert final["policy/accuracy"] == 1.0 and final["policy/margin"] > 0.5


def test_dpo_checkpoint_is_a_plain_policy_with_meta(tiny_model_path, dpo_trained):
    from safetensors.torch import load_file

    out, final, _ = dpo_trained
    start, end = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(Path(out) / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)
    meta = json.loads((Path(out) / "meta.json").read_text())
    assert meta["algorithm"] == "dpo" and meta["metrics"] == final and meta["config"]["beta"] == 0.5


def test_dpo_with_lora_saves_a_merged_plain_model(tiny_model_path, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = DPOConfig(lr=1e-2, beta=0.5, epochs=1, batch_size=8, lora_r=4, lora_alpha=8,
                       lora_target_modules="q_proj,v_proj")
    final = dpo_train(config, separable_pairs(8, 2), tiny_model_path, tiny_model_path, tmp_path / "p")
    assert final["policy/margin"] > 0
    files = {p.name for p in (tmp_path / "p").iterdir()}
    assert "adapter_config.json" not in files and "model.safetensors" in files
    start, end = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(tmp_path / "p" / "model.safetensors")
    assert set(end) == set(start)  # no lora_A / lora_B keys: merged
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    AutoModelForCausalLM.from_pretrained(tmp_path / "p")  # serving loads it as a plain model


def test_lora_without_peft_says_how_to_fix_it(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match="pip install peft"):
        dpo_train(DPOConfig(lora_r=4), separable_pairs(2, 1), tiny_model_path, tiny_model_path, tmp_path / "p")


def test_last_rounds_keeps_only_the_newest_rounds_pairs():
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "round": r} for r in (0, 0, 2, 1, 2)]
    assert [r["round"] for r in latest_rounds(rows, 1)] == [2, 2]
    assert [r["round"] for r in latest_rounds(rows, 2)] == [2, 1, 2]
    assert latest_rounds(rows, 0) == rows
    no_rounds = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    assert latest_rounds(no_rounds, 1) == no_rounds  # a file from elsewhere: every pair


def test_dpo_with_last_rounds_trains_on_the_newest_round_only(tiny_model_path, tmp_path):
    rows = [dict(r, round=0) for r in separable_pairs(6, 1)] + [dict(r, round=1) for r in separable_pairs(2, 1)]
    dpo_train(DPOConfig(lr=1e-3, batch_size=2, last_rounds=1), rows, tiny_model_path, tiny_model_path, tmp_path / "p")
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["n_pairs"] == 2
    with pytest.raises(ValueError, match="dpo.last_rounds must be 0 or more, not -1"):
        dpo_train(DPOConfig(last_rounds=-1), rows, tiny_model_path, tiny_model_path, tmp_path / "q")


def test_train_dpo_cli(tiny_model_path, tmp_path, capsys):
    from rlhf.train_dpo import main

    write_jsonl(separable_pairs(4, 1), tmp_path / "pairs.jsonl")
    assert main(["--data", str(tmp_path / "pairs.jsonl"), "--policy", tiny_model_path, "--ref", tiny_model_path,
                 "--out", str(tmp_path / "pol"), "--lr", "1e-3", "--batch-size", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "policy/loss" in lines[-1]["final"]
    assert len(json.loads((tmp_path / "pol" / "meta.json").read_text())["dataset_sha256"]) == 64


def test_campaign_config_accepts_a_dpo_section_and_a_method():
    from rlhf.configs import SECTIONS, config_errors, policy_method

    assert SECTIONS["dpo"] is DPOConfig
    assert config_errors({"method": "dpo", "dpo": {"beta": 0.2, "lora_r": 8}, "policy": {"lora_r": 4}}) == []
    assert config_errors({"method": "ppo"}) == ["method must be one of rloo, dpo, not 'ppo'"]
    assert config_errors({"dpo": {"beta": "high"}}) == ["dpo.beta must be float, not 'high'"]
    assert policy_method({}) == "rloo" and policy_method({"method": "dpo"}) == "dpo"


def test_dpo_progress_counts_steps_and_kl_checks(tiny_model_path, tmp_path):
    # given: 8 pairs, 2 a step: 4 steps, a KL check after steps 2 and 4
    progress, at_check = [], []
    config = DPOConfig(lr=1e-3, batch_size=2, kl_budget=1e6, kl_check_every=2, kl_max_new_tokens=2, kl_prompts=2)
    dpo_train(config, separable_pairs(4, 2), tiny_model_path, tiny_model_path, tmp_path / "p",
              on_metrics=lambda step, m: at_check.append(progress[-1]) if "policy/kl" in m else None,
              on_progress=progress.append)
    # then: 4 steps and 2 checks of 6 units, then 1 once saved; each check moves it too
    assert progress == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 0.99, 1.0])
    assert at_check == pytest.approx([3 / 6, 0.99])  # reported once the check is done
