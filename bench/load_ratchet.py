"""Ratchet under bench/load.py: started as config/platform.py starts it, with
the web server sized below; seeded in a subprocess on the platform's own
database (this module run as a script: Django is set up there, never in the
load driver); checked in SQL afterwards."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from bench.load_target import OVERLAP, ROOT, LoadTarget, pairs
from config.platform import Platform

# gunicorn for 2 cores. The calls are short and spend much of their time in
# PostgreSQL (another process), so a sync worker per request would leave the
# cores idle while it waits; threads (gthread, keep-alive) overlap those
# waits. One process per core: measured at 32 annotators on PostgreSQL
# (2026-11-29, 40 s each), 4 x 4 gave 170 loops/s, 3 x 4 190, 2 x 8 190,
# 2 x 16 208, 2 x 32 195 (2 x 4, too few requests in flight, 149): more
# processes than cores only take turns on them. SQLite serialises writers
# on one file lock, so more writers than cores only queue on it: 2 x 4 there.
WEB = {"postgres": {"web_workers": 2, "web_threads": 16}, "sqlite": {"web_workers": 2, "web_threads": 4}}
# Persistent database connections: without them every request opens one
# (a PostgreSQL backend fork, ~2-5 ms of CPU on these cores).
WEB_ENV = {"DATABASE_CONN_MAX_AGE": "600"}


def seed_ratchet(spec: dict) -> dict:
    """Annotators with tokens, then one campaign per level (bench/seed.py).
    Runs in the subprocess Ratchet.seed starts, on the platform's database."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    # Django is set up only now: these read the models at import.
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from annotate.models import Role
    from bench.seed import campaign_seed, users_create

    names = [f"annotator{i:04d}" for i in range(spec["annotators"])]
    users = users_create(names, roles=[Role.ANNOTATOR])
    campaigns = []
    rank_k = spec.get("rank_k", 2)
    rows = pairs(spec["comparisons"] + 1)
    for name in spec["campaigns"]:
        # A k-set's third and fourth answers: the next row's (another prompt's, which is what a
        # rater ranks low; the load measures the server, not the texts).
        prompts = [{"external_id": r["external_id"], "prompt": r["prompt"],
                    "answers": ([r["a"], r["b"]] + [rows[i + 1]["a"], rows[i + 1]["b"]])[:max(2, rank_k)]}
                   for i, r in enumerate(rows[:-1])]
        [round_] = campaign_seed(name=name, prompts=prompts, overlap=OVERLAP, annotators=names, rank_k=rank_k)
        campaigns.append(round_.campaign_id)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh statistics, as a live database would have
    tokens = Token.objects.filter(user__in=users).order_by("user_id")
    return {"annotators": [[t.user_id, t.key] for t in tokens], "campaigns": campaigns}


