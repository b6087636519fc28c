"""A whole campaign rated by simulated raters, on the real platform processes:
does the loop move the model, and by how much?

    .venv/bin/python -m bench.simulated_campaign --model tiny --rounds 3 --comparisons 16 --raters 2
    .venv/bin/python -m bench.simulated_campaign --model smollm2 --rounds 3 --comparisons 64 --raters 3 --noise 0.1 --new-tokens 64
    .venv/bin/python -m bench.simulated_campaign --model tiny --sweep    # how much of the gain survives weaker, noisier raters

Starts web (gunicorn) and a Celery worker (config/platform.py) on
PostgreSQL + Redis, creates a campaign, imports questions from
data/finegrainedrlhf_qa_feedback_dev.jsonl (held-out questions are never
imported: the last --val-prompts distinct questions are the validation
split, the --eval-prompts before them the test split), starts it, and for each round
runs `manage.py simulate_raters --url <web>`: the simulated raters rate the
round through the HTTP API, the round completes, the worker trains (reward
model, policy step) and opens the next round. After each round the newest
policy and the base policy answer the held-out questions of --eval-split
(rlhf.generate, from the verified store checkpoints); the preference the
raters follow, without their noise, judges each pair: the win rate of the
newest policy over the base, ties counted as half, with a 95% Wilson
interval per run. Also per round: the
sequence KL of the newest policy to the base, estimated on its own samples
(temperature 1) and as the RLOO policy stage reported it, the mean answer
length in words, and each training stage's seconds from its TrainingRun.

Settings are chosen on the validation split (`--eval-split validation`,
e.g. with --sweep); the figure is reported on the test split (the default),
whose questions chose nothing. A figure is several seeds (`--seeds 0,1,2`:
raters' choices, training seeds, evaluation samples) under one or more
preferences (`--preference shorter keyword:is reward:<folder>`), its
interval the 95% t interval across the seeds' win rates (bench/seeds.py),
the Wilson interval of the pooled judged pairs printed beside it (pooled in bench/policy_eval.py):

    .venv/bin/python -m bench.simulated_campaign --model tiny --rounds 3 --comparisons 12 --raters 2 --seeds 0,1,2 --preference shorter keyword:is

Prints one JSON object; writes it to bench/out/simulated_campaign-<model>.json
and the plot to bench/out/simulated_campaign-<model>.svg (pass --plot-copy to
write a copy elsewhere, e.g. the one bench/RESULTS.md shows).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.data import DATA, questions
from bench.policy_eval import Evaluator, pooled, svg_plot
from bench.seeds import fmt, parse_seeds
from config.platform import Platform

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"

# Per model and method; --lr / --beta override the policy step's. Why these:
# see bench/RESULTS.md, "Simulated raters (issue 7)". They were picked
# there on the last 64-96 questions of the data, which are now the
# validation split (VAL_PROMPTS): the test split is questions before them.
VAL_PROMPTS = 96
TRAINING = {
    ("tiny", "rloo"): {
        "reward": {"epochs": 4, "batch_size": 8, "lr": 1e-3, "max_length": 128},
        "policy": {"k": 4, "num_iterations": 4, "prompts_per_iteration": 8, "lr": 1.5e-3, "beta": 0.1,
                   "generation_batch_size": 32, "minibatch_size": 16},
    },
    ("tiny", "dpo"): {
        "reward": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "max_length": 128},
        "dpo": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "beta": 0.1, "max_length": 128},
    },
    ("smollm2", "dpo"): {
        "reward": {"epochs": 1, "batch_size": 8, "lr": 1e-5, "max_length": 192},
        "dpo": {"epochs": 1, "batch_size": 8, "lr": 3e-6, "beta": 0.25, "max_length": 192, "ref_batch_size": 16,
                "last_rounds": 1},
    },
    ("smollm2", "rloo"): {
        "reward": {"epochs": 1, "batch_size": 8, "lr": 1e-5, "max_length": 192},
        "policy": {"k": 4, "num_iterations": 4, "prompts_per_iteration": 16, "lr": 2e-6, "beta": 0.05,
                   "generation_batch_size": 64, "minibatch_size": 16, "logprob_batch_size": 32},
    },
}



def base_model(kind: str, workdir: Path, questions_seen: list[str] | None = None) -> str:
    if kind == "tiny":
        return tiny_answering_model(workdir / "tiny", questions_seen or questions()[:200])
    target = OUT / "smollm2-135m-instruct"
    if not (target / "config.json").exists():
        from rlhf.smollm2 import import_smollm2

        import_smollm2(target)
    return str(target)


def tiny_answering_model(out: Path, seen: list[str], steps: int = 100, seed: int = 0) -> str:
    """The tiny test model (rlhf.tiny: hidden 32, 2 layers), first taught for
    a few seconds to answer a question with 1 to 20 words of real answers and
    stop (EOS), as an instruct model does. A model with random weights never
    stops by itself (EOS is one token in 500), so "shorter" would be judged
    on word counts of random text alone; this one, like SmolLM2, ends some
    answers early and runs past the token limit on others."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf import _torch
    from rlhf.chat import ENCODE_KWARGS, format_prompt
    from rlhf.tiny import build_tiny_model

    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    answers = {r["prompt"]: r["chosen"].split() for r in rows}
    path = build_tiny_model(out, [r["prompt"] for r in rows[:400]] + [r["chosen"] for r in rows[:400]], seed=seed)
    tokenizer = _torch.load_tokenizer(path, padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = []
        for q in rng.sample(seen, 16):
            prompt = tokenizer(format_prompt(tokenizer, q), **ENCODE_KWARGS)["input_ids"]
            answer = " ".join(answers[q][: rng.randint(1, 20)]) + tokenizer.eos_token
            batch.append((prompt, tokenizer(answer, **ENCODE_KWARGS)["input_ids"]))
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, a) in enumerate(batch):
            ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
            mask[i, : len(p) + len(a)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(path)
    return path


def training_config(args) -> dict:
    config = json.loads(json.dumps(TRAINING[(args.model, args.method)]))
    section = "dpo" if args.method == "dpo" else "policy"
    if args.lr is not None:
        config[section]["lr"] = args.lr
    if args.beta is not None:
        config[section]["beta"] = args.beta
    if args.method == "rloo":
        config["policy"]["max_new_tokens"] = args.new_tokens
    # The run's seed reaches the trainers too: a seed is a whole run, not only other raters.
    for stage in ("reward", section):
        config[stage]["seed"] = args.seed
    config["generate"] = {"max_new_tokens": args.new_tokens, "batch_size": 32}
    return config


# --- one campaign --------------------------------------------------------------------


def simulate_round(platform, cid: int, args, *, strength: float, noise: float, round_index: int) -> dict:
    """`manage.py simulate_raters --url`: the raters rate the open round over HTTP."""
    cmd = [sys.executable, "manage.py", "simulate_raters", "--campaign", str(cid), "--url", platform.base,
           "--raters", str(args.raters), "--preference", args.preference, "--strength", str(strength),
           "--noise", str(noise), "--position-bias", str(args.position_bias), "--seed", str(args.seed * 100 + round_index),
           "--until-round-closed", "--json"]
    done = subprocess.run(cmd, cwd=ROOT, env=platform.env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"simulate_raters failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_campaign(platform, admin, model: str, args, *, strength: float, noise: float, name: str,
                 log=print, rate_round=simulate_round) -> dict:
    """Create, start and run one campaign for args.rounds rounds; return the
    report. `rate_round(platform, cid, args, strength=, noise=, round_index=)`
    has the open round rated and returns {"ratings", "raters"} (default: the
    management command over HTTP)."""
    splits = question_splits(args)
    held_out = splits[args.eval_split]
    train = splits["train"]
    config = training_config(args)
    status, campaign = admin.post("/api/campaigns/create/", {
        "name": name, "base_model": model, "overlap": args.raters, "comparisons_per_round": args.comparisons,
        "training_config": config, "method": args.method, "gold_frequency": 0.0,
        "kl_budget": args.kl_budget or None,
    })
    assert status == 201, campaign
    cid = campaign["id"]
    jsonl = "\n".join(json.dumps({"external_id": f"q{i}", "prompt": p}) for i, p in enumerate(train))
    status, body = admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl.encode(), content_type="application/x-ndjson")
    assert status == 200 and body["created"] == len(train), body
    t0 = time.perf_counter()
    assert admin.post(f"/api/campaigns/{cid}/start/")[0] == 202
    platform.wait_for(lambda: (admin.get(f"/api/campaigns/{cid}/progress/")[1]["round"] or {}).get("round") == 0,
                      timeout=7200, what="round 0", interval=0.5)
    bootstrap_s = time.perf_counter() - t0
    models = admin.get(f"/api/campaigns/{cid}/models/")[1]
    evaluator = Evaluator(held_out, preference=args.preference, new_tokens=args.new_tokens,
                          kl_prompts=min(args.kl_prompts, len(held_out)), seed=args.seed + 1234)
    t = time.perf_counter()
    point = evaluator.base(_verified(models["policies"][0]))
    point |= {"round": 0, "version": 0, "eval_s": time.perf_counter() - t}
    log(f"[{name}] round 0 (base vs base): win rate {point['win_rate']:.3f} {_ci(point)}, {point['mean_words']:.1f} words")
    rounds = [point]
    for r in range(args.rounds):
        t = time.perf_counter()
        rated = rate_round(platform, cid, args, strength=strength, noise=noise, round_index=r)
        rating_s = time.perf_counter() - t

        def trained():
            runs = admin.get(f"/api/training-runs/?campaign={cid}")[1]
            mine = [x for x in runs if x["kind"] == "train" and x["round"] == r]
            failed = [x for x in mine if x["status"] == "failed"]
            if failed:
                raise SystemExit(f"training run {failed[0]['id']} failed: {failed[0]['error']}")
            return next((x for x in mine if x["status"] == "succeeded"), None)

        run = platform.wait_for(trained, timeout=4 * 3600, what=f"training after round {r}", interval=1.0)
        train_s = time.perf_counter() - t - rating_s
        models = admin.get(f"/api/campaigns/{cid}/models/")[1]
        newest = models["policies"][-1]
        t = time.perf_counter()
        point = evaluator.newest(_verified(newest))
        stage_metrics = run["stages"]["policy"]["outputs"].get("metrics", {})
        reward_metrics = run["stages"]["reward"]["outputs"].get("metrics", {})
        point |= {
            "round": r + 1, "version": newest["version"], "eval_s": time.perf_counter() - t,
            # The step's own KL figure: RLOO's last round's samples, or
            # the last budget check's estimate (None: no budget, DPO).
            "kl_policy_stage": _first(stage_metrics, "policy/kl_to_base", "policy/kl"),
            "kl_budget_stopped": stage_metrics.get("policy/kl_budget_stopped"),
            "kl_kept_step": stage_metrics.get("policy/kl_kept_step"),
            "reward_eval_accuracy": reward_metrics.get("eval/reward/accuracy"),
            "ratings": rated["ratings"], "rating_s": rating_s, "train_wall_s": train_s,
            "stages_s": {stage: info.get("seconds") for stage, info in run["stages"].items()},
            "choices": _choices(rated),
        }
        rounds.append(point)
        log(f"[{name}] after round {r}: v{newest['version']} wins {point['win_rate']:.3f} {_ci(point)}, "
            f"KL {point['kl_estimate']:.2f} nats (stage {_fmt(point['kl_policy_stage'])}"
            f"{', budget stop, kept step ' + str(point['kl_kept_step']) if point['kl_budget_stopped'] else ''}), "
            f"{point['mean_words']:.1f} words; stages " +
            ", ".join(f"{k} {v:.1f} s" for k, v in point["stages_s"].items()))
    trained = rounds[1:]
    return {"campaign": cid, "name": name, "strength": strength, "noise": noise, "bootstrap_s": bootstrap_s,
            "rounds": rounds, "final_win_rate": rounds[-1]["win_rate"], "final_kl": rounds[-1]["kl_estimate"],
            # Over every trained version: steadier than the last round alone.
            "mean_win_rate": sum(p["win_rate"] for p in trained) / len(trained)}


