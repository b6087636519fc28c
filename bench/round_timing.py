"""One full round of the loop, timed by stage, on the real platform processes.

    .venv/bin/python -m bench.round_timing --model tiny --prompts 8 --backend services
    .venv/bin/python -m bench.round_timing --model smollm2 --prompts 8 --backend embedded

Starts web (gunicorn) and a Celery worker (config/platform.py), opens round
0 with the base model, has simulated annotators rate every comparison through
the API, and measures the time from the last rating's answer to round 1 being
open, with each training stage's own seconds as the worker recorded them.
`--backend services` uses PostgreSQL + Redis (DATABASE_URL-style env
RATCHET_TEST_POSTGRES / RATCHET_TEST_REDIS override the defaults);
`embedded` uses SQLite + the folder broker, as `make run` does.
"""
import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from bench.data import DATA, questions
from config.platform import Platform, rate_everything

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "out"

# The settings `make run`'s demo uses for SmolLM2, and a tiny-model variant.
TRAINING = {
    "smollm2": {
        "reward": {"epochs": 2, "batch_size": 4, "lr": 1e-5, "max_length": 384},
        "policy": {"k": 4, "num_iterations": 2, "prompts_per_iteration": 8, "lr": 1e-6, "max_new_tokens": 64,
                   "generation_batch_size": 32, "minibatch_size": 8},
        "generate": {"max_new_tokens": 96, "batch_size": 16},
    },
    "tiny": {
        "reward": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "max_length": 256},
        "policy": {"k": 4, "num_iterations": 2, "prompts_per_iteration": 8, "lr": 1e-3, "max_new_tokens": 64,
                   "generation_batch_size": 32, "minibatch_size": 8},
        "generate": {"max_new_tokens": 96, "batch_size": 16},
    },
}



def base_model(kind: str, prompts: list[str], workdir: Path) -> str:
    if kind == "tiny":
        from rlhf.tiny import build_tiny_model

        rows = [json.loads(line) for line in DATA.open(encoding="utf-8")][:400]
        texts = [r["prompt"] for r in rows] + [r["chosen"] for r in rows]
        return build_tiny_model(workdir / "tiny", texts, seed=0)
    target = CACHE / "smollm2-135m-instruct"
    if not (target / "config.json").exists():
        from rlhf.smollm2 import import_smollm2

        import_smollm2(target)
    return str(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--overlap", type=int, default=1)
    parser.add_argument("--backend", choices=["services", "embedded"], default="services")
    args = parser.parse_args()

    prompts = questions(args.prompts)
    with tempfile.TemporaryDirectory(prefix="ratchet-bench-") as tmp:
        workdir = Path(tmp)
        model = base_model(args.model, prompts, workdir)
        platform = Platform(workdir, backend=args.backend).start()
        try:
            admin = platform.user("bench-admin", "campaign_admin", "ml_engineer")
            raters = [platform.user(f"bench-rater{i}", "annotator") for i in range(max(2, args.overlap))]
            status, campaign = admin.post("/api/campaigns/create/", {
                "name": "bench", "base_model": model, "overlap": args.overlap,
                "comparisons_per_round": len(prompts), "training_config": TRAINING[args.model],
            })
            assert status == 201, campaign
            cid = campaign["id"]
            jsonl = "\n".join(json.dumps({"external_id": f"q{i}", "prompt": p}) for i, p in enumerate(prompts))
            admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl.encode(), content_type="application/x-ndjson")
            admin.post(f"/api/campaigns/{cid}/annotators/", {"usernames": [f"bench-rater{i}" for i in range(len(raters))]})
            t0 = time.perf_counter()
            admin.post(f"/api/campaigns/{cid}/start/")
            platform.wait_for(lambda: admin.get(f"/api/campaigns/{cid}/progress/")[1]["round"], timeout=1800,
                              what="round 0", interval=0.2)
            bootstrap_s = time.perf_counter() - t0

            rate_everything(raters, cid, random.Random(0))
            last_rating = time.perf_counter()

            def round1():
                runs = admin.get(f"/api/training-runs/?campaign={cid}")[1]
                failed = [r for r in runs if r["status"] == "failed"]
                if failed:
                    raise SystemExit(f"training run {failed[0]['id']} failed: {failed[0]['error']}")
                body = admin.get(f"/api/campaigns/{cid}/progress/")[1]
                # Round 1 opens a moment before the run records its last stage.
                done = any(r["kind"] == "train" and r["status"] == "succeeded" for r in runs)
                return body if done and body["round"]["round"] == 1 else None

            progress = platform.wait_for(round1, timeout=3600, what="round 1", interval=0.2)
            round_s = time.perf_counter() - last_rating
            runs = admin.get(f"/api/training-runs/?campaign={cid}")[1]
            train = next(r for r in runs if r["kind"] == "train")
            assert train["status"] == "succeeded", train
        finally:
            platform.stop()

    print(f"model={args.model} prompts={len(prompts)} overlap={args.overlap} backend={args.backend} "
          f"cpu_threads={os.cpu_count()}")
    print(f"bootstrap (import + round-0 answers + open): {bootstrap_s:.1f} s")
    print(f"last rating in -> round 1 open: {round_s:.1f} s")
    stage_total = 0.0
    for stage in ["snapshot", "sft", "reward", "policy", "generate", "open"]:
        seconds = train["stages"][stage]["seconds"]
        stage_total += seconds
        print(f"  {stage:<9} {seconds:8.2f} s")
    print(f"  {'queueing':<9} {round_s - stage_total:8.2f} s (round-complete check, task hand-offs)")
    m = train["metrics"]
    print("metrics: " + ", ".join(f"{k}={m[k]:.4g}" for k in sorted(m) if isinstance(m[k], float)))
    print(f"round 1: {progress['round']['comparisons']} comparisons, candidate v{progress['round']['candidate_version']}")


if __name__ == "__main__":
    main()
