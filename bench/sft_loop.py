"""Post-training's two halves: does SFT on the answers annotators write, plus
DPO on their ratings, beat DPO alone for the same human effort?

    .venv/bin/python -m bench.sft_loop --model tiny --rounds 3 --comparisons 12 --raters 2 --seeds 3
    .venv/bin/python -m bench.sft_loop --model tiny --split validation    # where settings are chosen

On the real processes (config/platform.py: gunicorn web and a Celery worker
on PostgreSQL + Redis), per seed, two campaigns from the same base model:

- "sft+dpo": demonstrations asked for on both bad. The simulated raters
  (`manage.py simulate_raters --url`, over HTTP) prefer answers closer to
  the question's reference answer (the `reference` preference: word-overlap
  F1 with the first preferred answer of the shipped FineGrainedRLHF data),
  and when the reference beats the better answer by --both-bad-margin they
  call both bad and write the reference with the rating, in its body as the
  rating page does. Simulated reviewers accept it through the review
  service (one accept, the campaign default). Each round's training run
  fine-tunes on the accepted demonstrations not yet learned (the sft stage,
  every round) and the DPO step starts from that SFT model.
- "dpo": demonstrations off; the same raters, judging by the same
  references, never write and always pick one answer.

Human actions: a rating is one action and a written answer --write-cost
more (default 1). The dpo campaign gets as many comparisons per round as
the sft+dpo campaign of the same seed spent actions, over its rounds and
raters, so both arms cost the same number of actions (up to rounding).

After the last round each arm's newest policy and the base answer the
questions of --split (test: the last --eval-prompts distinct questions of
the data; validation: the --eval-prompts before them; neither is ever
imported): the win rate over the base judged by the raters' preference
without noise, ties half, with a 95% Wilson interval per seed and pooled;
and the difference sft+dpo - dpo per seed, with a Student-t interval across
seeds and a paired interval over the seeds' questions.

Prints one JSON object; writes it to bench/out/sft_loop-<model>-<split>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from annotate.simulation.preference import Judge, preference_margin, preference_outcome, preference_parse, references_load
from annotate.stats.intervals import wilson_interval
from bench.data import DATA, questions
from bench.simulated_campaign import TRAINING, _verified, base_model
from config.platform import Platform

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
ARMS = ("sft+dpo", "dpo")
# Student t, 97.5% quantile, by degrees of freedom (seeds - 1).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
# SFT on the tiny model: a dozen demonstrations a round, several passes.
# lr 3e-4 was chosen on the validation split (2 seeds, bench/RESULTS.md):
# SFT+DPO minus DPO alone +0.004 there, against -0.082 at 1e-3 and -0.074
# at 1e-3 with the base as DPO's reference.
SFT = {"tiny": {"lr": 3e-4, "epochs": 4, "batch_size": 8, "max_length": 160},
       "smollm2": {"lr": 2e-5, "epochs": 2, "batch_size": 8, "max_length": 256}}


def splits(eval_prompts: int) -> dict[str, list[str]]:
    """test: the last eval_prompts distinct questions; validation: the ones before."""
    every = questions()
    return {"test": every[-eval_prompts:], "validation": every[-2 * eval_prompts:-eval_prompts],
            "train": every[: -2 * eval_prompts]}


def training_config(args, seed: int = 0) -> dict:
    """The campaign's training settings; `seed` seeds every stage (data
    order, splits, head init, sampling the rounds' answers), so that seeds
    differ in training as well as in the raters' draws."""
    config = json.loads(json.dumps(TRAINING[(args.model, "dpo")]))
    config["sft"] = dict(SFT[args.model], **({"lr": args.sft_lr} if args.sft_lr else {}),
                         **({"epochs": args.sft_epochs} if args.sft_epochs else {}))
    config["generate"] = {"max_new_tokens": args.new_tokens, "batch_size": 32}
    for section in ("reward", "dpo", "sft", "generate"):
        config[section]["seed"] = seed
    return config


