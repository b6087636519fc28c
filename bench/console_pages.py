"""Console list pages and list APIs at 100,000 ratings: response time and query count.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.console_pages --ratings 100000 --n 30

Builds a throwaway database (`bench_console_pages`, dropped at the end; never
the one `DATABASE_URL` names), seeds one big campaign with bulk_create:
`--ratings` ratings over 4 rounds (k=5, so ratings/5 comparisons), 200
annotators in its pool, a tenth of the comparisons gold, the ratings spread
over the last 10 days; and 30 small campaigns beside it so the campaigns list
has rows. Then it requests each page `--n` times through Django's test
Client (in process: URL routing, middleware, auth, views, templates and
queries; no network, no gunicorn) and prints median and p95 milliseconds and
the queries per request. Quality and leaderboard compute over every rating
(Dawid-Skene, Bradley-Terry with a bootstrap), so they get `--n-slow` requests.

`--answer-words N` pads every answer with 0..N random words, so that the
leaderboard's length-controlled fit meets answers of many lengths, as in a
real campaign (by default the answers are short and about equally long).

The query counts are pinned in tests (tests/annotate/test_campaign_admin.py,
test_pool.py); this reports the time at the size the issue names.
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
    parser.add_argument("--annotators", type=int, default=200)
    parser.add_argument("--n", type=int, default=30, help="requests per page")
    parser.add_argument("--n-slow", type=int, default=3, help="requests per quality / leaderboard API")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--database-name", default="bench_console_pages",
                        help="the throwaway database's name (another one for runs side by side)")
    parser.add_argument("--answer-words", type=int, default=0,
                        help="pad each answer with 0..N random words (the length-controlled leaderboard then "
                             "meets answers of many lengths, as in a real campaign); 0: the short fixed answers")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    django.setup()
    import logging

    logging.getLogger("django.request").setLevel(logging.ERROR)  # probing absent pages is not news
    from django.conf import settings
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = args.database_name
    setup_test_environment()
    # ALLOWED_HOSTS gets "testserver" from setup_test_environment.
    dbs = setup_databases(verbosity=0, interactive=False)
    try:
        t0 = time.perf_counter()
        campaign, admin = seed(ratings=args.ratings, annotators=args.annotators, answer_words=args.answer_words)
        print(f"seeded {args.ratings:,} ratings in {time.perf_counter() - t0:.1f} s")
        report(campaign, admin, n=args.n, n_slow=args.n_slow)
    finally:
        if not args.keep:
            teardown_databases(dbs, verbosity=0)


def seed(*, ratings: int, annotators: int, answer_words: int = 0):
    from django.db import connection

    from annotate.models import Campaign, Comparison, Membership, Rating, Role
    from bench.seed import campaign_seed, users_create

    padding = random.Random(1)

    def pad() -> str:
        return " word" * padding.randint(0, answer_words) if answer_words else ""

    def chain(n: int, versions: int) -> list[dict]:
        """n prompts, with v0's two answers and one of each later version."""
        return [{"external_id": f"p{i}", "prompt": f"Question {i}?",
                 "answers": [f"answer {s} of v{v} to p{i}{pad()}" for v in range(versions)
                             for s in ((0, 1) if v == 0 else (0,))]}
                for i in range(n)]

    k, versions = 5, 4
    prompts = max(1, ratings // (k * versions))
    users = users_create([f"annotator{i:04d}" for i in range(annotators)], roles=[Role.ANNOTATOR])
    [admin] = users_create(["bench-admin"], roles=[Role.CAMPAIGN_ADMIN])
    rounds = campaign_seed(name="Big campaign", prompts=chain(prompts, versions), overlap=k, versions=versions)
    campaign = rounds[0].campaign
    Membership.objects.bulk_create(
        Membership(campaign=campaign, annotator=u, daily_limit=200 if i % 3 == 0 else None,
                   status="paused" if i % 25 == 0 else "active", paused_reason="bench" if i % 25 == 0 else "")
        for i, u in enumerate(users)
    )
    comparisons = list(Comparison.objects.filter(round__campaign=campaign).order_by("pk").values_list("pk", flat=True))
    gold = comparisons[::10]
    Comparison.objects.filter(pk__in=gold).update(gold_choice="A")
    rng = random.Random(0)
    rows = []
    for i, c in enumerate(comparisons):
        start = (i * 7) % annotators
        for j in range(k):
            choice = rng.choice(["A", "A", "B", "tie", "both_bad"])
            rows.append(Rating(
                comparison_id=c, annotator=users[(start + j) % annotators], choice=choice,
                strength=rng.choice([1, 2, 3]) if choice in ("A", "B") else None,
                time_on_task_ms=rng.randint(2000, 60000),
            ))
    Rating.objects.bulk_create(rows[:ratings], batch_size=5000)
    Comparison.objects.filter(round__campaign=campaign).update(rating_count=k)
    # Spread over ten days, so "ratings today" filters a tenth.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE annotate_rating SET created_at = created_at - ((id % 10) * interval '1 day')"
            if connection.vendor == "postgresql"
            else "UPDATE annotate_rating SET created_at = datetime(created_at, '-' || (id % 10) || ' days')"
        )
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE")
    for n in range(30):
        campaign_seed(name=f"campaign {n}", prompts=chain(10, 1), overlap=2, annotators=[u.username for u in users[:5]])
    Campaign.objects.update(status="active")
    # Campaign admins see only what they administer: this one, every campaign.
    admin.administered_campaigns.add(*Campaign.objects.all())
    return campaign, admin


def report(campaign, admin, *, n: int, n_slow: int) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    from annotate.models import Rating

    browser = Client()
    browser.force_login(admin)
    api = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=admin).key}")
    c = campaign.pk
    pages = [
        ("console: campaigns list", browser, "/console/", n),
        ("console: campaign overview", browser, f"/console/campaigns/{c}/", n),
        ("console: overview's now panel (polled)", browser, f"/console/campaigns/{c}/now/", n),
        ("console: annotator pool", browser, f"/console/campaigns/{c}/pool/", n),
        ("api: members", api, f"/api/campaigns/{c}/members/", n),
        ("api: campaigns", api, "/api/campaigns/", n),
        ("api: quality", api, f"/api/campaigns/{c}/quality/", n_slow),
        ("api: leaderboard", api, f"/api/campaigns/{c}/leaderboard/", n_slow),
    ]
    # The other console areas' pages, where they exist by now.
    for name in ("prompts", "gold", "quality", "leaderboard", "exports", "models"):
        path = f"/console/campaigns/{c}/{name}/"
        if browser.get(path).status_code == 200:
            pages.append((f"console: {name}", browser, path, n_slow if name in ("quality", "leaderboard") else n))

    print(f"{Rating.objects.count():,} ratings; {connection.vendor}; Django test Client, in process\n")
    print(f"{'page':32} {'requests':>8} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'KiB':>7}")
    for label, client, path, repeat in pages:
        client.get(path)  # warm: templates compiled, caches filled
        times, queries, size = [], 0, 0
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
            assert answer.status_code == 200, f"{path} answered {answer.status_code}"
            queries, size = len(ctx), len(answer.content)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"{label:32} {repeat:8d} {statistics.median(times):10.1f} {p95:8.1f} {queries:8d} {size / 1024:7.1f}")


if __name__ == "__main__":
    main()
