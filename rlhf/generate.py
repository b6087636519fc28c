"""Batched sampling from a policy: left padding, KV cache, seeded.

    python -m rlhf.generate --model PATH --prompts prompts.jsonl --out answers.jsonl [--num-samples 2 --max-new-tokens 128]

prompts.jsonl rows need a "prompt" (str or chat turns); other keys (prompt_id, ...)
are copied to each answer row, which adds "response", "sample" and "truncated"
(true when the answer was cut at max_new_tokens, no EOS before it).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from rlhf import _torch
from rlhf.chat import ENCODE_KWARGS, format_prompt
from rlhf.configs import GenerateConfig, check_config  # GenerateConfig re-exported: callers import it from here too


@dataclass
class Rollout:
    """Token-level result of sampling; RLOO needs the ids, not just the text."""

    prompt_ids: torch.Tensor  # (n, P) left-padded
    prompt_mask: torch.Tensor  # (n, P)
    completion_ids: torch.Tensor  # (n, C) right-padded with pad ids
    completion_mask: torch.Tensor  # (n, C) 1 up to and including the first EOS
    texts: list[str]  # decoded completions without special tokens
    # Per row: no EOS within max_new_tokens, i.e. the answer was cut at the limit.
    truncated: list[bool] | None = None


@dataclass
class Sample:
    """One completion, and whether it was cut at max_new_tokens (no EOS came first)."""

    text: str
    truncated: bool

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


class RowSampler:
    """Sample each row from softmax(logits / temperature), batch-independently.

    A transformers logits processor used with greedy decoding: it leaves
    -inf everywhere but at the sampled token. The uniforms come from one
    seeded stream that draws one number per row of the *whole* round (n_rows)
    at every step; this call's rows (`rows`, indices into the round) take
    theirs. So a row's completion depends on the seed and its index alone,
    not on how the round was split into generate calls or across
    data-parallel ranks (which is what makes a two-process RLOO step equal a
    one-process step). Inverse-CDF sampling: exact categorical draws, and one
    random number per row and step instead of one per vocabulary entry.
    """

    def __init__(self, seed: int, rows: list[int], n_rows: int, temperature: float, dev: torch.device):
        self.generator = torch.Generator(device=dev).manual_seed(seed)
        self.rows = torch.tensor(rows, device=dev)
        self.n_rows, self.temperature, self.dev = n_rows, temperature, dev

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        u = torch.rand(self.n_rows, generator=self.generator, device=self.dev)[self.rows]
        cdf = torch.softmax(scores.float() / self.temperature, dim=-1).cumsum(dim=-1)
        token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp(max=scores.size(-1) - 1)
        return torch.full_like(scores, -math.inf).scatter_(1, token, 0.0)


@torch.no_grad()
def sample(model, tokenizer, prompt_texts: list[str], max_new_tokens: int, *, do_sample: bool = True,
           temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, sampler: RowSampler | None = None,
           compile_decode: bool = False) -> Rollout:
    """One generate call over already formatted, already repeated prompts.

    With `sampler`, tokens come from it (greedy over its one-hot scores) and
    do_sample / temperature / top_p / top_k are not used. `compile_decode`
    (CUDA only) decodes with a static KV cache and a torch.compile'd
    "reduce-overhead" step, i.e. CUDA graphs: a 30-layer model's decode step
    is otherwise bound by kernel launches. Prompts are then padded to a
    multiple of 64 tokens so that few cache shapes (and compiles) occur.
    """
    from transformers import CompileConfig, GenerationConfig

    dev = next(model.parameters()).device
    compile_decode = compile_decode and dev.type == "cuda"
    enc = tokenizer(prompt_texts, return_tensors="pt", padding=True, pad_to_multiple_of=64 if compile_decode else None,
                    **ENCODE_KWARGS).to(dev)
    # A fresh GenerationConfig: the checkpoint's own sampling defaults must not leak in.
    gen = GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id, use_cache=True, do_sample=do_sample and sampler is None)
    if gen.do_sample:
        gen.temperature, gen.top_p, gen.top_k = temperature, top_p, top_k
    if compile_decode:
        gen.cache_implementation = "static"
        gen.compile_config = CompileConfig(mode="reduce-overhead")
    else:
        gen.disable_compile = True
    with _torch.autocast(dev):
        out = model.generate(**enc, generation_config=gen, logits_processor=[sampler] if sampler else None)
    prompt_len = enc["input_ids"].shape[1]
    completion = out[:, prompt_len:]
    mask = completion_mask(completion, tokenizer.eos_token_id)
    # Before padding is written over it: a row that stopped has its EOS here
    # (generate pads a finished row, so the width is that of the longest row).
    truncated = (~(completion == tokenizer.eos_token_id).any(dim=1)).tolist()
    pad = torch.full_like(completion, tokenizer.pad_token_id)
    completion = torch.where(mask.bool(), completion, pad)
    texts = tokenizer.batch_decode(completion, skip_special_tokens=True)
    return Rollout(enc["input_ids"], enc["attention_mask"], completion, mask, texts, truncated)


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


class VLLMSampler:
    """Sampling through vLLM in the training process (an optional dependency).

    Colocated as TRL 1.16's RLOOTrainer colocates it (vllm_mode="colocate"):
    the engine runs in this process, loads the policy from its folder once,
    and gets the trained weights pushed into it before each round
    (`sync`). Each row carries its own seed, so, as with RowSampler, a row's
    completion does not depend on how the round was split. Not exercised by
    this repository's tests: vLLM is installed neither on the CI machine nor
    on the GPU machine the benchmarks ran on.
    """

    def __init__(self, policy_path: str, max_model_len: int, gpu_memory_utilization: float, seed: int):
        import os

        from vllm import LLM

        # vLLM's in-process launcher reads the torch.distributed variables; a single process gets rank 0 of 1.
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                           ("MASTER_PORT", "29533")):
            os.environ.setdefault(key, value)
        self.llm = LLM(model=str(policy_path), gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, distributed_executor_backend="external_launcher", seed=seed,
                       enable_prefix_caching=True, dtype="bfloat16")

    def sync(self, model) -> None:
        """Copy the policy's current weights into the engine (names as transformers saves them)."""
        engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        engine_model.load_weights((name, p.detach()) for name, p in model.state_dict().items())
        self.llm.reset_prefix_cache()

    def __call__(self, tokenizer, prompt_texts: list[str], seeds: list[int], max_new_tokens: int,
                 temperature: float) -> Rollout:
        from vllm import SamplingParams

        prompts = [tokenizer(t, **ENCODE_KWARGS)["input_ids"] for t in prompt_texts]
        params = [SamplingParams(n=1, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens, seed=s)
                  for s in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        completions = [list(o.outputs[0].token_ids) for o in outputs]
        # The same tensors as the transformers path: prompts left-padded, completions right-padded.
        pad, width = tokenizer.pad_token_id, max(len(p) for p in prompts)
        prompt_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        c_width = max(max(len(c) for c in completions), 1)
        completion = torch.tensor([c + [pad] * (c_width - len(c)) for c in completions])
        mask = completion_mask(completion, tokenizer.eos_token_id) * (torch.arange(c_width) < torch.tensor(
            [[len(c)] for c in completions])).int()
        completion = torch.where(mask.bool(), completion, torch.full_like(completion, pad))
        texts = tokenizer.batch_decode(completion, skip_special_tokens=True)
        truncated = [o.outputs[0].finish_reason == "length" for o in outputs]
        return Rollout(prompt_ids, prompt_mask, completion, mask, texts, truncated)


def generate(policy_path: str, prompts: list, config: GenerateConfig, num_samples: int = 1,
             on_progress: Callable[[float], None] | None = None) -> list[list[str]]:
    """num_samples completions per prompt (prompt text and special tokens stripped)."""
    groups = generate_samples(policy_path, prompts, config, num_samples, on_progress)
    return [[s.text for s in group] for group in groups]


def generate_samples(policy_path: str, prompts: list, config: GenerateConfig, num_samples: int = 1,
                     on_progress: Callable[[float], None] | None = None) -> list[list[Sample]]:
    """As generate, with whether each completion was cut at max_new_tokens."""
    # --- setup ---
    check_config("generate", config)
    dev = _torch.device()
    model, tokenizer = load_policy(policy_path, dev)
    _torch.seed_all(config.seed)
    texts = [format_prompt(tokenizer, p) for p in prompts for _ in range(num_samples)]
    # --- loop: fixed-size batches so a seed gives the same samples every run ---
    flat: list[Sample] = []
    for i in range(0, len(texts), config.batch_size):
        rollout = sample(model, tokenizer, texts[i : i + config.batch_size], config.max_new_tokens,
                         do_sample=config.do_sample, temperature=config.temperature, top_p=config.top_p)
        flat.extend(Sample(t, cut) for t, cut in zip(rollout.texts, rollout.truncated))
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
    answers = generate_samples(args.model, [r["prompt"] for r in rows], config, num_samples=args.num_samples)
    out_rows = [{**row, "response": a.text, "sample": j, "truncated": a.truncated}
                for row, group in zip(rows, answers) for j, a in enumerate(group)]
    sha = write_jsonl(out_rows, args.out)
    print(f"wrote {len(out_rows)} answers to {args.out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
