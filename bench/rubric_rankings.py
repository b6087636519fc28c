"""Is asking for aspects, or for rankings of 4, worth the annotators' time?
Simulated raters with a known preference, a known time cost per answer
read, and the same annotator-hours spent three ways (issue 19):

    pairs      A or B                                   2 reads + 1 judgement
    aspects    A or B, plus A / B / same per aspect     2 reads + 1 judgement + 1 per aspect
    rank4      4 answers ordered best first (ties ok)   4 reads + 3 judgements

Figures, per way, over seeds (mean and a 95% t-interval over the seeds):
the reward model's accuracy on held-out questions (every two of their 4
candidate answers whose true utilities differ, ordered as the noiseless
preference orders them) at the same annotator-hours, and the win rate
against the SFT model of a DPO policy trained on the same data, judged by
the noiseless preference on held-out questions (one sampled answer each,
a tie counting half).

The world. Questions "question i: is the sky blue?"; an answer opens yes/no,
may give a reason ("because ..."), and runs on with 0-5 filler clauses. Two
aspects with known utilities: concise = -words / 12 and reasoned = 1 if the
answer gives a reason; the rater's overall utility is their weighted sum
(--weights, 1 and 1 by default; a second world, 0.3 and 1.5, cares mostly
for reasons). Raters are
Plackett–Luce with Gumbel noise of scale TAU (so a pair is Bradley–Terry):
a pair goes to the higher of utility + noise; an aspect likewise on the
aspect's own utility, "same" when the two answers do not differ on it
(equal reason, or lengths within 1 word); a ranking sorts 4 answers by
utility + noise, tying neighbours whose noisy utilities are within TIE.
A pair whose noisy utilities are within TIE is a tie: its time is spent,
and it trains nothing (as the pair exports drop ties).

Time costs (assumptions, flags of this script, not measurements): reading a
short answer T_READ = 12 s (about 40 words at 200 words a minute), a
judgement T_JUDGE = 4 s (one key), an aspect row T_ASPECT = 3 s (its key
and 1/2/3: the answers are already read); ordering 4 answers is 3
judgements (pick the best of 4, of 3, of 2).

Settings: the reward model's learning rate (and, with aspects, the
combination's weights, read off the saved heads) are chosen per way and seed
on validation questions; the test questions decide nothing. DPO runs with
fixed settings (beta 0.1, lr 1e-3, 3 epochs), set by a pilot run on
training questions (never the test ones).
For DPO, "aspects" rows are relabelled by the vote 1 x overall + 1 x each
aspect (swapped when the aspects outvote the overall choice, dropped on a
tie of the vote); "rank4" rows go to DPO whole (Plackett–Luce DPO).

    nice -n 10 .venv/bin/python -m bench.rubric_rankings --seeds 0 1 2 --hours 1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

THINGS = ["sky", "sea", "grass", "road", "cloud", "snow", "leaf", "sand"]
COLOURS = ["blue", "green", "red", "grey", "black", "white", "gold", "brown"]
FILLER = ["and that is all", "as you can see", "and so on", "as we all know", "which is plain", "and it is true"]
ASPECTS = ["concise", "reasoned"]
TAU = 0.5  # Gumbel noise scale of a rater's utilities (Plackett–Luce temperature)
TIE = 0.05  # noisy utilities closer than this read as a tie
WAYS = ("pairs", "aspects", "rank4")
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57}  # two-sided 95% t quantiles by sample size


@dataclass(frozen=True)
class Costs:
    t_read: float = 12.0  # seconds per answer shown
    t_judge: float = 4.0  # seconds per judgement (a pair's choice; a ranking has k - 1)
    t_aspect: float = 3.0  # seconds per aspect row

    def seconds(self, way: str) -> float:
        if way == "pairs":
            return 2 * self.t_read + self.t_judge
        if way == "aspects":
            return 2 * self.t_read + self.t_judge + len(ASPECTS) * self.t_aspect
        return 4 * self.t_read + 3 * self.t_judge


# --- the world: questions, answers, the known utilities ---


def question(i: int) -> str:
    rng = random.Random(i)
    return f"question {i}: is the {rng.choice(THINGS)} {rng.choice(COLOURS)}?"


def answer(i: int, rng: random.Random) -> str:
    q = random.Random(i)
    thing, colour = q.choice(THINGS), q.choice(COLOURS)
    parts = [rng.choice(["yes", "no"]) + f", the {thing} is {colour}"]
    if rng.random() < 0.5:
        parts.append(f"because the {rng.choice(THINGS)} is {rng.choice(COLOURS)}")
    parts += rng.sample(FILLER, rng.randint(0, 5))
    return " ".join(parts) + "."


def aspect_utilities(text: str) -> dict[str, float]:
    return {"concise": -len(text.split()) / 12, "reasoned": 1.0 if "because" in text.split() else 0.0}


# The world's weights of the aspects in the raters' overall utility (--weights):
# one world per process, set by run() before anything is rated.
WEIGHTS = {"concise": 1.0, "reasoned": 1.0}


def utility(text: str) -> float:
    return sum(WEIGHTS[name] * u for name, u in aspect_utilities(text).items())


def candidates(i: int, k: int, rng: random.Random) -> list[str]:
    """k distinct answers to question i."""
    out: list[str] = []
    while len(out) < k:
        a = answer(i, rng)
        if a not in out:
            out.append(a)
    return out


# --- the raters ---


def gumbel(rng: random.Random) -> float:
    return -math.log(-math.log(rng.random() or 1e-12)) * TAU


def rate_pair(i: int, rng: random.Random, with_aspects: bool) -> dict | None:
    a, b = candidates(i, 2, rng)
    ua, ub = utility(a) + gumbel(rng), utility(b) + gumbel(rng)
    if abs(ua - ub) < TIE:
        return None
    chosen, rejected = (a, b) if ua > ub else (b, a)
    row = {"prompt": question(i), "prompt_id": str(i), "chosen": chosen, "rejected": rejected}
    if with_aspects:
        ca, ra = aspect_utilities(chosen), aspect_utilities(rejected)
        labels = {}
        for name in ASPECTS:
            same = ca[name] == ra[name] if name == "reasoned" else abs(ca[name] - ra[name]) * 12 <= 1
            if same:
                labels[name] = 0
            else:
                labels[name] = 1 if ca[name] + gumbel(rng) > ra[name] + gumbel(rng) else -1
        row["aspects"] = labels
    return row


def rate_ranking(i: int, rng: random.Random, k: int = 4) -> dict:
    answers = candidates(i, k, rng)
    noisy = sorted(((utility(t) + gumbel(rng), t) for t in answers), reverse=True)
    groups = [[noisy[0][1]]]
    for (u_prev, _), (u, t) in zip(noisy, noisy[1:]):
        if u_prev - u < TIE:
            groups[-1].append(t)
        else:
            groups.append([t])
    return {"prompt": question(i), "prompt_id": str(i), "ranking": groups}


def dataset(way: str, seconds: float, costs: Costs, train_ids: list[int], seed: int) -> tuple[list[dict], int]:
    """(training rows, judgements made) that `seconds` of annotator time buys."""
    rng = random.Random(f"{way}:{seed}")
    n = int(seconds // costs.seconds(way))
    rows = []
    for _ in range(n):
        i = rng.choice(train_ids)
        row = rate_ranking(i, rng) if way == "rank4" else rate_pair(i, rng, way == "aspects")
        if row is not None and not ("ranking" in row and len(row["ranking"]) == 1):
            rows.append(row)
    return rows, n


def heldout(ids: list[int], seed: int, k: int = 4) -> list[tuple[int, list[str]]]:
    rng = random.Random(f"heldout:{seed}")
    return [(i, candidates(i, k, rng)) for i in ids]


def accuracy(scores: list[float], texts: list[str]) -> tuple[int, int]:
    """(pairs ordered as the true utility orders them, pairs with different utilities)."""
    right = total = 0
    for a in range(len(texts)):
        for b in range(a + 1, len(texts)):
            du = utility(texts[a]) - utility(texts[b])
            if du:
                total += 1
                right += (scores[a] - scores[b]) * du > 0
    return right, total


def scored_accuracy(scores: list, sets: list[tuple[int, list[str]]]) -> float:
    right = total = 0
    at = 0
    for _, texts in sets:
        r, t = accuracy(scores[at : at + len(texts)], texts)
        at += len(texts)
        right, total = right + r, total + t
    return right / max(total, 1)


def interval(xs: list[float]) -> tuple[float, float]:
    """(mean, half-width of a 95% t-interval over the seeds)."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, T95.get(len(xs), 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))


