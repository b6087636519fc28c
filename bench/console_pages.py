"""Every console page, and the JSON APIs the pages call, at the issue's size:
100 rounds and 100,000 ratings. Server time, bytes and queries per request.
One file over 450 lines: the seed, the list of pages and the timings all
work on the one seeded world, and are read together when a figure surprises.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.console_pages --rounds 100 --ratings 100000 --n 20

Builds a throwaway database (`bench_console_pages`, dropped at the end; never
the one `DATABASE_URL` names) and seeds, with bulk_create:

- one big loop campaign: `--rounds` rounds (round i compares v_i with
  v_(i-1) over the same prompts; the last one collecting, the others done),
  `--ratings` ratings at k = 5 spread evenly over the rounds and over one day
  per round, 200 annotators in its pool, a tenth of the comparisons gold and
  200 gold pairs in the pool; a bootstrap run and a finished training run
  per later round (every stage, 500 rows of metric history each), a reward
  and a policy version per run; an endpoint with a finished generation job
  (50 failed prompts) and its answers; 20 exports;
- an evaluation campaign: 4 imported models over 250 prompts, 1,000
  comparisons rated 3 times;
- 30 small campaigns beside them, so the campaigns list has rows.

Then it requests each page `--n` times through Django's test Client (in
process: URL routing, middleware, auth, views, templates and queries; no
network, no gunicorn) and prints median and p95 server milliseconds against
the target (p95 < 150 ms), the bytes of the response (and what gzip would
make of them: the project compresses static files only, not pages), and the
queries per request, and the first (cold) request's milliseconds apart:
the heavy statistics are memoized per state of the ratings, so the first
request after a change computes them. The quality and leaderboard computations (Dawid-Skene,
Bradley-Terry with a bootstrap) get `--n-slow` requests.

Which pages: every URL of frontend/console/ that answers a GET, found by
walking the URL patterns, so a page added later is timed or, when this file
cannot fill its URL's arguments, listed as not timed; plus the home and
rating pages and the APIs the pages call from JavaScript.

`--answer-words N` pads every answer with 0..N random words, so that the
leaderboard's length-controlled fit meets answers of many lengths.

Then the memoized pages again, each request after one new rating through
the services (`after a new rating`): on a campaign being rated that is what
most visits meet, and the figure that matters for them.

The query counts are pinned in tests (tests/annotate/test_campaign_admin.py,
test_pool.py); this reports the time at the size the issue names.
"""
import argparse
import gzip
import hashlib
import json
import math
import os
import random
import secrets
import statistics
import time
from datetime import timedelta

import django

TARGET_P95_MS = 150.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--annotators", type=int, default=200)
    parser.add_argument("--n", type=int, default=20, help="requests per page")
    parser.add_argument("--n-slow", type=int, default=5, help="requests per quality / leaderboard page or API")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--database-name", default="bench_console_pages",
                        help="the throwaway database's name (another one for runs side by side)")
    parser.add_argument("--only", default="", help="time only the rows whose label contains one of these "
                                                     "(comma-separated)")
    parser.add_argument("--answer-words", type=int, default=0,
                        help="pad each answer with 0..N random words (the length-controlled leaderboard then "
                             "meets answers of many lengths, as in a real campaign); 0: the short fixed answers")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # As in production (DEBUG off), over plain http: no HTTPS redirect.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("DJANGO_SECURE_SSL", "0")
    django.setup()
    import logging

    logging.getLogger("django.request").setLevel(logging.ERROR)
    from django.conf import settings
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = args.database_name
    setup_test_environment()
    # ALLOWED_HOSTS gets "testserver" from setup_test_environment.
    dbs = setup_databases(verbosity=0, interactive=False)
    try:
        t0 = time.perf_counter()
        world = seed(ratings=args.ratings, rounds=args.rounds, annotators=args.annotators,
                     answer_words=args.answer_words)
        print(f"seeded {args.ratings:,} ratings over {args.rounds} rounds in {time.perf_counter() - t0:.1f} s")
        # The planner's statistics, as a database that was not just bulk-loaded
        # has them; and no autovacuum of the fresh tables racing the first pages.
        from django.db import connection

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
        report(world, n=args.n, n_slow=args.n_slow, only=args.only)
    finally:
        if not args.keep:
            teardown_databases(dbs, verbosity=0)