def rate_round(platform: Platform, cid: int, args, *, arm: str, seed: int, round_index: int) -> dict:
    """`manage.py simulate_raters --url`: the pool rates the open round over HTTP (and writes, in sft+dpo)."""
    cmd = [sys.executable, "manage.py", "simulate_raters", "--campaign", str(cid), "--url", platform.base,
           "--raters", str(args.raters), "--preference", "reference", "--references", str(DATA),
           "--strength", str(args.strength), "--noise", str(args.noise), "--seed", str(seed * 100 + round_index),
           "--until-round-closed", "--json"]
    cmd += ["--both-bad-margin", str(args.both_bad_margin), "--review"] if arm == "sft+dpo" else ["--no-write"]
    done = subprocess.run(cmd, cwd=ROOT, env=platform.env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"simulate_raters failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_arm(platform: Platform, admin, model: str, args, *, arm: str, seed: int, comparisons: int,
            log=print) -> dict:
    """One campaign of args.rounds rounds; its rounds' ratings, writings and
    training stages, and the newest policy's folder."""
    train = splits(args.eval_prompts)["train"][: args.rounds * comparisons]
    writes = arm == "sft+dpo"
    status, campaign = admin.post("/api/campaigns/create/", {
        "name": f"{arm} seed {seed}", "base_model": model, "overlap": args.raters,
        "comparisons_per_round": comparisons, "training_config": training_config(args, seed),
        "method": "dpo", "gold_frequency": 0.0,
        "demonstrations": "both_bad" if writes else "off", "sft_schedule": "every_round", "sft_anchor": args.anchor,
    })
    assert status == 201, campaign
    cid = campaign["id"]
    jsonl = "\n".join(json.dumps({"external_id": f"q{i}", "prompt": p}) for i, p in enumerate(train))
    status, body = admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl.encode(),
                              content_type="application/x-ndjson")
    assert status == 200 and body["created"] == len(train), body
    assert admin.post(f"/api/campaigns/{cid}/start/")[0] == 202
    platform.wait_for(lambda: (admin.get(f"/api/campaigns/{cid}/progress/")[1]["round"] or {}).get("round") == 0,
                      timeout=7200, what="round 0", interval=0.5)
    rounds = []
    for r in range(args.rounds):
        t = time.perf_counter()
        rated = rate_round(platform, cid, args, arm=arm, seed=seed, round_index=r)

        def trained():
            runs = admin.get(f"/api/training-runs/?campaign={cid}")[1]
            mine = [x for x in runs if x["kind"] == "train" and x["round"] == r]
            failed = [x for x in mine if x["status"] == "failed"]
            if failed:
                raise SystemExit(f"training run {failed[0]['id']} failed: {failed[0]['error']}")
            return next((x for x in mine if x["status"] == "succeeded"), None)

        run = platform.wait_for(trained, timeout=4 * 3600, what=f"training after round {r}", interval=1.0)
        sft = run["stages"]["sft"]["outputs"]
        rounds.append({
            "round": r, "ratings": rated["ratings"], "demonstrations": rated["demonstrations"],
            "reviewed": rated["reviewed"], "both_bad": sum(x["choices"].get("both_bad", 0) for x in rated["raters"].values()),
            "sft": None if sft.get("skipped") else {"version": sft["sft_version"], "conversations": sft["conversations"]},
            "sft_skipped": sft.get("reason"), "seconds": time.perf_counter() - t,
        })
        log(f"[{arm} seed {seed}] round {r}: {rated['ratings']} ratings, {rated['demonstrations']} written, "
            f"sft {rounds[-1]['sft'] or 'skipped: ' + str(rounds[-1]['sft_skipped'])}, {rounds[-1]['seconds']:.1f} s")
    newest = admin.get(f"/api/campaigns/{cid}/models/")[1]["policies"][-1]
    ratings = sum(x["ratings"] for x in rounds)
    demonstrations = sum(x["demonstrations"] for x in rounds)
    return {"campaign": cid, "arm": arm, "seed": seed, "comparisons_per_round": comparisons, "rounds": rounds,
            "ratings": ratings, "demonstrations": demonstrations,
            "actions": ratings + args.write_cost * demonstrations,
            "newest": {"version": newest["version"], "sft_model": newest["sft_model"], "path": _verified(newest)}}