# --- the pipeline: base model, SFT, reward models, DPO ---


def build_sft_model(work: Path, train_ids: list[int], epochs: int = 4) -> str:
    """A tiny Llama taught to answer in the world's style (the reference every DPO policy starts from)."""
    from rlhf.sft import SFTConfig, train_sft
    from rlhf.tiny import build_tiny_model

    rng = random.Random("sft")
    convs = [{"messages": [{"role": "user", "content": question(i)}, {"role": "assistant", "content": answer(i, rng)}],
              "prompt_id": str(i)} for i in train_ids]
    texts = [question(i) for i in train_ids] + [c["messages"][1]["content"] for c in convs]
    base = build_tiny_model(work / "base", texts, seed=0)
    train_sft(SFTConfig(lr=3e-3, epochs=epochs, batch_size=16, eval_fraction=0.0, log_every=1000), convs, base,
              work / "sft")
    return str(work / "sft")


def train_rm(rows: list[dict], way: str, base: str, out: Path, lr: float, epochs: int, watch: list[dict]) -> None:
    """`watch`: a few validation pairs for the trainer's own per-epoch eval, which the bench does not read
    (it scores validation and test itself); without them the trainer would eval on every training row."""
    from rlhf.reward import RewardConfig, train_reward

    aspects = ASPECTS if way == "aspects" else []
    config = RewardConfig(lr=lr, epochs=epochs, batch_size=8, val_fraction=0.0, seed=0, log_every=10_000,
                          aspects=aspects)
    train_reward(config, rows, base, out, eval_rows=watch)