def question_splits(args) -> dict[str, list[str]]:
    """train: the first rounds x comparisons questions (imported, rated);
    validation: the last --val-prompts (where settings are chosen); test: the
    --eval-prompts before those (the reported figure). Disjoint by construction."""
    all_questions = questions()
    val_start = len(all_questions) - args.val_prompts
    test_start = val_start - args.eval_prompts
    train = all_questions[: args.rounds * args.comparisons]
    if len(train) > test_start:
        raise SystemExit(f"{len(train)} rated questions overlap the {args.eval_prompts} test and {args.val_prompts} "
                         f"validation questions (of {len(all_questions)}): lower --rounds, --comparisons or --eval-prompts")
    return {"train": train, "validation": all_questions[val_start:], "test": all_questions[test_start:val_start]}


def _verified(version: dict) -> str:
    from rlhf.store import verify_folder

    verify_folder(version["path"], version["sha256"])
    return version["path"]


def _choices(rated: dict) -> dict:
    total: dict[str, int] = {}
    for rater in rated["raters"].values():
        for k, v in rater["choices"].items():
            total[k] = total.get(k, 0) + v
    return total


def _ci(point: dict) -> str:
    return f"[{point['ci95'][0]:.3f}, {point['ci95'][1]:.3f}]"


def _first(metrics: dict, *names: str):
    """The first of `names` the policy stage reported."""
    return next((metrics[name] for name in names if name in metrics), None)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# --- main ------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--method", choices=["rloo", "dpo"], default=None, help="default: rloo for tiny, dpo for smollm2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--comparisons", type=int, default=16, help="comparisons per round")
    parser.add_argument("--raters", type=int, default=2, help="simulated raters; also the overlap k")
    parser.add_argument("--preference", nargs="+", default=["shorter"],
                        help="one or more: shorter, longer, keyword:<word>, reward:<folder> (a campaign set each)")
    parser.add_argument("--strength", type=float, default=4.0)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--position-bias", type=float, default=0.0)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--eval-prompts", type=int, default=64,
                        help="test questions (held out, chose nothing) the reported win rate is judged on")
    parser.add_argument("--val-prompts", type=int, default=VAL_PROMPTS,
                        help="validation questions (held out: the last of the data) to choose settings on")
    parser.add_argument("--eval-split", choices=["test", "validation"], default="test",
                        help="where the win rate is judged: validation while choosing settings, test for the figure")
    parser.add_argument("--kl-prompts", type=int, default=32, help="held-out questions the KL is estimated on")
    parser.add_argument("--lr", type=float, default=None, help="policy step learning rate (default: per model/method)")
    parser.add_argument("--beta", type=float, default=None, help="KL coefficient of the policy step")
    parser.add_argument("--kl-budget", type=float, default=10.0, help="the campaign's KL budget, nats per answer: its policy steps stop inside it (0: none, only reported)")
    parser.add_argument("--target", type=float, default=None, help="win rate to mark on the plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true",
                        help="run the campaign again with weaker and noisier raters; report how much of the gain survives")
    parser.add_argument("--sweep-strengths", default="0.5,1,2", help="strengths tried with --sweep (at --noise)")
    parser.add_argument("--sweep-noises", default="0.3,0.5,0.7", help="noise rates tried with --sweep (at --strength)")
    parser.add_argument("--repeats", type=int, default=1, help="campaigns per setting, seeds --seed, --seed+1, ...")
    parser.add_argument("--seeds", default=None, help="seeds to run each setting with, e.g. 0,1,2 or 0-2 (overrides --seed/--repeats)")
    parser.add_argument("--backend", choices=["services", "embedded"], default="services")
    parser.add_argument("--plot-copy", default=None, help="also write the SVG here (e.g. bench/plots/...svg)")
    args = parser.parse_args(argv)
    args.method = args.method or ("dpo" if args.model == "smollm2" else "rloo")
    args.seed_list = parse_seeds(args.seeds) if args.seeds else [args.seed + i for i in range(args.repeats)]
    args.preferences = list(args.preference)
    args.preference = args.preferences[0]  # what one campaign's raters follow (run_campaign reads it)
    if args.target is None and args.model == "smollm2":
        args.target = 0.65
    return args