class Ratchet(LoadTarget):
    name = "ratchet"
    warm_path = "/api/campaigns/"
    keepalive = True  # gunicorn's gthread worker keeps connections open
    next_method, next_path, no_work_status, item_key = "POST", "/api/campaigns/{campaign}/next/", 204, "comparison"
    submit_path = "/api/ratings/"

    def __init__(self, workdir: Path, db: str, web: dict | None = None, rank_k: int = 2):
        self.db = db
        self.rank_k = rank_k  # 3 or 4: the campaigns rank k-sets, and the annotators send rankings
        backend = {"postgres": "services", "sqlite": "embedded"}[db]
        self.web = {**WEB[db], **(web or {})}
        self.platform = Platform(workdir, backend=backend, extra_env=WEB_ENV, **self.web)
        self.base = self.platform.base
        if db == "postgres":
            self.postgres_dsn = self.platform.env["DATABASE_URL"]
        else:
            self.sqlite_path = self.platform.workdir / "var" / "ratchet.sqlite3"

    def describe(self) -> dict:
        kind = "gthread" if self.web["web_threads"] > 1 else "sync"
        return {"server": f"gunicorn -w {self.web['web_workers']} --threads {self.web['web_threads']} ({kind})",
                "database": "PostgreSQL" if self.db == "postgres" else "SQLite (embedded default)", **WEB_ENV}

    def start(self) -> None:
        self.platform.start()

    def server_pgids(self) -> dict[str, int]:
        return {proc.name: proc.pid for proc in self.platform.procs}  # each started in a session of its own

    def db_pids(self) -> list[int]:
        """PostgreSQL backends serving the platform (persistent connections,
        so they live through the window); none on SQLite."""
        if self.db != "postgres":
            return []
        return [row[0] for row in self.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]

    def stop(self) -> None:
        self.platform.stop()

    def seed(self, *, annotators: int, levels: list[str], comparisons: int) -> dict:
        spec = {"annotators": annotators, "campaigns": [f"load {name}" for name in levels], "comparisons": comparisons,
                "rank_k": self.rank_k}
        out = subprocess.run(
            [sys.executable, "-m", "bench.load_ratchet", json.dumps(spec)],
            cwd=ROOT, env={**self.platform.env, "DJANGO_SETTINGS_MODULE": "config.settings"},
            capture_output=True, text=True, timeout=1800,
        )
        if out.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def rating(self, item: int, rng: random.Random, key: str) -> dict:
        if self.rank_k > 2:
            # A random order of the k answers, a tie now and then (about one ranking in three).
            order = rng.sample(range(1, self.rank_k + 1), self.rank_k)
            ranking = [[order[0]]]
            for position in order[1:]:
                if rng.random() < 0.15:
                    ranking[-1].append(position)
                else:
                    ranking.append([position])
            return {"comparison": item, "ranking": ranking, "idempotency_key": key,
                    "time_on_task_ms": rng.randint(5000, 60000)}
        choice = rng.choice(["A", "A", "B", "B", "tie"])
        payload = {"comparison": item, "choice": choice, "idempotency_key": key,
                   "time_on_task_ms": rng.randint(2000, 30000)}
        if choice in ("A", "B"):
            payload["strength"] = rng.randint(1, 3)
        return payload

    def check(self, campaign: int, acked: list[tuple], given: dict) -> dict:
        """The invariants, in SQL on the platform's database."""
        scope = ("SELECT c.id FROM annotate_comparison c JOIN annotate_round r ON r.id = c.round_id "
                 "WHERE r.campaign_id = ?")
        over_k = self.query(
            f"SELECT comparison_id, count(*) FROM annotate_rating WHERE comparison_id IN ({scope}) "
            f"GROUP BY comparison_id HAVING count(*) > ?", (campaign, OVERLAP))
        duplicates = self.query(
            f"SELECT comparison_id, annotator_id, count(*) FROM annotate_rating WHERE comparison_id IN ({scope}) "
            "GROUP BY comparison_id, annotator_id HAVING count(*) > 1", (campaign,))
        # Leases that still hold a slot (live or done): never more than k per comparison.
        leased_over_k = self.query(
            f"SELECT comparison_id, count(*) FROM annotate_lease WHERE comparison_id IN ({scope}) "
            "AND status IN ('leased', 'done') GROUP BY comparison_id HAVING count(*) > ?", (campaign, OVERLAP))
        count_drift = self.query(
            "SELECT c.id FROM annotate_comparison c JOIN annotate_round r ON r.id = c.round_id "
            "WHERE r.campaign_id = ? AND c.rating_count <> "
            "(SELECT count(*) FROM annotate_rating x WHERE x.comparison_id = c.id)", (campaign,))
        stored = {
            row[0]: (row[1], row[2], str(row[3]).replace("-", ""))
            for row in self.query(
                f"SELECT id, annotator_id, comparison_id, idempotency_key FROM annotate_rating "
                f"WHERE comparison_id IN ({scope})", (campaign,))
        }
        missing = [a for a in acked if stored.get(a[3]) != (a[0], a[1], a[2].replace("-", ""))]
        # Rankings: each k-set's rating ranks every one of its answers once, and nothing else rates it.
        bad_rankings = 0
        if self.rank_k > 2:
            for choice, ranking, shown in self.query(
                "SELECT x.choice, x.ranking, c.answers FROM annotate_rating x JOIN annotate_comparison c"
                " ON c.id = x.comparison_id JOIN annotate_round r ON r.id = c.round_id WHERE r.campaign_id = ?",
                (campaign,),
            ):
                ranking = json.loads(ranking) if isinstance(ranking, str) else ranking
                shown = json.loads(shown) if isinstance(shown, str) else shown
                positions = sorted(p for group in ranking or [] for p in group)
                if choice != "ranking" or len(shown) != self.rank_k or positions != list(range(1, self.rank_k + 1)):
                    bad_rankings += 1
        return self.invariants(stored=len(stored), acked=acked, missing=missing, over_k=over_k,
                               duplicates=duplicates, given=given,
                               leases_over_k_sql=len(leased_over_k), rating_count_drift=len(count_drift),
                               **({"rankings_malformed": bad_rankings} if self.rank_k > 2 else {}))


if __name__ == "__main__":
    print(json.dumps(seed_ratchet(json.loads(sys.argv[1]))))