def score_sets(path: Path, sets, aspects: bool) -> list:
    from rlhf.scoring import RewardScorer

    prompts = [question(i) for i, texts in sets for _ in texts]
    return RewardScorer(str(path), aspects=aspects)(prompts, [t for _, texts in sets for t in texts])


# Combinations tried on validation for "aspects" (overall, concise, reasoned):
# a fixed grid of shapes, the same whatever the world's weights.
COMBINATIONS = [(1.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 1.0, 1.0), (0.0, 1.0, 3.0), (0.0, 3.0, 1.0)]


def reward_model(way: str, rows, base: str, work: Path, val, test, lrs: list[float], epochs: int) -> dict:
    """Train one reward model per learning rate; pick (lr, combination) on validation; the test accuracy."""
    best = None
    watch = [{"prompt": question(i), "chosen": max(t, key=utility), "rejected": min(t, key=utility)} for i, t in val[:4]]
    for lr in lrs:
        out = work / f"rm-{way}-{lr:g}"
        train_rm(rows, way, base, out, lr, epochs, watch)
        val_scores, test_scores = score_sets(out, val, way == "aspects"), score_sets(out, test, way == "aspects")
        combos = COMBINATIONS if way == "aspects" else [None]
        for combo in combos:
            pick = (lambda s: [sum(w * x[n] for w, n in zip(combo, ["overall", *ASPECTS])) for x in s]) if combo else (
                lambda s: s)
            v = scored_accuracy(pick(val_scores), val)
            if best is None or v > best["val_accuracy"]:
                best = {"lr": lr, "combination": combo, "val_accuracy": v,
                        "test_accuracy": scored_accuracy(pick(test_scores), test)}
    return best


def dpo_rows(rows: list[dict], way: str) -> list[dict]:
    if way != "aspects":
        return rows
    out = []
    for r in rows:
        vote = 1 + sum(r["aspects"].values())
        if vote:
            pair = dict(r)
            if vote < 0:
                pair["chosen"], pair["rejected"] = r["rejected"], r["chosen"]
            out.append(pair)
    return out


def win_rate(policy: str, ref_answers: list[str], test_ids: list[int], seed: int, new_tokens: int) -> float:
    from rlhf.generate import GenerateConfig, generate

    answers = [a[0] for a in generate(policy, [question(i) for i in test_ids],
                                      GenerateConfig(max_new_tokens=new_tokens, seed=seed, batch_size=64))]
    outcomes = [1.0 if utility(a) > utility(b) else 0.5 if utility(a) == utility(b) else 0.0
                for a, b in zip(answers, ref_answers)]
    return sum(outcomes) / len(outcomes)


