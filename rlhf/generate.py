"""Batched sampling from a policy: left padding, KV cache, seeded.

    python -m rlhf.generate --model PATH --prompts prompts.jsonl --out answers.jsonl [--num-samples 2 --max-new-tokens 128]

prompts.jsonl rows need a "prompt" (str or chat turns); other keys (prompt_id, ...)
are copied to each answer row, which adds "response" and "sample".
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from rlhf import _torch
from rlhf.chat import ENCODE_KWARGS, format_prompt
from rlhf.configs import GenerateConfig  # re-exported: callers import it from here too


@dataclass
class Rollout:
    """Token-level result of sampling; RLOO needs the ids, not just the text."""

    prompt_ids: torch.Tensor  # (n, P) left-padded
    prompt_mask: torch.Tensor  # (n, P)
    completion_ids: torch.Tensor  # (n, C) right-padded with pad ids
    completion_mask: torch.Tensor  # (n, C) 1 up to and including the first EOS
    texts: list[str]  # decoded completions without special tokens


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 for tokens up to and including the first EOS, 0 after it."""
    is_eos = completion_ids == eos_token_id
    # Tokens strictly after the first EOS have a nonzero count of EOS before them.
    eos_before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return (eos_before == 0).int()


def load_policy(path: str, dev: torch.device):
    from transformers import AutoModelForCausalLM

    tokenizer = _torch.load_tokenizer(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(dev)
    model.eval()
    return model, tokenizer


@torch.no_grad()
def sample(model, tokenizer, prompt_texts: list[str], max_new_tokens: int, *, do_sample: bool = True,
           temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0) -> Rollout:
    """One generate call over already formatted, already repeated prompts."""
    dev = next(model.parameters()).device
    enc = tokenizer(prompt_texts, return_tensors="pt", padding=True, **ENCODE_KWARGS).to(dev)
    kwargs = dict(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else dict(do_sample=False)
    with _torch.autocast(dev):
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,
            **kwargs,
        )
    prompt_len = enc["input_ids"].shape[1]
    completion = out[:, prompt_len:]
    mask = completion_mask(completion, tokenizer.eos_token_id)
    pad = torch.full_like(completion, tokenizer.pad_token_id)
    completion = torch.where(mask.bool(), completion, pad)
    texts = tokenizer.batch_decode(completion, skip_special_tokens=True)
    return Rollout(enc["input_ids"], enc["attention_mask"], completion, mask, texts)


def generate(policy_path: str, prompts: list, config: GenerateConfig, num_samples: int = 1,
             on_progress: Callable[[float], None] | None = None) -> list[list[str]]:
    """num_samples completions per prompt (prompt text and special tokens stripped)."""
    # --- setup ---
    dev = _torch.device()
    model, tokenizer = load_policy(policy_path, dev)
    _torch.seed_all(config.seed)
    texts = [format_prompt(tokenizer, p) for p in prompts for _ in range(num_samples)]
    # --- loop: fixed-size batches so a seed gives the same samples every run ---
    flat: list[str] = []
    for i in range(0, len(texts), config.batch_size):
        rollout = sample(model, tokenizer, texts[i : i + config.batch_size], config.max_new_tokens,
                         do_sample=config.do_sample, temperature=config.temperature, top_p=config.top_p)
        flat.extend(rollout.texts)
        if on_progress:
            on_progress(min(1.0, (i + config.batch_size) / len(texts)))
    # --- regroup per prompt ---
    return [flat[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def main(argv: list[str] | None = None) -> int:
    from rlhf.cli import add_dataclass_args, dataclass_from_args
    from rlhf.data import read_jsonl, write_jsonl

    parser = argparse.ArgumentParser(prog="python -m rlhf.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="policy folder or hub id")
    parser.add_argument("--prompts", required=True, help="JSONL with a 'prompt' per row")
    parser.add_argument("--out", required=True, help="JSONL to write, one row per sample")
    parser.add_argument("--num-samples", type=int, default=1)
    add_dataclass_args(parser, GenerateConfig)
    args = parser.parse_args(argv)
    config = dataclass_from_args(GenerateConfig, args)
    rows = read_jsonl(args.prompts)
    for n, row in enumerate(rows, start=1):
        if "prompt" not in row:
            raise SystemExit(f"{args.prompts}: row {n} has no 'prompt'")
    answers = generate(args.model, [r["prompt"] for r in rows], config, num_samples=args.num_samples)
    out_rows = [{**row, "response": a, "sample": j} for row, group in zip(rows, answers) for j, a in enumerate(group)]
    sha = write_jsonl(out_rows, args.out)
    print(f"wrote {len(out_rows)} answers to {args.out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
