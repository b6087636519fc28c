"""Reward-model scoring speed: rlhf.scoring.RewardScorer (longest first, batches
under a token budget) against the plain padded forward it replaced (batches
of 16 in arrival order, each padded to its longest), on the same model and
the same token ids.

    .venv/bin/python -m bench.reward_scoring --model tiny --texts conversations --n 1200
    .venv/bin/python -m bench.reward_scoring --model pretrained --texts conversations --n 300

Texts are real: the shipped FineGrainedRLHF answers (data/), each after its
question (--texts answers), or as the last turn of a chat conversation whose
earlier turns are other questions of the file with one of their answers
(--texts conversations: 0 to 6 earlier turns, so lengths spread the way chat
logs do). Models: a random-weight Llama shape from bench/throughput.py
(tiny, small, smollm2) with the SmolLM2 tokenizer, `pretrained` for
SmolLM2-135M-Instruct itself (imported into bench/out/ once), or a folder.
A causal LM loads with a fresh score head: the scores mean nothing, the
cost is the model's.

Both scorers run --repeat times, alternating, so they share the machine's
load; the median wall time of each gives tokens/s (the texts' tokens, padding
not counted) and the ratio, new over plain. Tokenizing is left out of both
(it is the same work). The largest difference between the two scorers'
scores is printed too: sorting must not change a score.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.throughput import DATA, SHAPES, SMOLLM2, build_shape_model

PLAIN_BATCH = 16


def answers(n: int) -> tuple[list, list[str]]:
    """The first n distinct (question, answer) of the file, in file order."""
    seen: dict[tuple[str, str], None] = {}
    with DATA.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            for key in ("chosen", "rejected"):
                seen.setdefault((row["prompt"], row[key]), None)
    picked = list(seen)[:n]
    return [p for p, _ in picked], [a for _, a in picked]


def conversations(n: int, seed: int) -> tuple[list, list[str]]:
    """n chat conversations: earlier turns (other questions, one answer each), then the question; the
    scored response is an answer to it."""
    pool_prompts, pool_answers = answers(10**9)
    rng = random.Random(seed)
    prompts, responses = [], []
    for i in range(n):
        j = i % len(pool_prompts)
        turns = []
        for _ in range(rng.choice([0, 0, 0, 0, 0, 0, 0, 1, 2, 6])):
            k = rng.randrange(len(pool_prompts))
            turns += [{"role": "user", "content": pool_prompts[k]}, {"role": "assistant", "content": pool_answers[k]}]
        prompts.append(turns + [{"role": "user", "content": pool_prompts[j]}])
        responses.append(pool_answers[j])
    return prompts, responses


def model_path(name: str, scratch: Path) -> str:
    if name in SHAPES:
        return build_shape_model(name, scratch / name)
    if name == "pretrained":
        if not (SMOLLM2 / "model.safetensors").is_file():
            from rlhf.smollm2 import import_smollm2

            import_smollm2(SMOLLM2)
        return str(SMOLLM2)
    return name


def plain_scores(scorer, ids: list[list[int]]) -> list[float]:
    """The scorer this replaced: arrival order, batches of 16 padded to their longest."""
    import torch

    from rlhf import _torch
    from rlhf.logprobs import pad_right
    from rlhf.scoring import sequence_rewards

    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(ids), PLAIN_BATCH):
            input_ids, mask = pad_right(ids[i : i + PLAIN_BATCH], scorer.tokenizer.pad_token_id, scorer.dev)
            with _torch.autocast(scorer.dev):
                out.extend(sequence_rewards(scorer.model, input_ids, mask).tolist())
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from rlhf.scoring import BATCH_TOKENS, RewardScorer

    parser = argparse.ArgumentParser(prog="python -m bench.reward_scoring", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help=f"{', '.join(SHAPES)}, pretrained, or a model folder")
    parser.add_argument("--texts", choices=["answers", "conversations"], default="conversations")
    parser.add_argument("--n", type=int, default=1200, help="texts scored")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each scorer (median reported)")
    parser.add_argument("--batch-size", type=int, default=64, help="the new scorer's texts per forward (at most)")
    parser.add_argument("--batch-tokens", type=int, default=BATCH_TOKENS, help="the new scorer's padded positions per forward")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    prompts, responses = (answers(args.n) if args.texts == "answers" else conversations(args.n, args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(args.seed)
        scorer = RewardScorer(model_path(args.model, Path(tmp)), batch_tokens=args.batch_tokens)
    ids = scorer.encode(prompts, responses)
    lengths = [len(x) for x in ids]
    tokens = sum(lengths)
    plain_slots = sum(len(ids[i : i + PLAIN_BATCH]) * max(lengths[i : i + PLAIN_BATCH])
                      for i in range(0, len(ids), PLAIN_BATCH))
    times: dict[str, list[float]] = {"plain": [], "new": []}
    scores = {}
    for _ in range(args.repeat):
        for name, fn in (("plain", lambda: plain_scores(scorer, ids)),
                         ("new", lambda: scorer.score_ids(ids, batch_size=args.batch_size))):
            start = time.perf_counter()
            scores[name] = fn()
            times[name].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: tokens / v for k, v in median.items()}
    print(json.dumps({
        "model": args.model, "texts": args.texts, "n": len(ids), "tokens": tokens,
        "mean_tokens": round(tokens / len(ids), 1), "longest": max(lengths),
        "plain_real_share": round(tokens / plain_slots, 3),
        "plain_tokens_per_s": round(rate["plain"], 1), "new_tokens_per_s": round(rate["new"], 1),
        "ratio_new_over_plain": round(rate["new"] / rate["plain"], 2),
        "plain_s": [round(t, 2) for t in times["plain"]], "new_s": [round(t, 2) for t in times["new"]],
        "max_abs_score_diff": max(abs(a - b) for a, b in zip(scores["plain"], scores["new"])),
        "batch_size": args.batch_size, "batch_tokens": args.batch_tokens, "repeat": args.repeat,
        "torch_threads": torch.get_num_threads(), "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "device": str(scorer.dev),
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