def run(seeds: list[int], hours: float, costs: Costs, lrs: list[float], rm_epochs: int, dpo_epochs: int,
        n_train: int = 200, n_val: int = 30, n_test: int = 50, new_tokens: int = 40, dpo: bool = True,
        sft_epochs: int = 4, weights: tuple[float, float] = (1.0, 1.0),
        log=lambda line: print(line, flush=True)) -> dict:
    from rlhf.dpo import DPOConfig, dpo_train
    from rlhf.generate import GenerateConfig, generate

    WEIGHTS.update(zip(ASPECTS, weights))

    ids = list(range(n_train + n_val + n_test))
    train_ids, val_ids, test_ids = ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
    results: dict = {w: {"test_accuracy": [], "val_accuracy": [], "win_rate": [], "judgements": [], "rows": [],
                         "picked": []} for w in WAYS}
    with tempfile.TemporaryDirectory(prefix="rubric-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        sft = build_sft_model(work, train_ids, sft_epochs)
        # Sampled (temperature 0.8, top-p 0.95), as the loop's generate stage does: greedy answers are one
        # sentence for every question, and a win rate over them would be one comparison.
        ref_answers = [a[0] for a in generate(sft, [question(i) for i in test_ids],
                                              GenerateConfig(max_new_tokens=new_tokens, seed=1234, batch_size=64))]
        log(json.dumps({"sft_s": round(time.perf_counter() - t0, 1), "sft_example": ref_answers[0],
                        "sft_mean_utility": statistics.fmean(map(utility, ref_answers))}))
        for seed in seeds:
            val, test = heldout(val_ids, seed), heldout(test_ids, seed)
            for way in WAYS:
                t1 = time.perf_counter()
                rows, judgements = dataset(way, hours * 3600, costs, train_ids, seed)
                rm = reward_model(way, rows, sft, work / f"s{seed}", val, test, lrs, rm_epochs)
                res = results[way]
                res["test_accuracy"].append(rm["test_accuracy"])
                res["val_accuracy"].append(rm["val_accuracy"])
                res["judgements"].append(judgements)
                res["rows"].append(len(rows))
                res["picked"].append({"lr": rm["lr"], "combination": rm["combination"]})
                if dpo:
                    out = work / f"s{seed}" / f"dpo-{way}"
                    dpo_train(DPOConfig(lr=1e-3, beta=0.1, epochs=dpo_epochs, batch_size=8, seed=seed, log_every=10_000),
                              dpo_rows(rows, way), sft, sft, out)
                    res["win_rate"].append(win_rate(str(out), ref_answers, test_ids, seed, new_tokens))
                log(json.dumps({"seed": seed, "way": way, "judgements": judgements, "rows": len(rows), **rm,
                                "win_rate": res["win_rate"][-1] if dpo else None,
                                "s": round(time.perf_counter() - t1, 1)}))
    summary = {}
    for way, res in results.items():
        acc, half = interval(res["test_accuracy"])
        summary[way] = {"seconds_per_judgement": costs.seconds(way), "judgements": res["judgements"],
                        "rows": res["rows"], "test_accuracy": acc, "test_accuracy_ci95": half,
                        "test_accuracy_per_seed": res["test_accuracy"], "picked": res["picked"]}
        if dpo:
            w, wh = interval(res["win_rate"])
            summary[way].update({"win_rate": w, "win_rate_ci95": wh, "win_rate_per_seed": res["win_rate"]})
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rubric_rankings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hours", type=float, default=1.0, help="simulated annotator-hours per way and seed")
    parser.add_argument("--t-read", type=float, default=Costs.t_read)
    parser.add_argument("--t-judge", type=float, default=Costs.t_judge)
    parser.add_argument("--t-aspect", type=float, default=Costs.t_aspect)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3], help="reward lr grid (picked on validation)")
    parser.add_argument("--rm-epochs", type=int, default=3)
    parser.add_argument("--dpo-epochs", type=int, default=3)
    parser.add_argument("--no-dpo", action="store_true")
    parser.add_argument("--weights", type=float, nargs=2, default=[1.0, 1.0], metavar=("CONCISE", "REASONED"),
                        help="the world: each aspect's weight in the raters' overall utility")
    args = parser.parse_args(argv)
    costs = Costs(args.t_read, args.t_judge, args.t_aspect)
    t0 = time.perf_counter()
    summary = run(args.seeds, args.hours, costs, args.lrs, args.rm_epochs, args.dpo_epochs, dpo=not args.no_dpo,
                  weights=tuple(args.weights))
    print(json.dumps({"summary": summary, "weights": dict(WEIGHTS), "seconds": round(time.perf_counter() - t0, 1)},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
