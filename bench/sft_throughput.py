"""Supervised fine-tuning throughput: Ratchet's rlhf.sft against TRL's SFTTrainer
on the same model shape, conversations, batch, max length, learning rate and seed.

    .venv/bin/python -m bench.sft_throughput --shape tiny --threads 1
    .venv/bin/python -m bench.sft_throughput --shape smollm2 --conversations 96 --batch 8 --threads 1 \\
        --runs ours,trl-best,ours#2,trl-best#2,ours#3,trl-best#3

The data is real: the shipped FineGrainedRLHF questions (bench/data.py's
file) with their human-preferred answers as the assistant's replies, one
conversation per distinct (question, preferred answer), in file order, the
ones over --max-length tokens left out (TRL would cut them; both trainers
then see whole conversations). The loss is on the answer tokens only on both
sides.

TRL is configured as its SFT documentation recommends for this case: the
conversational prompt-completion schema ({"prompt": [user turn],
"completion": [assistant turn]}), whose default `completion_only_loss`
trains on the answer only and works with any chat template (its
`assistant_only_loss` needs `{% generation %}` markers that the SmolLM2
template lacks); padded batches, because its docs reserve packing and
padding-free batches for FlashAttention, which a CPU does not have (a
`trl-packed` run tries them anyway). trl-default keeps TRL's own speed
settings (gradient checkpointing on; bf16 on a GPU); trl-best turns
gradient checkpointing off (fused AdamW on a GPU). Ours: `ours` (packed
rows, the default), `ours-padded`.

Each run is a fresh subprocess (bench/throughput.py), one after the other,
so the two trainers see the same machine load (recorded beside each run). A
run trains one epoch and times every step after the first --warmup ones.
Tokens are every token of the conversations (prompt, template and answer;
what TRL's num_tokens counts, padding excluded); on a CPU the per-CPU-second
rate is the steadier measure on a shared machine. A name with a '#2' suffix
repeats a run; the summary gives each run's median over its repeats and the
ratio of our median to the best TRL median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.data import DATA
from bench.throughput import SHAPES, add_runner_args, clock, cuda_available, peak_memory_mb, reset_peak_memory, \
    run_bench, sync


def load_conversations(n: int, max_length: int, tokenizer_path: str) -> list[dict]:
    """The first n (question, preferred answer) conversations within max_length tokens."""
    from rlhf._torch import load_tokenizer
    from rlhf.sft import tokenize_conversation

    tok = load_tokenizer(tokenizer_path, "right")
    seen, rows = set(), []
    with DATA.open(encoding="utf-8") as lines:
        for line in lines:
            pair = json.loads(line)
            if (pair["prompt"], pair["chosen"]) in seen:
                continue
            seen.add((pair["prompt"], pair["chosen"]))
            messages = [{"role": "user", "content": pair["prompt"]}, {"role": "assistant", "content": pair["chosen"]}]
            if len(tokenize_conversation(tok, messages, max_length + 1)[0]) <= max_length:
                rows.append({"messages": messages})
            if len(rows) == n:
                break
    return rows


def _rates(marks: list[tuple[tuple[float, float], float, int]], warmup: int, batch: int, n: int) -> dict:
    """From (clock, cumulative tokens, step) marks: rates over the steps after warmup."""
    timed = [m for m in marks if m[2] >= warmup]
    if len(timed) < 2:
        raise RuntimeError(f"too few timed steps ({len(marks)} steps, warmup {warmup}); give more --conversations")
    ((w0, c0), tok0, s0), ((w1, c1), tok1, s1) = timed[0], timed[-1]
    conversations = min(s1 * batch, n) - min(s0 * batch, n)
    out = {"timed_steps": s1 - s0, "timed_s": round(w1 - w0, 3), "tokens_per_s": (tok1 - tok0) / (w1 - w0),
           "conversations_per_s": conversations / (w1 - w0)}
    if not cuda_available():
        out.update(cpu_s=round(c1 - c0, 3), tokens_per_cpu_s=(tok1 - tok0) / (c1 - c0))
    return out


def run_ours(args, variant: str) -> dict:
    from rlhf.sft import SFTConfig, train_sft

    rows = load_conversations(args.conversations, args.max_length, args.model)
    config = SFTConfig(lr=args.lr, epochs=1, batch_size=args.batch, max_length=args.max_length, seed=args.seed,
                       log_every=1, packing=variant != "ours-padded")
    marks: list = []
    reset_peak_memory()

    def on_metrics(step: int, m: dict) -> None:
        if "sft/tokens" in m:  # reported after the step's optimizer update
            sync()
            marks.append((clock(), m["sft/tokens"], step))

    with tempfile.TemporaryDirectory() as tmp:
        final = train_sft(config, rows, args.model, Path(tmp) / "p", on_metrics=on_metrics, eval_rows=rows[:4])
    return {**_rates(marks, args.warmup, args.batch, len(rows)), "conversations": len(rows),
            "padding_share_last_window": final["sft/padding_share"], "peak_memory_mb": peak_memory_mb(),
            "settings": {"packing": config.packing, "lr": config.lr, "batch_size": config.batch_size}}


def run_trl(args, variant: str) -> dict:
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, TrainerCallback

    from rlhf._torch import load_tokenizer, seed_all

    cuda = torch.cuda.is_available()
    rows = load_conversations(args.conversations, args.max_length, args.model)
    tok = load_tokenizer(args.model, "right")
    seed_all(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="sdpa")
    ds = datasets.Dataset.from_list([{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in rows])
    cpu = {} if cuda else {"bf16": False, "use_cpu": True}
    speed = {
        "trl-default": cpu,  # TRL's own speed settings; only what a CPU cannot run is changed
        "trl-best": {"gradient_checkpointing": False, **({"optim": "adamw_torch_fused"} if cuda else cpu)},
    }
    speed["trl-packed"] = {**speed["trl-best"], "packing": True}  # bfd + padding-free; TRL documents it for FlashAttention
    targs = trl.SFTConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, max_length=args.max_length,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        num_train_epochs=1, seed=args.seed, report_to=[], save_strategy="no", disable_tqdm=True,
        logging_steps=args.warmup, **speed[variant])
    marks: list = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            sync()
            marks.append((clock(), trainer._total_train_tokens, state.global_step))

    trainer = trl.SFTTrainer(model=model, args=targs, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    reset_peak_memory()
    trainer.train()
    steps = trainer.state.global_step
    return {**_rates(marks, args.warmup, args.batch, len(rows)), "conversations": len(rows), "steps": steps,
            "peak_memory_mb": peak_memory_mb(),
            "settings": {**{k: getattr(targs, k) for k in ("bf16", "gradient_checkpointing", "optim", "packing",
                                                            "padding_free", "learning_rate",
                                                            "per_device_train_batch_size", "max_length")},
                         "completion_only_loss": trainer.completion_only_loss},  # resolved from the schema
            "trl": trl.__version__}


def run_one(args) -> dict:
    name = args.run.split("#")[0]
    fn = run_trl if name.startswith("trl") else run_ours
    return {"run": args.run, "batch": args.batch, **fn(args, name)}


def summarise(results: dict, peak: float, args) -> dict:
    """Each run's median over its repeats, and our medians over the best TRL median."""
    rates = ("tokens_per_s", "tokens_per_cpu_s")
    by_name: dict = {}
    for key, r in results.items():
        if "error" not in r:
            by_name.setdefault(key.split("#")[0], []).append(r)
    medians = {name: {"repeats": len(rs), **{rate: statistics.median(r[rate] for r in rs) for rate in rates
                                             if all(rate in r for r in rs)}}
               for name, rs in by_name.items()}
    trl_runs = {k: v for k, v in medians.items() if k.startswith("trl") and k != "trl-packed"}
    best = max(trl_runs, key=lambda k: trl_runs[k]["tokens_per_s"], default=None)
    for name, m in medians.items():
        if best and not name.startswith("trl"):
            for rate in rates:
                if rate in m and rate in medians[best]:
                    m[f"{rate}_vs_{best}"] = m[rate] / medians[best][rate]
    for name, m in medians.items():
        ratio = m.get(f"tokens_per_s_vs_{best}")
        if ratio is not None:
            print(f"{name}: {m['tokens_per_s']:.0f} tokens/s (median of {m['repeats']}), "
                  f"{ratio:.2f}x {best} ({medians[best]['tokens_per_s']:.0f} tokens/s)", flush=True)
    return {"trl_best_run": best, "medians": medians, "runs": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sft_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch", type=int, default=8, help="conversations per optimizer step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--conversations", type=int, default=160, help="training conversations (one epoch)")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--lr", type=float, default=2e-5)
    add_runner_args(parser)
    parser.set_defaults(runs=",".join(f"{r}{s}" for s in ("", "#2", "#3") for r in ("ours", "trl-default", "trl-best")))
    args = parser.parse_args(argv)
    settings = {"batch": args.batch, "max_length": args.max_length, "conversations": args.conversations, "lr": args.lr}
    return run_bench(args, argv, module="bench.sft_throughput", run_one=run_one, summarise=summarise,
                     settings=settings)


if __name__ == "__main__":
    raise SystemExit(main())