def _stage(seconds: float, outputs: dict, at) -> dict:
    return {"status": "succeeded", "attempts": 1, "seconds": seconds, "outputs": outputs,
            "started_at": (at - timedelta(seconds=seconds)).isoformat(), "finished_at": at.isoformat()}


def _history(v: int, rows: int = 500) -> list[dict]:
    """A run's metric history: reward steps, a held-out evaluation, policy steps."""
    reward = rows * 3 // 4
    history = [{"stage": "reward", "step": s, "t": 1.7e9 + s, "reward/loss": 0.69 * math.exp(-s / 80) + 0.1,
                "reward/accuracy": min(0.95, 0.5 + s / 800), "reward/margin": s / 400, "reward/pairs_per_s": 41.5}
               for s in range(1, reward)]
    history.append({"stage": "reward", "step": reward, "eval/reward/loss": 0.42, "eval/reward/accuracy": 0.64})
    history += [{"stage": "policy", "step": s, "t": 1.7e9 + reward + s, "policy/loss": 0.3 - s / 1000,
                 "policy/kl": 0.0004 * s, "policy/reward_mean": -0.4 + s / 250 + v / 100}
                for s in range(1, rows - reward + 1)]
    return history


def seed(*, ratings: int, rounds: int, annotators: int, answer_words: int = 0) -> dict:
    from django.db import connection
    from django.utils import timezone

    from annotate.models import (
        Answer, Campaign, Comparison, Export, ExternalModel, GenerationFailure, GenerationJob, Membership,
        PolicyVersion, Prompt, Rating, RewardModelVersion, Role, Round, TrainingRun,
    )
    from annotate.services.evaluation import evaluation_start
    from annotate.services.gold import gold_import
    from bench.seed import campaign_seed, users_create

    padding = random.Random(1)
    rng = random.Random(0)
    now = timezone.now()

    def pad() -> str:
        return " word" * padding.randint(0, answer_words) if answer_words else ""

    def chain(n: int, versions: int) -> list[dict]:
        """n prompts, with v0's two answers and one of each later version."""
        return [{"external_id": f"p{i}", "prompt": f"Question {i}?",
                 "answers": [f"answer {s} of v{v} to p{i}{pad()}" for v in range(versions)
                             for s in ((0, 1) if v == 0 else (0,))]}
                for i in range(n)]

    def rate(comparisons: list[int], users, k: int, limit: int) -> int:
        rows = []
        for i, c in enumerate(comparisons):
            start = (i * 7) % len(users)
            for j in range(k):
                choice = rng.choice(["A", "A", "B", "tie", "both_bad"])
                rows.append(Rating(
                    comparison_id=c, annotator=users[(start + j) % len(users)], choice=choice,
                    strength=rng.choice([1, 2, 3]) if choice in ("A", "B") else None,
                    time_on_task_ms=rng.randint(2000, 60000),
                ))
        Rating.objects.bulk_create(rows[:limit], batch_size=5000)
        return min(len(rows), limit)

    k = 5
    per_round = max(1, ratings // (k * rounds))  # comparisons (and prompts) per round
    users = users_create([f"annotator{i:04d}" for i in range(annotators)], roles=[Role.ANNOTATOR])
    [admin] = users_create(["bench-admin"], roles=[Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER])
    opened = campaign_seed(name="Big campaign", prompts=chain(per_round, rounds), overlap=k, versions=rounds)
    campaign = opened[0].campaign
    Membership.objects.bulk_create(
        Membership(campaign=campaign, annotator=u, daily_limit=200 if i % 3 == 0 else None,
                   status="paused" if i % 25 == 0 else "active", paused_reason="bench" if i % 25 == 0 else "")
        for i, u in enumerate(users)
    )
    gold_import(campaign=campaign, data="\n".join(json.dumps(
        {"external_id": f"g{i}", "prompt": f"What is {i} + {i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1)}
    ) for i in range(200)).encode())
    comparisons = list(Comparison.objects.filter(round__campaign=campaign).order_by("pk").values_list("pk", flat=True))
    Comparison.objects.filter(pk__in=comparisons[::10]).update(gold_choice="A")
    stored = rate(comparisons, users, k, ratings)
    Comparison.objects.filter(round__campaign=campaign).update(rating_count=k)
    # Round i's ratings on day i (the last round today); every round but the last done.
    Round.objects.filter(campaign=campaign).exclude(index=rounds - 1).update(status=Round.Status.DONE, closed_at=now)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "UPDATE annotate_rating r SET created_at = r.created_at - ((%s - 1 - rd.index) * interval '1 day') "
                "- ((r.id %% 600) * interval '1 minute') FROM annotate_comparison c JOIN annotate_round rd "
                "ON rd.id = c.round_id WHERE c.id = r.comparison_id AND rd.campaign_id = %s",
                [rounds, campaign.pk],
            )
        else:
            cursor.execute("UPDATE annotate_rating SET created_at = datetime(created_at, '-' || (id % 10) || ' days')")

    # What training leaves: a bootstrap run, a run per later round, a reward
    # and a policy version per run.
    versions = {v.version: v for v in PolicyVersion.objects.filter(campaign=campaign)}
    by_index = {r.index: r for r in Round.objects.filter(campaign=campaign)}
    TrainingRun.objects.create(
        campaign=campaign, kind=TrainingRun.Kind.BOOTSTRAP, stage="open", status=TrainingRun.Status.SUCCEEDED,
        progress=1.0, started_at=now - timedelta(days=rounds + 1), finished_at=now - timedelta(days=rounds),
        stages={name: _stage(10.0, {}, now - timedelta(days=rounds)) for name in ("import", "generate", "open")},
    )
    runs = TrainingRun.objects.bulk_create(
        TrainingRun(
            campaign=campaign, round=by_index[v - 1], kind=TrainingRun.Kind.TRAIN, stage="open",
            status=TrainingRun.Status.SUCCEEDED, progress=1.0, config={"method": "rloo", "reward": {"epochs": 2}},
            dataset_path=f"/store/datasets/run-{v}", dataset_sha256=hashlib.sha256(f"d{v}".encode()).hexdigest(),
            started_at=now - timedelta(days=rounds - v, minutes=5), finished_at=now - timedelta(days=rounds - v),
            metrics_history=_history(v), metrics={"eval/reward/accuracy": 0.64, "policy/kl": 0.04},
            stages={name: _stage(secs, {"policy_version": v} if name == "policy" else {},
                                 now - timedelta(days=rounds - v))
                    for name, secs in (("snapshot", 0.4), ("reward", 31.8), ("policy", 182.3), ("generate", 64.1),
                                       ("open", 0.1))},
        )
        for v in range(1, rounds)
    )
    rewards = RewardModelVersion.objects.bulk_create(
        RewardModelVersion(campaign=campaign, version=v, path=f"/store/reward-v{v}", training_run=run,
                           sha256=hashlib.sha256(f"r{v}".encode()).hexdigest(), dataset_sha256=run.dataset_sha256,
                           metrics={"eval/reward/accuracy": 0.64})
        for v, run in zip(range(1, rounds), runs)
    )
    for v, run, reward in zip(range(1, rounds), runs, rewards):
        versions[v].training_run, versions[v].reward_model = run, reward
        versions[v].metrics = {"policy/kl": 0.04, "policy/reward_mean": 0.1 * v}
    PolicyVersion.objects.bulk_update(list(versions.values()), ["training_run", "reward_model", "metrics"])

    prompts = list(Prompt.objects.filter(campaign=campaign, gold_pairs__isnull=True).order_by("pk"))
    endpoint = ExternalModel.objects.create(
        campaign=campaign, name="served", kind=ExternalModel.Kind.ENDPOINT, base_url="http://127.0.0.1:9/v1",
        model_name="SmolLM2-135M-Instruct", generation={"max_tokens": 64},
    )
    job = GenerationJob.objects.create(
        model=endpoint, status=GenerationJob.Status.SUCCEEDED, prompts_total=len(prompts),
        answered=len(prompts) - 50, failed=50, requests=len(prompts) + 60, started_at=now, finished_at=now,
    )
    Answer.objects.bulk_create(Answer(prompt=p, external_model=endpoint, sample_index=0, text=f"served {p.pk}{pad()}")
                               for p in prompts[50:])
    GenerationFailure.objects.bulk_create(GenerationFailure(job=job, prompt=p, attempts=3, error="HTTP 500")
                                          for p in prompts[:50])
    Export.objects.bulk_create(
        Export(campaign=campaign, kind=Export.Kind.PREFERENCES, format=Export.Format.JSONL, path=f"/store/e{i}.jsonl",
               sha256="0" * 64, rows=1000 * i, size_bytes=100_000 * i, created_by=admin)
        for i in range(20)
    )

    # An evaluation campaign: four imported models, 1,000 comparisons rated 3 times.
    evaluation = Campaign.objects.create(
        name="Evaluation campaign", kind=Campaign.Kind.EVALUATION, overlap=3, comparisons_per_round=1000,
        base_model="", auto_train=False, status=Campaign.Status.DRAFT,
    )
    eval_prompts = Prompt.objects.bulk_create(Prompt(campaign=evaluation, external_id=f"q{i}", text=f"Question {i}?")
                                              for i in range(250))
    for m in range(4):
        model = ExternalModel.objects.create(campaign=evaluation, name=f"model-{m}", kind=ExternalModel.Kind.IMPORTED)
        Answer.objects.bulk_create(Answer(prompt=p, external_model=model, sample_index=0, text=f"m{m} {p.pk}{pad()}")
                                   for p in eval_prompts)
    evaluation_start(campaign=evaluation)
    eval_comparisons = list(Comparison.objects.filter(round__campaign=evaluation).values_list("pk", flat=True))
    rate(eval_comparisons, users, 3, len(eval_comparisons) * 3)
    Comparison.objects.filter(round__campaign=evaluation).update(rating_count=3)

    for n in range(30):
        campaign_seed(name=f"campaign {n}", prompts=chain(10, 1), overlap=2, annotators=[u.username for u in users[:5]])
    Campaign.objects.exclude(pk=evaluation.pk).update(status="active")
    # Campaign admins see only what they administer: this one, every campaign.
    admin.administered_campaigns.add(*Campaign.objects.all())
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE")
    annotator = users[1]  # in the pool, active, with comparisons of the open round left to rate
    mine = Rating.objects.filter(annotator=annotator, comparison__round=by_index[rounds - 1])
    freed = list(mine.values_list("comparison_id", flat=True))
    mine.delete()
    Comparison.objects.filter(pk__in=freed).update(rating_count=k - 1)
    return {"campaign": campaign, "evaluation": evaluation, "admin": admin, "annotator": annotator,
            "run": runs[-1], "previous_run": runs[-2], "endpoint": endpoint, "job": job, "ratings": stored,
            "versions": (rounds - 2, rounds - 1)}


# Console URLs that only take a POST (forms post to them and are redirected to a page).
ACTIONS = {
    "console-campaign-action", "console-evaluation", "console-pool-create", "console-pool-add", "console-pool-member",
    "console-admins-add", "console-admin-remove", "console-endpoint-delete", "console-generation-start",
    "console-generation-job-cancel", "console-run-cancel", "console-campaign-run-action",
    "console-demonstration-review",
}
SLOW = ("quality", "leaderboard", "models")


def console_url_names() -> list[str]:
    """Every named URL under frontend/console/, in the order they are declared."""
    from django.urls import URLPattern, URLResolver

    from frontend.console import urls

    def walk(patterns):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns)
            elif isinstance(p, URLPattern):
                yield p.name

    return list(dict.fromkeys(walk(urls.urlpatterns)))


