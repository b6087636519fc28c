"""Device and precision choices shared by the trainers (imports torch)."""

from __future__ import annotations

import contextlib
import random

import torch


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(dev: torch.device):
    # bf16 autocast on GPU keeps fp32 master weights (stable AdamW) while the
    # matmuls run at bf16 speed; CPU stays plain fp32, where bf16 is slow.
    if dev.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def load_tokenizer(path: str, padding_side: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    # Many causal LMs ship no pad token; EOS is the usual stand-in, which is
    # why pooling and masking here never look for pad ids to find sequence ends.
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token is None:
        raise ValueError(f"tokenizer at {path} has no eos_token; set one before training (chat formatting appends it)")
    tok.padding_side = padding_side
    return tok
