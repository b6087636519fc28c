"""Reward-model training throughput: Ratchet's trainer against TRL's RewardTrainer
on the same model shape, data, batch, max length, learning rate and seed.

    .venv/bin/python -m bench.reward_throughput --shape small --batch 16 --pairs 320 --runs ours,trl-default,trl-best
    .venv/bin/python -m bench.reward_throughput --shape smollm2 --batch 16 --max-length 512 \\
        --runs ours,ours-b64,trl-default,trl-best --out reward.json          # the H200 run (bench/device/run.sh)

Each run is a fresh subprocess (its own peak memory, no warm caches from the
run before), started one after the other in the order given, so runs of the
two trainers see the same machine load; the load average is recorded beside
each. A run trains one epoch over the same training pairs (the shipped
FineGrainedRLHF pairs, split by question exactly as train_reward splits them,
pairs over --max-length dropped because TRL drops them), times every step
after the first --warmup ones, and then scores the held-out pairs with one
evaluation as each trainer trained, so held-out accuracy is comparable too:
ours reads the score at the appended EOS, as rlhf.reward trains it; TRL's
model is scored by its own forward (bench.reward_real_data.score_as_transformers),
whose pooling reads the last token that is not the pad. With the SmolLM2
tokenizer pad == EOS, so that is the token before the EOS; scoring TRL's
model at the EOS would read a position it never trained on.

Reported per run: pairs/s; real tokens/s (chosen + rejected tokens, what TRL
counts as num_tokens); processed tokens/s (positions the model ran, padding
included) and the share of them that is real; peak memory (RSS on CPU,
torch.cuda.max_memory_allocated on GPU); MFU = 6 * N * computed tokens/s over
the device's peak rate, N = the parameters a token passes through (not the
embedding table), attention FLOPs left out. The peak is measured with a
matmul (fp32 on CPU, bf16 on GPU) unless --peak-tflops is given. Ratios are
real tokens/s of each Ratchet run over TRL's best run.

Runs: ours (packing + shared prefix, the defaults), ours-padded (packing off),
ours-bucketed (length bucketing on), ours-compile (torch.compile), a suffix
-bN for another batch size (ours-b64); trl-default (TRL's own speed settings:
gradient checkpointing on, bf16 on GPU), trl-best (no gradient checkpointing,
fused AdamW on GPU), trl-compile (trl-best + torch_compile).

Shapes are random-weight Llama models with the SmolLM2 tokenizer: the
tokenizer sets the data's token lengths, the shape sets the cost.
"""

from __future__ import annotations

import argparse
import tempfile
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

# --- data: the same training and held-out pairs for every run ---


def load_rows(pairs: int, eval_fraction: float, seed: int, max_length: int, tokenizer_path: str, eval_pairs: int = 0):
    """(all rows, training rows, held-out rows): split by question, pairs over max_length dropped."""
    from rlhf._torch import load_tokenizer
    from rlhf.chat import ENCODE_KWARGS, format_pair_text
    from rlhf.data import read_preferences, split_by_prompt

    tok = load_tokenizer(tokenizer_path, "right")
    rows = []
    for r in read_preferences(DATA):
        lengths = [len(tok(format_pair_text(tok, r["prompt"], r[k]), **ENCODE_KWARGS)["input_ids"])
                   for k in ("chosen", "rejected")]
        if max(lengths) <= max_length:
            rows.append(r)
    train, held = split_by_prompt(rows, eval_fraction, seed)
    if eval_pairs:
        held = held[:eval_pairs]
    if pairs and pairs < len(train):
        # Whole questions, in the split's order, until `pairs` training pairs; the held-out questions stay.
        keep_keys, n = set(), 0
        from rlhf.data import prompt_key

        for r in train:
            if n >= pairs and prompt_key(r) not in keep_keys:
                break
            keep_keys.add(prompt_key(r))
            n += 1
        train = [r for r in train if prompt_key(r) in keep_keys]
        held_keys = {prompt_key(r) for r in held}
        rows = [r for r in rows if prompt_key(r) in keep_keys | held_keys]
    return rows, train, held


# --- one run (inside the subprocess) ---


