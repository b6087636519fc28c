"""Importing 100,000 answers: time and peak memory, beside the prompt import
of as many rows of as many bytes (the named peer).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.import_answers --prompts 25000 --models 4 --response-chars 1000 --repeat 3 --api

Builds a throwaway database (`bench_import_answers`, dropped at the end;
never the one DATABASE_URL names) and writes two JSONL files in a temporary
folder: `--prompts` x `--models` answers, each line carrying its prompt's
text (so the import also creates the prompts) and an answer of about
`--response-chars` characters; and as many prompt lines of the same length
for the prompt import. The import limit (RATCHET_IMPORT_MAX_BYTES, 20 MiB by
default) is raised to take the files: the figures are about a big file, and
its default says how big an upload the web server takes.

Each measured import runs in a process of its own, after a tiny warm-up
import, on a fresh campaign: `--repeat` times timed (the median is shown),
and once under tracemalloc for the peak Python allocation (tracemalloc
slows allocation, so that run's time is not reported). RSS growth is the process's peak resident set during the import
(VmHWM, reset before it) less its resident set before it. Runs: the prompt import; the answers
import through the service; the same file again (adds nothing); a dry run;
and with `--api`, the answers through the API (POST .../answers/import/ in
process, the file as the request body, spooled as the web server would).
The issue's target: peak memory under 200 MB.
"""
import argparse
import io
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import django

WORDS = (
    "the a model answer prompt rating round policy reward human feedback pair better worse clear short long "
    "because therefore however question explain why how what which each every data train loss step value"
).split()
DB_NAME = "bench_import_answers"