def simulated_campaign(args, workdir: Path, log=print) -> dict:
    """Start the platform in workdir, run the campaigns (each preference, the
    sweep's settings, each seed), stop it; the report."""
    model = base_model(args.model, workdir)
    platform = Platform(workdir, backend=args.backend).start()
    settings = [(args.strength, args.noise)]
    if args.sweep:
        settings += [(float(s), args.noise) for s in args.sweep_strengths.split(",") if s.strip()]
        settings += [(args.strength, float(n)) for n in args.sweep_noises.split(",") if n.strip()]
    reports, by_setting = [], []
    try:
        admin = platform.user("bench-admin", "campaign_admin", "ml_engineer")
        for preference in args.preferences:
            for s, n in settings:
                runs = []
                for seed in args.seed_list:
                    run_args = copy.copy(args)
                    run_args.seed, run_args.preference = seed, preference
                    report = run_campaign(platform, admin, model, run_args, strength=s, noise=n, log=log,
                                          name=f"sim {preference} strength {s:g} noise {n:g} seed {seed}")
                    report |= {"seed": seed, "preference": preference}
                    runs.append(report)
                reports += runs
                by_setting.append(pooled(runs))
    finally:
        platform.stop()
    # The share of the reference setting's gain over 0.5 (mean win rate of
    # the trained versions) that a weaker or noisier pool keeps, per preference.
    for setting in by_setting:
        reference = next(x for x in by_setting if x["preference"] == setting["preference"])
        gain = reference["mean_win_rate"] - 0.5
        setting["gain_kept"] = (setting["mean_win_rate"] - 0.5) / gain if abs(gain) > 1e-9 else None
        setting["kl_within_budget"] = setting["final_kl"] <= args.kl_budget
    return {
        "model": args.model, "method": args.method, "rounds": args.rounds, "comparisons": args.comparisons,
        "raters": args.raters, "preferences": args.preferences, "new_tokens": args.new_tokens,
        "eval_split": args.eval_split, "eval_prompts": len(question_splits(args)[args.eval_split]),
        "val_prompts": args.val_prompts, "kl_budget": args.kl_budget, "seeds": args.seed_list,
        "training_config": training_config(args), "cpu_count": os.cpu_count(),
        "settings": by_setting, "campaigns": reports,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    # A plain `kill` stops the platform's processes too (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ratchet-sim-") as tmp:
        report = simulated_campaign(args, Path(tmp), log=lambda m: print(m, flush=True))
    suffix = f"{args.model}{'-sweep' if args.sweep else ''}{'-validation' if args.eval_split == 'validation' else ''}"
    (OUT / f"simulated_campaign-{suffix}.json").write_text(json.dumps(report, indent=2))
    title = (f"{args.model}, {args.method}: {args.rounds} rounds x {args.comparisons} comparisons x {args.raters} "
             f"raters, {args.eval_split} questions")
    if len(args.seed_list) > 1:
        title += f", {len(args.seed_list)} seeds (t interval)"
    svg = svg_plot(report["settings"], title=title, kl_budget=args.kl_budget, target=args.target)
    (OUT / f"simulated_campaign-{suffix}.svg").write_text(svg)
    if args.plot_copy:
        Path(args.plot_copy).parent.mkdir(parents=True, exist_ok=True)
        Path(args.plot_copy).write_text(svg)
    print(json.dumps(report, indent=2))
    print(f"win rate over the base on {report['eval_prompts']} {args.eval_split} questions, seeds {args.seed_list}; "
          f"interval: {report['settings'][0]['interval']}")
    for c in report["settings"]:
        last = c["rounds"][-1]
        lo, hi = last["ci95_wilson_pooled"]
        print(f"{c['preference']}, strength {c['strength']:g} noise {c['noise']:g}: final win rate "
              f"{fmt(last['across_seeds'])}, by seed {[round(v, 3) for v in last['across_seeds']['values']]}, "
              f"pooled {last['pooled']:.3f} Wilson [{lo:.3f}, {hi:.3f}] on {last['n']} pairs; "
              f"mean over rounds {fmt(c['mean_win_rate_across_seeds'])}; "
              f"{last['mean_words']:.1f} words (base {c['rounds'][0]['mean_words']:.1f}); "
              f"KL {last['kl_estimate']:.2f} nats (budget {args.kl_budget:g}: "
              f"{'within' if c['kl_within_budget'] else 'OVER'}), gain kept {_fmt(c['gain_kept'])}")
    if math.isnan(report["settings"][0]["final_win_rate"]):
        raise SystemExit("no win rate")


if __name__ == "__main__":
    main()
