import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import separable_pairs

from rlhf.data import write_jsonl
from rlhf.sft import IGNORE, SFTConfig, batch_nll, tokenize_conversation, tokenize_conversations, train_sft

CPU = torch.device("cpu")


def conversations(n_prompts: int = 12, per_prompt: int = 2, seed: int = 0) -> list[dict]:
    """The separable pairs' chosen answers as curated replies: always 'yes, the X is Y.'"""
    return [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}],
             "prompt_id": r["prompt_id"]} for r in separable_pairs(n_prompts, per_prompt, seed)]


def _tok(path):
    from rlhf._torch import load_tokenizer

    return load_tokenizer(path, "right")


def _labelled_text(tok, ids, labels) -> list[str]:
    """The labelled tokens decoded as runs of consecutive positions."""
    runs, run = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE:
            run.append(i)
        elif run:
            runs.append(tok.decode(run))
            run = []
    return runs + ([tok.decode(run)] if run else [])


def test_only_the_assistant_turns_and_their_eos_are_labelled(tiny_model_path):
    tok = _tok(tiny_model_path)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "is the sky blue?"},
                {"role": "assistant", "content": "yes, the sky is blue."}, {"role": "user", "content": "and grass?"},
                {"role": "assistant", "content": "grass is green."}, {"role": "user", "content": "thanks"}]
    ids, labels = tokenize_conversation(tok, messages, max_length=512)
    assert _labelled_text(tok, ids, labels) == ["yes, the sky is blue.</s>", "grass is green.</s>"]
    # The text is the template's, up to the last answer + EOS; the trailing user turn carries no loss.
    assert tok.decode(ids) == tok.apply_chat_template(messages[:5], tokenize=False).rstrip("\n")
    assert all(lab in (IGNORE, i) for i, lab in zip(ids, labels))


def test_truncation_keeps_the_start_and_drops_conversations_left_without_an_answer(tiny_model_path):
    tok = _tok(tiny_model_path)
    rows = conversations(2, 1)
    full = tokenize_conversation(tok, rows[0]["messages"], 512)
    cut = tokenize_conversation(tok, rows[0]["messages"], len(full[0]) - 3)
    assert cut == (full[0][:-3], full[1][:-3])
    prompt_only = sum(lab == IGNORE for lab in full[1])  # the first answer token sits at this position
    seqs, dropped = tokenize_conversations(tok, rows, prompt_only)
    assert (seqs, dropped) == ([], 2)


def test_the_loss_is_the_mean_over_the_batchs_assistant_tokens(tiny_model_path):
    """Token-weighted, as TRL's SFTTrainer averages (and transformers' own labels loss on one padded batch)."""
    from transformers import AutoModelForCausalLM

    tok = _tok(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    rows = conversations(3, 1)
    rows[1]["messages"][1]["content"] += " and a much longer answer than the others, it goes on and on."
    seqs, _ = tokenize_conversations(tok, rows, 512)
    with torch.no_grad():
        nll, _, _ = batch_nll(model, seqs, SFTConfig(packing=False), tok.pad_token_id, CPU)
        width = max(len(s[0]) for s in seqs)
        ids = torch.tensor([s[0] + [tok.pad_token_id] * (width - len(s[0])) for s in seqs])
        labels = torch.tensor([s[1] + [IGNORE] * (width - len(s[1])) for s in seqs])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(s[0]) for s in seqs])[:, None]).long()
        reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert nll.numel() == sum(sum(lab != IGNORE for lab in s[1]) for s in seqs)
    assert nll.mean().item() == pytest.approx(reference.item(), abs=1e-5)
    per_conversation = torch.stack([c.mean() for c in nll.split([sum(lab != IGNORE for lab in s[1]) for s in seqs])])
    assert abs(per_conversation.mean().item() - nll.mean().item()) > 1e-3  # the two averages differ here: teeth