def targets(world: dict) -> tuple[list[tuple], list[str]]:
    """(label, who, path) of every page and API timed, and the console URLs
    that answer a GET but whose arguments this file cannot fill."""
    from django.urls import NoReverseMatch, get_resolver, reverse

    c, e = world["campaign"].pk, world["evaluation"].pk
    args = {"campaign_id": c, "run_id": world["run"].pk, "endpoint_id": world["endpoint"].pk,
            "job_id": world["job"].pk}
    extra = {  # a page's other views, beside the one with `args`
        "console-campaign": [("evaluation campaign overview", {"campaign_id": e}, "")],
        "console-models": [("evaluation models", {"campaign_id": e}, "")],
        "console-compare": [("compare (latest two)", {}, "?a={}&b={}".format(*world["versions"]))],
    }
    # pages that need a query to show anything (their bare URL answers 400)
    queries = {"console-runs-compare": f"?a={world['previous_run'].pk}&b={world['run'].pk}"}
    rows, untimed = [], []
    for name in console_url_names():
        if name in ACTIONS:
            continue
        [(possibilities, *_)] = get_resolver().reverse_dict.getlist(name)
        params = possibilities[0][1]
        try:
            path = reverse(name, kwargs={p: args[p] for p in params})
        except (KeyError, NoReverseMatch):
            untimed.append(name)
            continue
        rows.append((name.removeprefix("console-"), "admin", path + queries.get(name, "")))
        for label, kwargs, query in extra.get(name, []):
            rows.append((label, "admin", reverse(name, kwargs={p: kwargs.get(p, args[p]) for p in params}) + query))
    rows += [
        ("home (annotator)", "annotator", "/"),
        ("rating page", "annotator", f"/campaigns/{c}/rate/"),
        # what the pages' JavaScript asks for
        ("api: progress (rating page)", "annotator", f"/api/campaigns/{c}/progress/"),
        ("api: training run (run page, every 2 s)", "admin", f"/api/training-runs/{world['run'].pk}/"),
        ("api: generation job (job page)", "admin", f"/api/generation-jobs/{world['job'].pk}/"),
        ("api: job failures (job page)", "admin", f"/api/generation-jobs/{world['job'].pk}/failures/?limit=100"),
        ("api: generation jobs (endpoints page)", "admin", f"/api/campaigns/{c}/generation-jobs/"),
        ("api: members", "admin", f"/api/campaigns/{c}/members/"),
        ("api: campaigns", "admin", "/api/campaigns/"),
        ("api: quality", "admin", f"/api/campaigns/{c}/quality/"),
        ("api: leaderboard", "admin", f"/api/campaigns/{c}/leaderboard/"),
    ]
    return rows, untimed


