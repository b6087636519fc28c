"""The models page's "score after each round" (annotate/selectors/leaderboard.py,
_scores_by_round): what it adds to the leaderboard's time, at `--ratings`
ratings over `--rounds` rounds.

    DJANGO_DEBUG=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.scores_by_round --ratings 100000 --rounds 20 --n 3

Builds a throwaway database (`--db`, dropped at the end; never the one
`DATABASE_URL` names), seeds one campaign whose rounds 0..R-1 compare v_i
with v_(i-1) (bench/seed.py), k=5 ratings a comparison, choices drawn at
random; then times campaign_leaderboard as the API calls it (200
resamples) and as the models page does (by_round=True), `--n` times each,
and prints the median milliseconds and their ratio.
"""
import argparse
import os
import random
import statistics
import time

import django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--n", type=int, default=3, help="calls of each")
    parser.add_argument("--db", default="bench_scores_by_round", help="the throwaway database's name")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.conf import settings
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = args.db
    setup_test_environment()
    dbs = setup_databases(verbosity=0, interactive=False)
    try:
        campaign = seed(ratings=args.ratings, rounds=args.rounds)
        report(campaign, n=args.n)
    finally:
        teardown_databases(dbs, verbosity=0)


def seed(*, ratings: int, rounds: int):
    from annotate.models import Comparison, Rating, Role
    from bench.seed import campaign_seed, users_create

    k = 5
    prompts = max(1, ratings // (k * rounds))
    users = users_create([f"annotator{i:03d}" for i in range(50)], roles=[Role.ANNOTATOR])
    chain = [{"external_id": f"p{i}", "prompt": f"Question {i}?",
              "answers": [f"answer {s} of v{v} to p{i}" + " word" * ((i * 7 + v) % 30) for v in range(rounds)
                          for s in ((0, 1) if v == 0 else (0,))]}
             for i in range(prompts)]
    t0 = time.perf_counter()
    campaign = campaign_seed(name="Rounds", prompts=chain, overlap=k, versions=rounds)[0].campaign
    rng = random.Random(0)
    rows = [
        Rating(comparison_id=c, annotator=users[(i * 7 + j) % len(users)], choice=rng.choice(["A", "A", "B", "tie"]),
               strength=1)
        for i, c in enumerate(Comparison.objects.filter(round__campaign=campaign).order_by("pk").values_list("pk", flat=True))
        for j in range(k)
    ]
    Rating.objects.bulk_create(rows[:ratings], batch_size=5000)
    print(f"seeded {min(len(rows), ratings):,} ratings over {rounds} rounds in {time.perf_counter() - t0:.1f} s")
    return campaign


def report(campaign, *, n: int) -> None:
    from annotate.selectors.leaderboard import campaign_leaderboard

    def median_ms(**kwargs) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            campaign_leaderboard(campaign=campaign, **kwargs)
            times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times)

    plain, by_round = median_ms(), median_ms(by_round=True)
    print(f"leaderboard (as the API): {plain:.0f} ms")
    print(f"leaderboard with scores by round (as the models page): {by_round:.0f} ms ({by_round / plain:.2f}x)")


if __name__ == "__main__":
    main()
