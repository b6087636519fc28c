"""Writing a trained model out: one folder holding the weights (safetensors,
a LoRA adapter merged in), the tokenizer and `meta.json` (what it is, where
it came from, its config and final metrics). The reward, RLOO and DPO
trainers all save through `save_checkpoint`; `rlhf.store` publishes the
folder afterwards."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf import _torch

KINDS = ("reward", "policy")


def save_checkpoint(out_dir: str | Path, model, tokenizer, meta: dict, *, kind: str, dist: _torch.Dist,
                    peft_model=None) -> None:
    """Save `model` (through `peft_model`'s merged weights when LoRA trained
    it), its tokenizer and meta.json ({"kind": kind, **meta}) to out_dir.

    Every rank calls this; rank 0 writes, the others wait for it, so no rank
    returns before the folder is complete. A reward model gets a pad token
    other than EOS (`portable_pad`); a policy's tokenizer pads on the left,
    as generation needs.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if dist.main:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        saved = unwrap_for_save(model, peft_model)
        if kind == "reward":
            portable_pad(tokenizer, saved)
        saved.save_pretrained(out)
        if kind == "policy":
            tokenizer.padding_side = "left"
        tokenizer.save_pretrained(out)
        (out / "meta.json").write_text(json.dumps({"kind": kind, **meta}, indent=2, default=str))
    dist.barrier()


def unwrap_for_save(model, peft_model):
    """The plain transformers model to save: the adapter merged into the weights when there is one."""
    if peft_model is None:
        return model
    return peft_model.merge_and_unload()


def portable_pad(tokenizer, model) -> None:
    """Give a reward checkpoint a pad token other than EOS, so that it scores the same in other tools.

    transformers' *ForSequenceClassification (and so TRL and pipelines) reads
    the score at the rightmost token that is not pad_token_id. With pad == EOS
    (SmolLM2 and most chat models) that skips the appended EOS rlhf.reward
    scores at, and the downloaded checkpoint would score the token before it:
    other numbers, silently. Any other token works as pad, since the last
    token of every text is the EOS; an existing one (unk, bos) keeps the
    vocabulary, a new <|pad|> row is the last resort. rlhf.reward itself is
    unaffected: its pooling and padding go by the attention mask.
    """
    if tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    for name in ("unk_token", "bos_token"):
        token = getattr(tokenizer, name)
        if token is not None and getattr(tokenizer, f"{name}_id") != tokenizer.eos_token_id:
            tokenizer.pad_token = token
            break
    else:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
