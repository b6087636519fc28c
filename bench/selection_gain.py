"""Ratings saved by choosing the comparisons (issue 20): how many ratings each
selection strategy needs before the reward model reaches a fixed held-out
accuracy, and a fixed best-of-n win rate over the base, `uncertainty` and
`spread` against `random`.

    nice -n 10 .venv/bin/python -m bench.selection_gain --model tiny --seeds 5
    nice -n 10 .venv/bin/python -m bench.selection_gain --model smollm2 --seeds 5

Pool-based active learning on the shipped FineGrainedRLHF QA data: each of
its 488 questions has 4 real answers (the k samples). Per seed the questions
are split into a test split (30%: only reported), a validation split (15%:
chooses the head's L2 and the targets) and the pool. Round 0 rates --batch
pairs chosen with no reward model (rlhf.selection falls back to random, as a
campaign's first round does); every later round, rlhf.selection.select picks
--batch pool pairs not yet rated, at most one per question, a share
--exploration of them at random, from the current reward model; a simulated
rater (the preference, no noise; a tie is a rating spent that trains
nothing, as on the platform) rates them, and the
reward model is retrained on all ratings so far.

The reward model retrained each round is a Bradley–Terry linear head on the
base model's frozen last-token features (the features each answer is scored
on are computed once, rlhf.scoring), fit in closed-form-like LBFGS steps with
an L2 chosen on the validation split: the cheap stand-in that lets 3
strategies x 3 preferences x 5 seeds x 20 rounds run in minutes on a CPU. A
campaign fine-tunes its reward model every round instead; here the features
stay those of the base model.

Preferences (annotate.simulation.preference, the platform's simulated raters):
`keyword:was` (not about length), `longer`, and `human`: the human
annotators' own judgements of the shipped pairs (only the labelled pairs may
be shown or tested; 2,616 of the 2,928 possible). Measured on the test
split: pairwise accuracy (strict pairs), and the best-of-4 win rate: the
answer the reward model ranks first against each other answer of the
question, judged by the preference (ties half).

Targets, fixed per seed before any strategy runs, on the validation split:
the head trained on every pool pair reaches accuracy A (win rate W) there; the
target is 0.5 + --target-share x (A - 0.5), likewise for W. Ratings needed: the
first round whose test figure reaches the target (none within --rounds: "not
reached", counted as the budget in the means and said so). The saving of a
strategy is 1 - its ratings / random's, paired by seed (same split), with a
t interval over seeds.

Prints one JSON object and a table; writes bench/out/selection_gain-<model>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from itertools import combinations
from pathlib import Path

from bench.data import DATA

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PREFERENCES = ("keyword:was", "longer", "human")
STRATEGIES = ("random", "uncertainty", "spread")
L2_GRID = (0.1, 1.0, 10.0, 100.0)
# 95% two-sided t quantiles by degrees of freedom (seeds - 1).
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


# --- the pool: questions, their answers, the human labels ---

def load_pool(n_questions: int | None = None) -> tuple[list[str], list[list[str]], dict]:
    """Questions in file order, each one's distinct answers (sorted), and the human labels
    {(question index, i, j): 1.0 if answer i was preferred to answer j else 0.0} for i < j."""
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    answers: dict[str, set] = {}
    for r in rows:
        answers.setdefault(r["prompt"], set()).update((r["chosen"], r["rejected"]))
    questions = list(answers)[:n_questions]
    ordered = [sorted(answers[q]) for q in questions]
    index = {q: i for i, q in enumerate(questions)}
    human = {}
    for r in rows:
        qi = index.get(r["prompt"])
        if qi is None:
            continue
        a, b = ordered[qi].index(r["chosen"]), ordered[qi].index(r["rejected"])
        human[(qi, min(a, b), max(a, b))] = 1.0 if a < b else 0.0
    return questions, ordered, human


def base_model(kind: str, workdir: Path) -> str:
    if kind == "tiny":
        from bench.simulated_campaign import tiny_answering_model

        return tiny_answering_model(workdir / "tiny", _questions_for_tiny())
    from bench.simulated_campaign import base_model as campaign_base

    return campaign_base("smollm2", workdir)


def _questions_for_tiny() -> list[str]:
    from bench.data import questions

    return questions()[:200]


def features(model_path: str, questions: list[str], answers: list[list[str]], max_length: int, layers: int = 0):
    """(answers in order, hidden) standardized last-token features, one forward per answer (rlhf.scoring);
    layers > 0 keeps only the model's first `layers` blocks (then its final norm), to bound the time."""
    import torch

    from rlhf.scoring import RewardScorer

    torch.manual_seed(0)
    scorer = RewardScorer(model_path, max_length=max_length)
    if layers:
        backbone = getattr(scorer.model, scorer.model.base_model_prefix)
        backbone.layers = backbone.layers[:layers]
        scorer.model.config.num_hidden_layers = len(backbone.layers)
    prompts = [q for q, ans in zip(questions, answers) for _ in ans]
    _, f = scorer.score_features(prompts, [a for ans in answers for a in ans], batch_size=32)
    # Standardized: a few hidden units of a pretrained model are orders larger than the rest.
    return (f - f.mean(0)) / (f.std(0) + 1e-6)