class Judged:
    """The base's answers to the split's questions once per seed; each arm's
    newest policy's answers judged against them, question by question."""

    def __init__(self, prompts: list[str], judge: Judge, *, new_tokens: int, seed: int):
        self.prompts, self.judge, self.new_tokens, self.seed = prompts, judge, new_tokens, seed
        self.base_scores: list[float] | None = None

    def _answers(self, path: str, seed: int) -> list[str]:
        from rlhf.generate import GenerateConfig, generate

        config = GenerateConfig(max_new_tokens=self.new_tokens, seed=seed, batch_size=32)
        return [a[0] for a in generate(path, self.prompts, config, num_samples=1)]

    def base(self, path: str) -> None:
        self.base_scores = self.judge.scores(self.prompts, self._answers(path, self.seed))

    def outcomes(self, path: str) -> tuple[list[float], list[str]]:
        """Per question 1 win, 0.5 tie, 0 loss over the base; the answers."""
        texts = self._answers(path, self.seed + 1)
        scores = self.judge.scores(self.prompts, texts)
        return [preference_outcome(preference_margin(s, b)) for s, b in zip(scores, self.base_scores)], texts


def win_rate(outcomes: list[float]) -> dict:
    n = len(outcomes)
    lo, hi = wilson_interval(sum(outcomes), n)
    return {"win_rate": sum(outcomes) / n, "ci95": [lo, hi], "n": n,
            "wins": outcomes.count(1.0), "ties": outcomes.count(0.5), "losses": outcomes.count(0.0)}