def _throughput(marks: list[tuple[tuple[float, float], float, int]], warmup: int, batch: int, n_train: int) -> dict:
    """From (clock, cumulative real tokens, step) marks: rates over the steps after warmup."""
    timed = [m for m in marks if m[2] >= warmup]
    if len(timed) < 2:
        raise RuntimeError(f"too few timed steps ({len(marks)} steps, warmup {warmup}); give more --pairs")
    ((w0, c0), tok0, s0), ((w1, c1), tok1, s1) = timed[0], timed[-1]
    pairs = min(s1 * batch, n_train) - min(s0 * batch, n_train)
    out = {"timed_steps": s1 - s0, "timed_s": round(w1 - w0, 3), "pairs_per_s": pairs / (w1 - w0),
           "real_tokens_per_s": (tok1 - tok0) / (w1 - w0)}
    if not cuda_available():
        out.update(cpu_s=round(c1 - c0, 3), pairs_per_cpu_s=pairs / (c1 - c0), real_tokens_per_cpu_s=(tok1 - tok0) / (c1 - c0))
    return out


def run_ours(args, variant: str, batch: int) -> dict:
    import torch

    from rlhf.reward import RewardConfig, train_reward

    overrides = {"ours": {}, "ours-padded": {"packing": False}, "ours-bucketed": {"length_bucketing": True},
                 "ours-compile": {"torch_compile": True}}[variant]
    _, train, held = load_rows(args.pairs, args.eval_fraction, args.seed, args.max_length, args.model,
                               args.eval_pairs)
    # val_fraction 0: train on every training pair, as TRL does (no early stopping here to need validation).
    config = RewardConfig(lr=args.lr, epochs=1, batch_size=batch, max_length=args.max_length, margin=False,
                          eval_fraction=args.eval_fraction, val_fraction=0.0, seed=args.seed, log_every=args.warmup,
                          **overrides)
    marks, counts, evals = [], {}, {}
    reset_peak_memory()

    def on_metrics(step: int, m: dict) -> None:
        if "reward/tokens" in m:  # the trainer waited for the device before reporting: the clock is honest
            marks.append((clock(), m["reward/tokens"], step))
            counts.update(m)
        else:
            evals.update(m)

    with tempfile.TemporaryDirectory() as tmp:
        final = train_reward(config, train, args.model, Path(tmp) / "rm", on_metrics=on_metrics, eval_rows=held)
    out = _throughput(marks, args.warmup, batch, len(train))
    # Token shares over the whole epoch (the counters are cumulative).
    real, computed, padded = counts["reward/tokens"], counts["reward/tokens_computed"], counts["reward/tokens_padded"]
    from transformers import AutoModelForSequenceClassification

    n_params = flop_params(AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1))
    # processed = positions the model ran, padding included; computed = the non-padding ones (fewer than the
    # real tokens when prefixes are shared).
    return {**out, "processed_tokens_per_s": out["real_tokens_per_s"] * padded / real,
            "computed_tokens_per_s": out["real_tokens_per_s"] * computed / real,
            "real_share_of_processed": computed / padded, "computed_share_of_real": computed / real,
            "heldout_accuracy": final["eval/reward/accuracy"], "heldout_loss": final["eval/reward/loss"],
            "train_pairs": len(train), "flop_params": n_params, "peak_memory_mb": peak_memory_mb(),
            "settings": {k: v for k, v in vars(config).items() if k not in ("lora_alpha", "lora_dropout",
                                                                             "lora_target_modules")},
            "torch": torch.__version__}