def report(world: dict, *, n: int, n_slow: int, only: str = "") -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from annotate.models import Rating, Round

    clients = {}
    for who in ("admin", "annotator"):
        clients[who] = Client()
        clients[who].force_login(world[who])
    rows, untimed = targets(world)
    print(f"{Rating.objects.count():,} ratings, {Round.objects.filter(campaign=world['campaign']).count()} rounds in "
          f"the big campaign; {connection.vendor}; Django test Client, in process; target p95 < {TARGET_P95_MS:.0f} ms")
    print("(bytes: the response as sent, uncompressed: the project gzips static files only; gzip: what it would be)\n")
    print(f"{'page':42} {'n':>3} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'KiB':>8} {'gzip KiB':>9} {'cold ms':>9}  target")
    failed = []
    for label, who, path in rows:
        if only and not any(word in label for word in only.split(",")):
            continue
        client = clients[who]
        repeat = n_slow if any(word in label for word in SLOW) else n
        # The first request is the cold one: templates compiled, and the
        # memoized statistics (annotate/selectors/memo.py) computed for this
        # state of the ratings, as after every new rating; printed apart.
        t = time.perf_counter()
        first = client.get(path)
        cold = (time.perf_counter() - t) * 1000
        if first.status_code != 200:
            print(f"{label:42} answered {first.status_code} ({path})")
            failed.append(label)
            continue
        times, queries = [], 0
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
            queries = len(ctx)
        body = answer.content
        times.sort()
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
        verdict = "PASS" if p95 < TARGET_P95_MS else "FAIL"
        if verdict == "FAIL":
            failed.append(label)
        print(f"{label:42} {repeat:3d} {statistics.median(times):10.1f} {p95:8.1f} {queries:8d} "
              f"{len(body) / 1024:8.1f} {len(gzip.compress(body)) / 1024:9.1f} {cold:9.1f}  {verdict}")
    after_rating(world, clients["admin"], rows, n=n_slow, only=only)
    for name in untimed:
        print(f"{name:42} NOT TIMED: a new console page? give its URL's arguments in bench/console_pages.py")
    print(f"\n{len(failed)} over the target: {', '.join(failed) or 'none'}")


