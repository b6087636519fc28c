"""RLOO step throughput: Ratchet's rloo_train against TRL's RLOOTrainer on the
same policy shape, prompts, k, completion length, KL coefficient and seed.

    .venv/bin/python -m bench.rloo_throughput --shape small --prompts-per-step 4 --k 4 --new-tokens 32 --steps 4
    .venv/bin/python -m bench.rloo_throughput --shape smollm2 --new-tokens 128 \\
        --runs ours,ours-compile,ours-p64,ours-compile-p64,trl-default,trl-best --out rloo.json   # the H200 run

A step is one round: sample k completions for each of P prompts (the
shipped data's questions, formatted by the chat template), score them, fold
the KL to the frozen reference (the starting weights) into the reward, take
leave-one-out advantages and one optimizer step over all P x k completions.
Both trainers get the same cheap reward function (count of the letter "e")
so that the policy step, not a reward model, is measured. Random weights
rarely sample EOS, so nearly every completion runs the full --new-tokens on
both sides.

Each run is a fresh subprocess, one after the other in the order given; the
first --warmup steps are left out of the timing (they hold compilation and
allocator warm-up). Reported per run: completions/s, the share of the step
spent inside generate, ms per decode step, peak memory (RSS on CPU,
torch.cuda.max_memory_allocated on GPU), MFU (model FLOPs: 2N per generated
token, 2N per token for each of the old-policy and reference passes, 6N per
token for the update; N without the embedding table, attention left out)
and, for Ratchet's runs, the ratio to TRL's best run at the same number of
completions per step and to TRL's best run overall.

Runs: ours (one generate call per round, eager decode), ours-compile (static
KV cache + torch.compile'd decode step: CUDA graphs; GPU only), a suffix -pN
for N prompts per step (ours-p64 = 256 completions); trl-default (TRL's own
speed settings: gradient checkpointing on, bf16 on GPU), trl-best (no
gradient checkpointing, fused AdamW on GPU), trl-cb (trl-best + transformers'
continuous batching). No vLLM on either side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.throughput import (
    DATA,
    SHAPES,
    add_ratios_to_trl,
    add_runner_args,
    clock,
    cuda_available,
    flop_params,
    parse_run,
    peak_memory_mb,
    reset_peak_memory,
    run_bench,
    sync,
)


def count_e(prompts, completions, **kwargs) -> list[float]:
    """The reward both trainers get: how often the completion writes 'e' (cheap, deterministic)."""
    return [float(c.count("e")) for c in completions]


def load_prompts(n: int) -> list[str]:
    from rlhf.data import read_preferences

    seen: dict[str, None] = {}
    for r in read_preferences(DATA):
        seen.setdefault(r["prompt"], None)
    return list(seen)[:n]


class _GenerateClock:
    """Wraps a model's generate to add up the time spent inside it (device-synchronised)."""

    def __init__(self, model):
        self.seconds, self.calls, self.tokens = 0.0, 0, 0
        self._inner = model.generate
        model.generate = self

    def __call__(self, *args, **kwargs):
        sync()
        start = time.perf_counter()
        out = self._inner(*args, **kwargs)
        sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        prompt = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += out.shape[1] - (prompt.shape[1] if prompt is not None else 0)  # decode steps of this call
        return out


def _rates(marks: list[tuple[tuple[float, float], int]], warmup: int, per_step: int) -> dict:
    timed = [m for m in marks if m[1] >= warmup]
    if len(timed) < 2:
        raise RuntimeError(f"too few timed steps ({len(marks)} steps, warmup {warmup}); give more --steps")
    ((w0, c0), s0), ((w1, c1), s1) = timed[0], timed[-1]
    out = {"timed_steps": s1 - s0, "timed_s": round(w1 - w0, 3), "step_s": (w1 - w0) / (s1 - s0),
           "completions_per_s": per_step * (s1 - s0) / (w1 - w0)}
    if not cuda_available():
        out.update(cpu_s=round(c1 - c0, 3), completions_per_cpu_s=per_step * (s1 - s0) / (c1 - c0))
    return out