def run_trl(args, variant: str, batch: int) -> dict:
    import datasets
    import torch
    import trl
    from transformers import AutoModelForSequenceClassification, TrainerCallback

    from bench.reward_real_data import score_as_transformers
    from rlhf._torch import load_tokenizer, seed_all
    from rlhf.chat import format_prompt
    from rlhf.reward import tokenize_pairs

    cuda = torch.cuda.is_available()
    _, train, held = load_rows(args.pairs, args.eval_fraction, args.seed, args.max_length, args.model,
                               args.eval_pairs)
    tok = load_tokenizer(args.model, "right")
    seed_all(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa")
    model.config.pad_token_id = tok.pad_token_id
    # TRL's non-conversational path: our chat template formats the prompt, TRL appends EOS (as we do).
    ds = datasets.Dataset.from_list([{"prompt": format_prompt(tok, r["prompt"]), "chosen": r["chosen"],
                                      "rejected": r["rejected"]} for r in train])
    speed = {
        # TRL's own speed settings; only what a CPU cannot run is changed.
        "trl-default": {} if cuda else {"bf16": False, "use_cpu": True},
        "trl-best": {"gradient_checkpointing": False, **({"optim": "adamw_torch_fused"} if cuda else
                                                         {"bf16": False, "use_cpu": True})},
    }
    speed["trl-compile"] = {**speed["trl-best"], "torch_compile": True}
    targs = trl.RewardConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, max_length=args.max_length,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        num_train_epochs=1, seed=args.seed, report_to=[], save_strategy="no", disable_tqdm=True,
        logging_steps=args.warmup, **speed[variant])
    marks: list = []
    padded = {"real": 0, "slots": 0}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            sync()
            marks.append((clock(), trainer._total_train_tokens, state.global_step))

    trainer = trl.RewardTrainer(model=model, args=targs, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    collate = trainer.data_collator

    def counting_collator(examples):
        batch_ = collate(examples)
        padded["real"] += int(batch_["attention_mask"].sum())
        padded["slots"] += batch_["input_ids"].numel()
        return batch_

    trainer.data_collator = counting_collator
    reset_peak_memory()
    trainer.train()
    out = _throughput(marks, args.warmup, batch, len(train))
    mem = peak_memory_mb()
    # Held-out accuracy at the position TRL trained: its model's own pooling (the token before the
    # appended EOS when pad == EOS), not ours at the EOS, which TRL never trained on.
    evals = score_as_transformers(trainer.model.eval(), tokenize_pairs(tok, held, args.max_length), tok.pad_token_id,
                                  batch)
    share = padded["real"] / max(padded["slots"], 1)
    return {**out, "processed_tokens_per_s": out["real_tokens_per_s"] / share,
            "computed_tokens_per_s": out["real_tokens_per_s"], "real_share_of_processed": share,
            "computed_share_of_real": 1.0, "heldout_accuracy": evals["eval/reward/accuracy"],
            "heldout_loss": evals["eval/reward/loss"],
            "train_pairs": len(train), "flop_params": flop_params(model), "peak_memory_mb": mem,
            "settings": {k: getattr(targs, k) for k in ("bf16", "gradient_checkpointing", "optim", "torch_compile",
                                                         "per_device_train_batch_size", "learning_rate", "max_length")},
            "trl": trl.__version__, "torch": torch.__version__}


def run_one(args) -> dict:
    variant, batch = parse_run(args.run, args.batch)
    fn = run_trl if variant.startswith("trl") else run_ours
    return {"run": args.run, "batch": batch, **fn(args, variant, batch)}


# --- the orchestrator ---


def summarise(results: dict, peak: float, args) -> dict:
    trl_runs = {k: v for k, v in results.items() if k.startswith("trl") and "error" not in v}
    best_trl = max(trl_runs, key=lambda k: trl_runs[k]["real_tokens_per_s"], default=None)
    # On a shared CPU the per-CPU-second rates are the steadier measure; the best TRL run is picked by wall rate.
    for name, r in results.items():
        if "error" in r:
            continue
        flops = 6 * r["flop_params"] * r["computed_tokens_per_s"]
        r["mfu"] = flops / peak
        if args.datasheet_peak:
            r["mfu_datasheet"] = flops / args.datasheet_peak
        if best_trl:
            add_ratios_to_trl(r, trl_runs, ("real_tokens_per_s", "real_tokens_per_cpu_s"), "batch")
    return {"trl_best_run": best_trl, "runs": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reward_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--batch", type=int, default=16, help="pairs per optimizer step (runs named -bN override)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=320, help="training pairs (whole questions); 0 = all ~2,090")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="share of questions held out")
    parser.add_argument("--eval-pairs", type=int, default=0, help="held-out pairs scored; 0 = all ~520")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--lr", type=float, default=1e-5)
    add_runner_args(parser)
    args = parser.parse_args(argv)
    settings = {"batch": args.batch, "max_length": args.max_length, "pairs": args.pairs, "lr": args.lr}
    return run_bench(args, argv, module="bench.reward_throughput", run_one=run_one, summarise=summarise,
                     settings=settings)


if __name__ == "__main__":
    raise SystemExit(main())