def _text(rng: random.Random, chars: int) -> str:
    words, size = [], 0
    while size < chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def write_files(folder: Path, *, prompts: int, models: int, response_chars: int) -> tuple[Path, Path]:
    """(answers file, prompts file), written a line at a time."""
    rng = random.Random(0)
    answers, peer = folder / "answers.jsonl", folder / "prompts.jsonl"
    with answers.open("w") as a, peer.open("w") as p:
        for i in range(prompts):
            question = f"Question {i}: " + _text(rng, 180) + "?"
            for m in range(models):
                response = _text(rng, response_chars)
                line = {"external_id": f"p{i}", "prompt": question, "model": f"model-{m}", "response": response,
                        "metadata": {"latency_ms": rng.randint(100, 5000)}}
                a.write(json.dumps(line) + "\n")
                # The peer's row: a prompt as long as the answer's line.
                p.write(json.dumps({"external_id": f"p{i}-{m}", "prompt": question + " " + response}) + "\n")
    return answers, peer


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kind: str, path: str, traced: bool, max_bytes: int) -> None:
    """One import in this process; prints one JSON line of figures."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.conf import settings

    from annotate.models import Campaign, Role
    from annotate.services.answers import answers_import
    from annotate.services.prompts import prompts_import

    settings.IMPORT_MAX_BYTES = max_bytes
    stamp = f"{kind} {'traced' if traced else 'timed'} {time.time_ns()}"
    warm = Campaign.objects.create(name=f"warm-up {stamp}", base_model="bench/none")
    prompts_import(campaign=warm, data=b'{"prompt": "warm"}\n')
    answers_import(campaign=warm, data=b'{"prompt": "warm", "model": "m", "response": "up"}\n')
    campaign = Campaign.objects.create(name=stamp, base_model="bench/none")
    if kind == "answers-again":
        with open(path, "rb") as f:
            answers_import(campaign=campaign, data=f)
    if kind == "answers-api":
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.test import Client
        from django.test.utils import setup_test_environment
        from rest_framework.authtoken.models import Token

        setup_test_environment()  # ALLOWED_HOSTS takes the test client's "testserver"
        admin = get_user_model().objects.create(username=f"bench-admin-{time.time_ns()}")
        admin.groups.add(Group.objects.get_or_create(name=Role.CAMPAIGN_ADMIN)[0])
        admin.administered_campaigns.add(warm, campaign)
        token = Token.objects.create(user=admin).key
        size = os.path.getsize(path)

        def post(into, body, size: int) -> dict:
            answer = Client().generic(
                "POST", f"/api/campaigns/{into.pk}/answers/import/", secure=True, HTTP_AUTHORIZATION=f"Token {token}",
                **{"wsgi.input": body, "CONTENT_LENGTH": str(size), "CONTENT_TYPE": "application/x-ndjson"},
            )
            assert answer.status_code == 200, (answer.status_code, answer.content[:500])
            return answer.json()

        # A first request sets up what every later one uses (URL patterns, DRF, the schema's classes).
        warm_up = b'{"prompt": "warm", "model": "warm", "response": "up"}\n'
        post(warm, io.BytesIO(warm_up), len(warm_up))

        def run():
            with open(path, "rb") as body:
                return post(campaign, body, size)
    else:
        importer = prompts_import if kind == "prompts" else answers_import

        def run():
            with open(path, "rb") as f:
                result = importer(campaign=campaign, data=f, dry_run=kind == "answers-dry-run")
            return {"created": result.created, "existing": result.existing, "lines": result.lines}

    # The warm-up (and answers-again's first import) counted out of the peak.
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = _status_kib("VmRSS")
    if traced:
        import tracemalloc

        tracemalloc.start()
    t0 = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    print(json.dumps({
        "seconds": seconds, "rss_growth_mib": (_status_kib("VmHWM") - rss_before) / 1024,
        "tracemalloc_peak_mib": peak / 2**20 if peak is not None else None,
        "created": result["created"], "existing": result["existing"], "lines": result["lines"],
    }))


def measure(kind: str, path: Path, *, env: dict, traced: bool, max_bytes: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.import_answers", "--child", kind, str(path), "--max-bytes", str(max_bytes)]
        + (["--traced"] if traced else []),
        env=env, capture_output=True, text=True,
    )
    if out.returncode:
        raise SystemExit(f"{kind} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=25_000)
    parser.add_argument("--models", type=int, default=4, help="answers per prompt: prompts x models in all")
    parser.add_argument("--response-chars", type=int, default=1000)
    parser.add_argument("--api", action="store_true", help="also import the answers through the API")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each import (the median is shown)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # DEBUG off, as in production (with DEBUG on Django keeps every query's
    # SQL, which here would be the memory measured); it then wants a key.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ["DJANGO_DEBUG"] = "0"
    if args.child:
        child(*args.child, traced=args.traced, max_bytes=args.max_bytes)
        return

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    if connection.vendor != "postgresql":
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server: the figures are PostgreSQL's.")
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = DB_NAME
    dbs = setup_databases(verbosity=0, interactive=False)
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{DB_NAME}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-answers-") as tmp:
            t0 = time.perf_counter()
            answers, peer = write_files(
                Path(tmp), prompts=args.prompts, models=args.models, response_chars=args.response_chars
            )
            rows = args.prompts * args.models
            sizes = {p.name: p.stat().st_size for p in (answers, peer)}
            max_bytes = 2 * max(sizes.values())
            print(f"{rows:,} rows: answers.jsonl {sizes['answers.jsonl'] / 2**20:.1f} MiB, prompts.jsonl "
                  f"{sizes['prompts.jsonl'] / 2**20:.1f} MiB (written in {time.perf_counter() - t0:.1f} s); "
                  f"import limit raised to {max_bytes / 2**20:.0f} MiB")
            runs = [("prompts", peer), ("answers", answers), ("answers-again", answers), ("answers-dry-run", answers)]
            if args.api:
                runs.append(("answers-api", answers))
            timed = {kind: [] for kind, _ in runs}
            # Rounds of every kind in turn, so that each meets the database
            # at about the same size (each run adds to it).
            for _ in range(args.repeat):
                for kind, path in runs:
                    timed[kind].append(measure(kind, path, env=env, traced=False, max_bytes=max_bytes))
            figures = {}
            for kind, path in runs:
                traced = measure(kind, path, env=env, traced=True, max_bytes=max_bytes)
                seconds = sorted(t["seconds"] for t in timed[kind])
                figures[kind] = f = {
                    **timed[kind][0], "seconds": statistics.median(seconds),
                    "rss_growth_mib": max(t["rss_growth_mib"] for t in timed[kind]),
                    "tracemalloc_peak_mib": traced["tracemalloc_peak_mib"],
                }
                print(f"{kind:16} {f['seconds']:6.1f} s (of {', '.join(f'{s:.1f}' for s in seconds)}) "
                      f"{rows / f['seconds']:7,.0f} rows/s   tracemalloc peak {f['tracemalloc_peak_mib']:6.1f} MiB   "
                      f"RSS growth {f['rss_growth_mib']:6.1f} MiB   created {f['created']:,} existing "
                      f"{f['existing']:,} lines {f['lines']:,}")
            a, p = figures["answers"], figures["prompts"]
            print(f"answers / prompts: time {a['seconds'] / p['seconds']:.2f}x, tracemalloc peak "
                  f"{a['tracemalloc_peak_mib'] / p['tracemalloc_peak_mib']:.2f}x, RSS growth "
                  f"{a['rss_growth_mib'] / max(p['rss_growth_mib'], 0.1):.2f}x")
            worst = max(max(f["tracemalloc_peak_mib"], f["rss_growth_mib"]) for k, f in figures.items() if k != "prompts")
            print(f"answers imports' worst peak: {worst:.1f} MiB (target: under 200 MB)")
    finally:
        if not args.keep:
            teardown_databases(dbs, verbosity=0)


if __name__ == "__main__":
    main()