def run_ours(args, variant: str, n_prompts: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    import rlhf.rloo as rloo
    from rlhf.rloo import RLOOConfig, rloo_train

    per_step = n_prompts * args.k
    config = RLOOConfig(k=args.k, beta=args.beta, lr=args.lr, num_iterations=args.steps,
                        prompts_per_iteration=n_prompts, ppo_epochs=1, minibatch_size=per_step,
                        max_new_tokens=args.new_tokens, temperature=1.0, logprob_batch_size=per_step,
                        generation_batch_size=0, seed=args.seed, generation_backend="transformers",
                        generation_compile=variant == "ours-compile")
    marks, gen = [], {"generate": None}
    real_rollout = rloo._rollout

    def timed_rollout(model, *a, **kw):  # the policy object is only known inside rloo_train
        if gen["generate"] is None:
            gen["generate"] = _GenerateClock(model)
        return real_rollout(model, *a, **kw)

    rloo._rollout = timed_rollout
    lengths = []

    def on_metrics(step, m):  # rloo_train reads its metrics back from the device: the clock is honest
        marks.append((clock(), step))
        lengths.append(m["policy/completion_length"])

    reset_peak_memory()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rloo_train(config, load_prompts(max(per_step, 64)), args.model, args.model, Path(tmp) / "pol",
                   reward_fn=count_e, on_metrics=on_metrics)
    total = time.perf_counter() - start
    generate = gen["generate"]
    n_params = flop_params(AutoModelForCausalLM.from_pretrained(args.model))
    return {**_rates(marks, args.warmup, per_step), "generate_share": generate.seconds / total,
            "decode_ms_per_step": 1000 * generate.seconds / max(generate.tokens, 1),
            "completion_length": sum(lengths) / len(lengths), "flop_params": n_params,
            "peak_memory_mb": peak_memory_mb(), "completions_per_step": per_step,
            "settings": {k: getattr(config, k) for k in ("k", "beta", "lr", "prompts_per_iteration", "max_new_tokens",
                                                           "generation_compile", "generation_batch_size")},
            "torch": torch.__version__}


def run_trl(args, variant: str, n_prompts: int) -> dict:
    import datasets
    import torch
    import trl
    from transformers import TrainerCallback

    from rlhf._torch import load_tokenizer
    from rlhf.chat import format_prompt

    cuda = torch.cuda.is_available()
    per_step = n_prompts * args.k
    tok = load_tokenizer(args.model, "left")
    ds = datasets.Dataset.from_list([{"prompt": format_prompt(tok, p)} for p in load_prompts(max(per_step, 64))])
    cpu = {} if cuda else {"bf16": False, "use_cpu": True}
    speed = {
        "trl-default": cpu,  # TRL's own speed settings; only what a CPU cannot run is changed
        "trl-best": {"gradient_checkpointing": False, **cpu, **({"optim": "adamw_torch_fused"} if cuda else {})},
    }
    speed["trl-cb"] = {**speed["trl-best"], "use_transformers_continuous_batching": True}
    targs = trl.RLOOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=per_step, num_generations=args.k,
        max_completion_length=args.new_tokens, beta=args.beta, learning_rate=args.lr, temperature=1.0,
        lr_scheduler_type="constant", max_steps=args.steps, seed=args.seed, report_to=[], save_strategy="no",
        disable_tqdm=True, logging_steps=1, **speed[variant])
    marks: list = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            sync()
            marks.append((clock(), state.global_step))

    trainer = trl.RLOOTrainer(model=args.model, reward_funcs=count_e, args=targs, train_dataset=ds,
                              processing_class=tok, callbacks=[Clock()])
    generate = _GenerateClock(trainer.model)
    reset_peak_memory()
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    lengths = [v for v in trainer._metrics["train"].get("completions/mean_length", [])]
    return {**_rates(marks, args.warmup, per_step), "generate_share": generate.seconds / total,
            "decode_ms_per_step": 1000 * generate.seconds / max(generate.tokens, 1),
            "completion_length": sum(lengths) / len(lengths) if lengths else None,
            "flop_params": flop_params(trainer.model), "peak_memory_mb": peak_memory_mb(),
            "completions_per_step": per_step,
            "settings": {k: getattr(targs, k) for k in ("bf16", "gradient_checkpointing", "optim", "num_generations",
                                                         "max_completion_length", "beta", "learning_rate",
                                                         "use_transformers_continuous_batching")},
            "trl": trl.__version__, "torch": torch.__version__}


def run_one(args) -> dict:
    variant, n_prompts = parse_run(args.run, args.prompts_per_step, suffix="-p")
    fn = run_trl if variant.startswith("trl") else run_ours
    return {"run": args.run, **fn(args, variant, n_prompts)}


def summarise(results: dict, peak: float, args) -> dict:
    ok = {k: v for k, v in results.items() if "error" not in v}
    trl_runs = {k: v for k, v in ok.items() if k.startswith("trl")}
    best_trl = max(trl_runs, key=lambda k: trl_runs[k]["completions_per_s"], default=None)
    for name, r in ok.items():
        # Tokens per completion: the prompt (~40 with the template) and the completion.
        prompt_tokens = args.prompt_tokens
        gen_tokens = r["completion_length"] or args.new_tokens
        flops_per_completion = r["flop_params"] * (2 * (prompt_tokens + gen_tokens) + 10 * (prompt_tokens + gen_tokens))
        r["mfu"] = r["completions_per_s"] * flops_per_completion / peak
        if args.datasheet_peak:
            r["mfu_datasheet"] = r["completions_per_s"] * flops_per_completion / args.datasheet_peak
        if best_trl and name.startswith("ours"):
            add_ratios_to_trl(r, trl_runs, ("completions_per_s", "completions_per_cpu_s"), "completions_per_step")
    return {"trl_best_run": best_trl, "runs": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rloo_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--prompts-per-step", type=int, default=4, help="prompts per step (runs named -pN override)")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=128, help="completion length cap")
    parser.add_argument("--beta", type=float, default=0.05, help="KL coefficient")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--steps", type=int, default=6, help="RLOO steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    parser.add_argument("--prompt-tokens", type=int, default=40, help="mean prompt length, for the MFU estimate")
    add_runner_args(parser)
    args = parser.parse_args(argv)
    settings = {"k": args.k, "new_tokens": args.new_tokens, "beta": args.beta,
                "prompts_per_step": args.prompts_per_step, "steps": args.steps}
    return run_bench(args, argv, module="bench.rloo_throughput", run_one=run_one, summarise=summarise,
                     settings=settings)


if __name__ == "__main__":
    raise SystemExit(main())
