"""Pair scheduling balance of evaluation campaigns: after 1,000 comparisons,
the most and the fewest comparisons any pair of models got, and their ratio
(the issue's target: within 10%, i.e. max/min <= 1.10).

    .venv/bin/python -m bench.pair_schedule --models 4 6 8 --comparisons 1000 --prompts 300

Calls annotate/services/evaluation.py's pair_schedule (pure: no database)
in three settings per number of models:
- "full": every model answered every prompt; one call of 1,000;
- "gaps": each model lacks a random 10% of the answers (an import with
  holes, an endpoint that failed on some prompts);
- "steps": ten calls of 100, as an admin adding comparisons does, the last
  model arriving after the fifth (it has to catch up: the schedule counts
  what was compared before).
Also `cap`, the fewest prompts any pair of models shares (no pair can get
more comparisons than that: a pair never meets twice on a prompt), the
prompts' spread (fewest-most uses of a prompt), the time a call takes, and
one large call (100,000 comparisons, 8 models, 10,000 prompts).
"""
import argparse
import os
import random
import time
from collections import Counter

import django


def ratio(counts: Counter) -> tuple[int, int, float]:
    low, high = min(counts.values()), max(counts.values())
    return high, low, high / low


def pair_counts(schedule) -> Counter:
    return Counter(frozenset((p.a, p.b)) for p in schedule)


def run(pair_schedule, *, models: int, comparisons: int, prompts: int, setting: str, seed: int):
    names = [f"m{k}" for k in range(models)]
    rng = random.Random(seed)
    if setting == "gaps":
        answered = {p: [m for m in names if rng.random() >= 0.1] for p in range(prompts)}
    else:
        answered = {p: list(names) for p in range(prompts)}
    t0 = time.perf_counter()
    if setting == "steps":
        done: list = []
        step = comparisons // 10
        for n in range(10):
            present = names if n >= 5 else names[:-1]
            sub = {p: [m for m in who if m in present] for p, who in answered.items()}
            done += pair_schedule(sub, step, seed=f"{seed}:{n}", earlier=done)
        schedule = done
    else:
        schedule = pair_schedule(answered, comparisons, seed=seed)
    elapsed = time.perf_counter() - t0
    pairs = pair_counts(schedule)
    assert len(pairs) == models * (models - 1) // 2, "a pair of models was never compared"
    uses = Counter(p.prompt for p in schedule)
    # The most any pair could get: the prompts both its models answered.
    shared = Counter(frozenset((x, y)) for who in answered.values() for x in who for y in who if x < y)
    return len(schedule), pairs, uses, elapsed, min(shared.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--comparisons", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # Only to import the service module; nothing here touches a database.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    django.setup()
    from annotate.services.evaluation import pair_schedule

    print(f"{args.comparisons} comparisons over {args.prompts} prompts, seed {args.seed}\n")
    print(f"{'models':>6} {'setting':>7} {'pairs':>5} {'made':>5} {'max/pair':>8} {'min/pair':>8} {'max/min':>7}"
          f" {'cap':>5} {'prompt uses':>11} {'ms':>7}")
    worst = 0.0
    for models in args.models:
        for setting in ("full", "gaps", "steps"):
            made, pairs, uses, elapsed, cap = run(
                pair_schedule, models=models, comparisons=args.comparisons, prompts=args.prompts, setting=setting,
                seed=args.seed,
            )
            high, low, r = ratio(pairs)
            worst = max(worst, r)
            print(f"{models:6d} {setting:>7} {len(pairs):5d} {made:5d} {high:8d} {low:8d} {r:7.3f}"
                  f" {cap:5d} {min(uses.values()):>5d}-{max(uses.values()):<5d} {elapsed * 1000:7.1f}")
    print(f"\nworst max/min: {worst:.3f} (target <= 1.10)")

    answered = {p: [f"m{k}" for k in range(8)] for p in range(10_000)}
    t0 = time.perf_counter()
    big = pair_schedule(answered, 100_000, seed=args.seed)
    elapsed = time.perf_counter() - t0
    high, low, r = ratio(pair_counts(big))
    print(f"large: 100,000 comparisons, 8 models, 10,000 prompts: {elapsed:.2f} s, max/min per pair {high}/{low} = {r:.3f}")


if __name__ == "__main__":
    main()