def mean_interval(values: list[float]) -> dict:
    """Mean with a 95% Student-t interval across seeds (None with one seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci95": [None, None], "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def paired_interval(diffs: list[float]) -> dict:
    """Mean of per-question differences (sft+dpo outcome - dpo outcome, the
    same question and base answer), normal 95% interval."""
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def sft_loop(args, workdir: Path, log=print, platform: Platform | None = None) -> dict:
    """Both arms for each seed on one platform (started here unless given); the report."""
    prompts = splits(args.eval_prompts)[args.split]
    judge = Judge(preference_parse("reference"), references=references_load(DATA))
    model = base_model(args.model, workdir)
    own = platform is None
    platform = platform or Platform(workdir, backend="services").start()
    seeds, per_seed = [args.seed + i for i in range(args.seeds)], []
    try:
        admin = platform.user("bench-admin", "campaign_admin", "ml_engineer")
        for seed in seeds:
            judged = Judged(prompts, judge, new_tokens=args.new_tokens, seed=seed + 1234)
            judged.base(model)
            with_sft = run_arm(platform, admin, model, args, arm="sft+dpo", seed=seed, comparisons=args.comparisons,
                               log=log)
            # The same actions for DPO alone: more comparisons a round.
            dpo_comparisons = max(args.comparisons, round(with_sft["actions"] / (args.rounds * args.raters)))
            alone = run_arm(platform, admin, model, args, arm="dpo", seed=seed, comparisons=dpo_comparisons, log=log)
            outcomes = {}
            for arm in (with_sft, alone):
                outcomes[arm["arm"]], texts = judged.outcomes(arm["newest"]["path"])
                arm["eval"] = win_rate(outcomes[arm["arm"]]) | {
                    "mean_words": sum(len(t.split()) for t in texts) / len(texts), "example": texts[0][:200]}
                log(f"[{arm['arm']} seed {seed}] {arm['actions']:g} actions: win rate over base "
                    f"{arm['eval']['win_rate']:.3f} [{arm['eval']['ci95'][0]:.3f}, {arm['eval']['ci95'][1]:.3f}]")
            per_seed.append({"seed": seed, "arms": {"sft+dpo": with_sft, "dpo": alone},
                             "outcomes": outcomes, "difference": with_sft["eval"]["win_rate"] - alone["eval"]["win_rate"]})
    finally:
        if own:
            platform.stop()
    arms = {}
    for arm in ARMS:
        pooled = [o for s in per_seed for o in s["outcomes"][arm]]
        arms[arm] = {"pooled": win_rate(pooled),
                     "across_seeds": mean_interval([s["arms"][arm]["eval"]["win_rate"] for s in per_seed]),
                     "actions": [s["arms"][arm]["actions"] for s in per_seed],
                     "ratings": [s["arms"][arm]["ratings"] for s in per_seed],
                     "demonstrations": [s["arms"][arm]["demonstrations"] for s in per_seed]}
    diffs = [a - b for s in per_seed for a, b in zip(s["outcomes"]["sft+dpo"], s["outcomes"]["dpo"])]
    for s in per_seed:
        del s["outcomes"]
    return {
        "model": args.model, "split": args.split, "rounds": args.rounds, "comparisons": args.comparisons,
        "raters": args.raters, "strength": args.strength, "noise": args.noise,
        "both_bad_margin": args.both_bad_margin, "write_cost": args.write_cost, "anchor": args.anchor,
        "new_tokens": args.new_tokens, "eval_prompts": len(prompts), "seeds": seeds,
        # As the first seed's campaigns ran; every stage's seed is the campaign's seed.
        "training_config": training_config(args, seeds[0]), "cpu_count": os.cpu_count(),
        "arms": arms,
        "difference": {"across_seeds": mean_interval([s["difference"] for s in per_seed]),
                       "paired_questions": paired_interval(diffs)},
        "per_seed": per_seed,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--comparisons", type=int, default=12, help="comparisons per round of the sft+dpo arm")
    parser.add_argument("--raters", type=int, default=2, help="simulated raters; also the overlap k")
    parser.add_argument("--strength", type=float, default=4.0)
    parser.add_argument("--noise", type=float, default=0.0)
    # 2.5: both bad when the better answer's F1 with the reference is under
    # 0.073 (log(1.01 / 0.083) = 2.5). 58% of the tiny base model's pairs on
    # 96 training questions were (the better answer's F1 quartiles 0.04 /
    # 0.06 / 0.10), so both halves get data. Fixed before any held-out run.
    parser.add_argument("--both-bad-margin", type=float, default=2.5,
                        help="the reference beats the better answer by this (log-odds) before a rater writes it")
    parser.add_argument("--write-cost", type=float, default=1.0, help="actions a written answer costs beyond its rating")
    parser.add_argument("--anchor", choices=["base", "sft"], default="sft",
                        help="the campaign's sft_anchor: DPO's reference model")
    parser.add_argument("--sft-lr", type=float, default=None)
    parser.add_argument("--sft-epochs", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--eval-prompts", type=int, default=64, help="questions per split (test, validation)")
    parser.add_argument("--split", choices=["test", "validation"], default="test",
                        help="validation: where settings are chosen; test: the reported figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3, help="seeds --seed, --seed+1, ...")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a plain kill stops the platform too
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ratchet-sft-") as tmp:
        report = sft_loop(args, Path(tmp), log=lambda m: print(m, flush=True))
    (OUT / f"sft_loop-{args.model}-{args.split}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    for arm, r in report["arms"].items():
        p, a = r["pooled"], r["across_seeds"]
        print(f"{arm}: win rate over base {p['win_rate']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] pooled "
              f"(n {p['n']}), per seed {a['mean']:.3f} [{_g(a['ci95'][0])}, {_g(a['ci95'][1])}], actions {r['actions']}")
    d = report["difference"]
    print(f"difference sft+dpo - dpo: {d['across_seeds']['mean']:+.3f} [{_f(d['across_seeds']['ci95'][0])}, "
          f"{_f(d['across_seeds']['ci95'][1])}] across seeds, paired over questions "
          f"{d['paired_questions']['mean']:+.3f} [{d['paired_questions']['ci95'][0]:+.3f}, {d['paired_questions']['ci95'][1]:+.3f}]")


def _f(x) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def _g(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