def _rate_once(world: dict, raters: list) -> None:
    """One rating of the big campaign through the services an annotator's
    request calls (a lease, then rating_create), by the first pool member
    who may and still has a comparison to rate."""
    import uuid

    from annotate.errors import ServiceError
    from annotate.services.leases import comparison_lease_next
    from annotate.services.ratings import rating_create

    while raters:
        try:
            lease = comparison_lease_next(annotator=raters[0], campaign=world["campaign"])
        except ServiceError:  # paused, over their daily limit: the next member
            lease = None
        if lease is not None:
            rating_create(annotator=raters[0], comparison_id=lease.comparison_id, choice="A", strength=2,
                          idempotency_key=uuid.uuid4(), time_on_task_ms=4000)
            return
        raters.pop(0)
    raise RuntimeError("no pool member has a comparison left to rate")


def after_rating(world: dict, client, rows: list, *, n: int, only: str) -> None:
    """The memoized pages again, each request after one new rating: the
    state a page meets on a campaign being rated. The statistics of the
    previous state are answered, marked stale, while a task computes the
    new one (annotate/selectors/memo.py memoized_latest). No worker runs
    here, so each refresh's lock is let go between requests (as the task
    does when it ends): every timed request also sends its refresh message,
    the whole cost a visit pays."""
    from django.contrib.auth import get_user_model
    from django.db.models import F

    from annotate.models import Campaign, Membership
    from annotate.selectors.memo import refresh_done

    campaign = world["campaign"]
    # Room for these ratings: the seeded collecting round is nearly full at k.
    Campaign.objects.filter(pk=campaign.pk).update(overlap=F("overlap") + 2)
    raters = list(get_user_model().objects.filter(
        pk__in=Membership.objects.filter(campaign=campaign).values("annotator_id")).order_by("pk"))
    locks = [("leaderboard", {"resamples": 200, "seed": 0, "by_round": by_round}) for by_round in (True, False)]
    locks.append(("quality", {"round": None}))
    print(f"\nafter a new rating (one rating through the services before each request; {n} requests):")
    for label, who, path in rows:
        if who != "admin" or not any(word in label for word in SLOW):
            continue
        if only and not any(word in label for word in only.split(",")):
            continue
        times, stale = [], 0
        for _ in range(n):
            _rate_once(world, raters)
            for name, params in locks:
                refresh_done(name, campaign=campaign, params=params)
            t = time.perf_counter()
            answer = client.get(path)
            times.append((time.perf_counter() - t) * 1000)
            body = answer.content.decode()
            stale += ('"stale":true' in body) or ("updating…" in body)
        times.sort()
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
        print(f"{label:42} {n:3d} {statistics.median(times):10.1f} {p95:8.1f}  stale {stale}/{n}  "
              f"{'PASS' if p95 < TARGET_P95_MS else 'FAIL'}")


if __name__ == "__main__":
    main()