def test_packed_and_padded_batches_give_the_same_loss_and_gradient(tiny_model_path):
    """Several conversations in one row see nothing of each other."""
    from transformers import AutoModelForCausalLM

    tok = _tok(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation="sdpa").eval()
    rows = conversations(5, 1, seed=4)
    rows[2]["messages"][1]["content"] += " it is also rather long, so that lengths differ."
    seqs, _ = tokenize_conversations(tok, rows, 512)
    out = {}
    for packing in (False, True):
        model.zero_grad()
        config = SFTConfig(packing=packing, pack_length=4 * max(len(s[0]) for s in seqs))
        nll, correct, (tokens, slots) = batch_nll(model, seqs, config, tok.pad_token_id, CPU)
        nll.mean().backward()
        out[packing] = (nll.detach(), correct, tokens, slots, model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    padded, packed = out[False], out[True]
    assert packed[3] < padded[3]  # fewer positions run: the rows really were packed
    assert padded[2] == packed[2] == sum(len(s[0]) for s in seqs)
    # Same tokens in another order (packing sorts longest first): compare sorted per-token losses.
    assert torch.allclose(padded[0].sort().values, packed[0].sort().values, atol=1e-5)
    assert padded[0].mean().item() == pytest.approx(packed[0].mean().item(), abs=1e-6)
    assert padded[1].sum() == packed[1].sum()
    assert torch.allclose(padded[4], packed[4], atol=1e-6)


@pytest.fixture(scope="module")
def sft_trained(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "policy"
    calls = []
    config = SFTConfig(lr=1e-2, epochs=3, batch_size=6, log_every=3, eval_fraction=0.25)
    final = train_sft(config, conversations(12, 2), tiny_model_path, out, on_metrics=lambda s, m: calls.append((s, m)),
                      meta={"note": "test"})
    return out, final, calls


def test_sft_learns_the_curated_answers(sft_trained):
    _, final, calls = sft_trained
    train = [m for _, m in calls if "sft/loss" in m]
    assert {"sft/loss", "sft/token_accuracy", "sft/tokens_per_s", "sft/conversations_per_s", "sft/tokens",
            "sft/assistant_tokens", "sft/padding_share", "eval/sft/loss", "eval/sft/perplexity",
            "eval/sft/token_accuracy", "sft/steps"} <= set(final)
    assert train[-1]["sft/loss"] < 0.75 * train[0]["sft/loss"]
    assert final["eval/sft/split"] == "heldout" and final["eval/sft/loss"] < train[0]["sft/loss"]
    assert final["eval/sft/perplexity"] == pytest.approx(2.718281828 ** final["eval/sft/loss"], rel=1e-6)
    assert 0 < final["sft/assistant_tokens"] < final["sft/tokens"]
    assert final["sft/steps"] == 3 * 3  # 18 training conversations (9 prompts x 2), 6 a step, 3 epochs


def test_sft_checkpoint_is_a_policy_with_meta(tiny_model_path, sft_trained):
    from safetensors.torch import load_file

    out, final, _ = sft_trained
    start, end = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(Path(out) / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)
    meta = json.loads((Path(out) / "meta.json").read_text())
    assert meta["kind"] == "policy" and meta["algorithm"] == "sft" and meta["metrics"] == final
    assert meta["n_conversations"] == 24 and meta["n_train_conversations"] == 18 and meta["n_eval_conversations"] == 6
    assert meta["note"] == "test" and meta["config"]["lr"] == 1e-2


def test_sft_with_lora_saves_a_merged_plain_model(tiny_model_path, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = SFTConfig(lr=1e-2, batch_size=8, lora_r=4, lora_alpha=8, lora_target_modules="q_proj,v_proj")
    train_sft(config, conversations(8, 1), tiny_model_path, tmp_path / "p")
    files = {p.name for p in (tmp_path / "p").iterdir()}
    assert "adapter_config.json" not in files and "model.safetensors" in files
    start, end = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(tmp_path / "p" / "model.safetensors")
    assert set(end) == set(start)  # no lora_A / lora_B keys: merged
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    AutoModelForCausalLM.from_pretrained(tmp_path / "p")


def test_lora_without_peft_says_how_to_fix_it(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match="pip install peft"):
        train_sft(SFTConfig(lora_r=4), conversations(2, 1), tiny_model_path, tmp_path / "p")


@pytest.mark.parametrize("row, error", [
    ({"prompt": "p", "completion": "c"}, "row 1: needs 'messages'"),
    ({"messages": [{"role": "user", "content": "q"}]}, "row 1: no assistant turn"),
    ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
     "row 1: the first turn is the assistant's"),
    ({"messages": [{"role": "bot", "content": "a"}]}, "row 1: turn 1 must be"),
    ({"messages": [{"role": "user", "content": 3}]}, "row 1: turn 1 must be"),
])
def test_bad_conversation_rows_are_refused_with_the_row_named(tiny_model_path, tmp_path, row, error):
    with pytest.raises(ValueError, match=error):
        train_sft(SFTConfig(), [row], tiny_model_path, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_sft_config_is_a_campaign_section_checked_like_the_others(tiny_model_path, tmp_path):
    from dataclasses import asdict

    from rlhf.configs import SECTIONS, config_errors

    assert config_errors({"sft": asdict(SFTConfig())}) == []
    assert SECTIONS["sft"] is SFTConfig
    assert config_errors({"sft": {"lr": -1.0, "pack_length": -2}}) == [
        "sft.lr must be more than 0, not -1.0", "sft.pack_length must be 0 or more, not -2"]
    with pytest.raises(ValueError, match="sft.batch_size must be 1 or more"):
        train_sft(SFTConfig(batch_size=0), conversations(2, 1), tiny_model_path, tmp_path / "p")


def test_train_sft_cli(tiny_model_path, tmp_path, capsys):
    from rlhf.train_sft import main

    write_jsonl(conversations(4, 1), tmp_path / "sft.jsonl")
    assert main(["--data", str(tmp_path / "sft.jsonl"), "--base", tiny_model_path, "--out", str(tmp_path / "pol"),
                 "--lr", "1e-3", "--batch-size", "2", "--no-packing", "--log-every", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["step"] for x in lines if "sft/loss" in x] == [1, 2]
    assert "eval/sft/loss" in lines[-1]["final"] and lines[-1]["final"]["eval/sft/split"] == "heldout"
    meta = json.loads((tmp_path / "pol" / "meta.json").read_text())
    assert meta["config"]["packing"] is False and len(meta["dataset_sha256"]) == 64