# --- the simulated preference ---

class Judge:
    """A preference's verdict on two answers of a question: 1.0 (first better), 0.0, 0.5 (tie), None (no label)."""

    def __init__(self, spec: str, questions: list[str], answers: list[list[str]], human: dict):
        self.spec, self.human = spec, human
        self.scores = None
        if spec != "human":
            from annotate.simulation.preference import preference_parse, preference_scores

            pref = preference_parse(spec)
            self.scores = [preference_scores(pref, [q] * len(a), a) for q, a in zip(questions, answers)]

    def __call__(self, q: int, i: int, j: int) -> float | None:
        if self.scores is None:
            lab = self.human.get((q, min(i, j), max(i, j)))
            return None if lab is None else (lab if i < j else 1.0 - lab)
        a, b = self.scores[q][i], self.scores[q][j]
        return 0.5 if a == b else float(a > b)

    def pairs(self, q: int, k: int) -> list[tuple[int, int]]:
        """The pairs a round may show: every pair, or only the labelled ones for human judgements."""
        return [(i, j) for i, j in combinations(range(k), 2) if self(q, i, j) is not None]


# --- the reward model: a Bradley–Terry head on frozen features ---

def fit_head(feats, rated: list[tuple[int, int, float]], l2: float, offsets: list[int]):
    """Head w on (q, i, j, label) ratings: P(i beats j) = sigmoid(w . (f_i - f_j)); ties (0.5) left out."""
    import torch

    rated = [r for r in rated if r[3] != 0.5]  # a tie is a rating spent that trains nothing, as on the platform
    if not rated:
        return torch.zeros(feats.shape[1])
    diff = torch.stack([feats[offsets[q] + i] - feats[offsets[q] + j] for q, i, j, _ in rated])
    y = torch.tensor([lab for *_, lab in rated])
    w = torch.zeros(feats.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = diff @ w
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum") + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def evaluate(w, feats, offsets, answers, qs: list[int], judge: Judge) -> tuple[float, float]:
    """(pairwise accuracy on strict pairs, best-of-k win rate against each other answer, ties half)."""
    r = (feats @ w).tolist()
    correct = total = wins = n = 0.0
    for q in qs:
        k = len(answers[q])
        s = r[offsets[q]: offsets[q] + k]
        for i, j in combinations(range(k), 2):
            v = judge(q, i, j)
            if v is None or v == 0.5:
                continue
            total += 1
            correct += (s[i] > s[j]) == (v == 1.0)
        best = max(range(k), key=lambda i: (s[i], -i))
        for j in range(k):
            v = judge(q, best, j) if j != best else None
            if v is not None:
                wins, n = wins + v, n + 1
    return correct / max(total, 1), wins / max(n, 1)


class FrozenScorer:
    """What select() reads from a reward model (rlhf.scoring.RewardScorer's score_features and
    head_weight), from the precomputed features and this round's head."""

    def __init__(self, feats, index: dict, w):
        self.feats, self.index, self.w = feats, index, w

    def score_features(self, prompts, answers):
        f = self.feats[[self.index[(p, a)] for p, a in zip(prompts, answers)]]
        return (f @ self.w).tolist(), f

    def head_weight(self):
        return self.w


# --- one run: a strategy's learning curve on a seed's split ---

def split(n_questions: int, seed: int, test: float = 0.3, val: float = 0.15) -> tuple[list[int], list[int], list[int]]:
    order = list(range(n_questions))
    random.Random(seed).shuffle(order)
    n_test, n_val = round(test * n_questions), round(val * n_questions)
    return sorted(order[n_val + n_test:]), sorted(order[n_test: n_test + n_val]), sorted(order[:n_test])


def learning_curve(strategy: str, seed: int, data: dict, judge: Judge, pool: list[int], test: list[int], l2: float,
                   args) -> dict:
    from rlhf.selection import Candidate, SelectionConfig, select

    questions, answers, feats, offsets, index = (data[k] for k in ("questions", "answers", "feats", "offsets", "index"))
    rated: list[tuple[int, int, int, float]] = []
    shown: set = set()
    curve, reasons, w = [], [], None
    for rnd in range(args.rounds):
        cands = []
        for q in pool:
            allowed = [p for p in judge.pairs(q, len(answers[q])) if (q, *p) not in shown]
            if allowed:
                cands.append(Candidate(q, questions[q], answers[q], allowed=allowed))
        config = SelectionConfig(strategy=strategy, exploration=args.exploration, heads=args.heads,
                                 seed=seed * 1000 + rnd)
        rows = [{"prompt": questions[q], "chosen": answers[q][i if lab >= 0.5 else j],
                 "rejected": answers[q][j if lab >= 0.5 else i]} for q, i, j, lab in rated if lab != 0.5]
        scorer = FrozenScorer(feats, index, w) if w is not None else None
        picks = select(cands, args.batch, config, reward_path=None, rated_rows=rows, scorer=scorer)
        reasons.append([p.reason for p in picks])
        for p in picks:
            i, j = p.pair
            v = judge(p.key, i, j)
            shown.add((p.key, i, j))
            rated.append((p.key, i, j, v))
        w = fit_head(feats, rated, l2, offsets)
        acc, win = evaluate(w, feats, offsets, answers, test, judge)
        curve.append({"ratings": len(rated), "accuracy": acc, "win_rate": win})
    return {"curve": curve, "reasons": reasons, "picks": [(q, i, j) for q, i, j, _ in rated]}


def choose_l2(data, judge, pool, val, seed) -> tuple[float, float, float]:
    """The L2 with the best validation accuracy (mean over a random 100-pair draw and the whole pool),
    and the validation accuracy and win rate of the head trained on the whole pool with it."""
    rng = random.Random(seed)
    answers, feats, offsets = data["answers"], data["feats"], data["offsets"]
    every = [(q, i, j, judge(q, i, j)) for q in pool for i, j in judge.pairs(q, len(answers[q]))]
    some = rng.sample(every, min(100, len(every)))
    score = {l2: sum(evaluate(fit_head(feats, rows, l2, offsets), feats, offsets, answers, val, judge)[0]
                     for rows in (some, every)) for l2 in L2_GRID}
    best = max(L2_GRID, key=lambda l2: (score[l2], -l2))
    acc, win = evaluate(fit_head(feats, every, best, offsets), feats, offsets, answers, val, judge)
    return best, acc, win


def ratings_to(curve: list[dict], key: str, target: float) -> int | None:
    return next((c["ratings"] for c in curve if c[key] >= target), None)


def mean_interval(xs: list[float]) -> dict:
    m = statistics.fmean(xs)
    half = T95.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return {"mean": m, "lo": m - half, "hi": m + half, "n": len(xs)}


def run(args, log=print) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    questions, answers, human = load_pool(args.questions)
    workdir = OUT / f"selection_gain-{args.model}"
    workdir.mkdir(parents=True, exist_ok=True)
    cache = workdir / f"features-{len(questions)}-{args.max_length}-{args.layers}.pt"
    if args.model_path is None and cache.exists():
        feats = torch.load(cache)
    else:
        path = args.model_path or base_model(args.model, workdir)
        feats = features(path, questions, answers, args.max_length, args.layers)
        if args.model_path is None:
            torch.save(feats, cache)
    t_feats = time.perf_counter() - t0
    offsets = [0]
    for a in answers:
        offsets.append(offsets[-1] + len(a))
    index = {(q, a): offsets[qi] + i for qi, q in enumerate(questions) for i, a in enumerate(answers[qi])}
    data = {"questions": questions, "answers": answers, "feats": feats, "offsets": offsets, "index": index}
    out = {"model": args.model, "args": vars(args), "feature_seconds": round(t_feats, 1), "preferences": {}}
    for spec in args.preferences:
        judge = Judge(spec, questions, answers, human)
        runs = []
        for seed in range(args.seeds):
            pool, val, test = split(len(questions), seed)
            l2, val_acc, val_win = choose_l2(data, judge, pool, val, seed)
            target_acc = 0.5 + args.target_share * (val_acc - 0.5)
            target_win = 0.5 + args.target_share * (val_win - 0.5)
            per = {"seed": seed, "l2": l2, "val_full_accuracy": val_acc, "val_full_win_rate": val_win,
                   "target_accuracy": target_acc, "target_win_rate": target_win, "strategies": {}}
            for strategy in args.strategies:
                lc = learning_curve(strategy, seed, data, judge, pool, test, l2, args)
                lc["ratings_to_accuracy"] = ratings_to(lc["curve"], "accuracy", target_acc)
                lc["ratings_to_win_rate"] = ratings_to(lc["curve"], "win_rate", target_win)
                per["strategies"][strategy] = lc
                log(f"{spec} seed {seed} {strategy}: final acc {lc['curve'][-1]['accuracy']:.3f} (target {target_acc:.3f}"
                    f" at {lc['ratings_to_accuracy']}), win {lc['curve'][-1]['win_rate']:.3f} (target {target_win:.3f}"
                    f" at {lc['ratings_to_win_rate']})")
            runs.append(per)
        out["preferences"][spec] = {"runs": runs, "summary": summarize(runs, args)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def summarize(runs: list[dict], args) -> dict:
    """Per strategy and target: ratings needed (mean, t interval; not reached = the budget), how often not
    reached, final figures, and the paired saving against random. A seed whose whole-pool head is within
    --min-signal of chance on validation has no target worth reaching: left out of that target's counts
    (said in `seeds_with_signal_*`)."""
    budget = args.rounds * args.batch
    out = {}
    for strategy in args.strategies:
        s = {}
        for key in ("accuracy", "win_rate"):
            kept = [r for r in runs if r[f"val_full_{key}"] >= 0.5 + args.min_signal]
            s[f"seeds_with_signal_{key}"] = len(kept)
            if not kept:
                continue
            need = [r["strategies"][strategy][f"ratings_to_{key}"] for r in kept]
            base = [r["strategies"]["random"][f"ratings_to_{key}"] for r in kept] if "random" in args.strategies else None
            s[f"ratings_to_{key}"] = mean_interval([x if x is not None else budget for x in need])
            s[f"not_reached_{key}"] = sum(x is None for x in need)
            s[f"final_{key}"] = mean_interval([r["strategies"][strategy]["curve"][-1][key] for r in kept])
            # The learning curve's mean over the rounds (its area): less noisy than a first crossing.
            area = [statistics.fmean(c[key] for c in r["strategies"][strategy]["curve"]) for r in kept]
            s[f"curve_mean_{key}"] = mean_interval(area)
            if "random" in args.strategies and strategy != "random":
                s[f"curve_mean_{key}_minus_random"] = mean_interval(
                    [x - statistics.fmean(c[key] for c in r["strategies"]["random"]["curve"]) for x, r in zip(area, kept)])
            if base and strategy != "random":
                s[f"saving_{key}"] = mean_interval([1 - (x if x is not None else budget) / (b if b is not None else budget)
                                                    for x, b in zip(need, base)])
        out[strategy] = s
    return out


def table(result: dict) -> str:
    lines = ["| preference | strategy | ratings to accuracy target | saving vs random | ratings to win-rate target |"
             " saving vs random | final accuracy | final win rate | curve-mean accuracy − random's |",
             "|---|---|---|---|---|---|---|---|---|"]
    f = lambda d: f"{d['mean']:.0f} [{d['lo']:.0f}, {d['hi']:.0f}]"  # noqa: E731
    p = lambda d: f"{100 * d['mean']:.0f}% [{100 * d['lo']:.0f}, {100 * d['hi']:.0f}]" if d else "-"  # noqa: E731
    a = lambda d: f"{d['mean']:.3f} ± {(d['hi'] - d['lo']) / 2:.3f}"  # noqa: E731
    for spec, pr in result["preferences"].items():
        for strategy, s in pr["summary"].items():
            miss = lambda k: f" ({s[f'not_reached_{k}']} not reached)" if s[f"not_reached_{k}"] else ""  # noqa: E731
            cells = []
            for k in ("accuracy", "win_rate"):
                if f"ratings_to_{k}" not in s:
                    cells += ["no seed above chance on validation", "-"]
                    continue
                n = s[f"seeds_with_signal_{k}"]
                cells += [f"{f(s[f'ratings_to_{k}'])}{miss(k)}" + (f" ({n} seeds)" if n < len(pr["runs"]) else ""),
                          p(s.get(f"saving_{k}"))]
            finals = [a(s[f"final_{k}"]) if f"final_{k}" in s else "-" for k in ("accuracy", "win_rate")]
            d = s.get("curve_mean_accuracy_minus_random")
            finals.append(f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d else "-")
            lines.append(f"| {spec} | {strategy} | " + " | ".join(cells + finals) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.selection_gain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20, help="rounds of --batch ratings (round 0 random)")
    ap.add_argument("--batch", type=int, default=20, help="ratings per round")
    ap.add_argument("--exploration", type=float, default=0.2)
    ap.add_argument("--heads", type=int, default=5)
    ap.add_argument("--target-share", type=float, default=0.9,
                    help="target = 0.5 + share x (the whole-pool head's validation figure - 0.5)")
    ap.add_argument("--questions", type=int, default=None, help="the first N questions only (default all 488)")
    ap.add_argument("--max-length", type=int, default=512, help="tokens per prompt + answer (the end is kept)")
    ap.add_argument("--layers", type=int, default=0, help="features from the first N blocks only; 0 = all")
    ap.add_argument("--model-path", default=None, help="a model folder to read features from instead of --model's")
    ap.add_argument("--preferences", nargs="+", default=list(PREFERENCES))
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-signal", type=float, default=0.05,
                    help="a seed counts towards a target only if the whole-pool head beats 0.5 by this on validation")
    ap.add_argument("--summarize", default=None, help="a JSON this bench wrote: print its summary again, run nothing")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.summarize:
        result = json.loads(Path(args.summarize).read_text())
        saved = argparse.Namespace(**{**result["args"], "min_signal": args.min_signal})
        for pr in result["preferences"].values():
            pr["summary"] = summarize(pr["runs"], saved)
        print(table(result))
        return
    result = run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"selection_gain-{args.model}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "preferences"}))
    print(json.dumps({spec: pr["summary"] for spec, pr in result["preferences"].items()}, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
