"""Annotators looping "next comparison → submit" against the real platform,
with Label Studio as the peer (issue 6): throughput, latency per call,
errors, and the invariants checked in SQL afterwards.

    # saturation: N annotators in closed loops (no pause), 60 s each level
    .venv/bin/python -m bench.load --targets ratchet label-studio --db postgres --annotators 8 32 128
    # open load: 500 annotators, each starting a loop about every 10 s (Poisson; 50 loops/s in all)
    .venv/bin/python -m bench.load --targets ratchet --db postgres --open-rate 50 --annotators 500
    # the embedded default (SQLite, folder broker), and Label Studio on SQLite
    .venv/bin/python -m bench.load --targets ratchet label-studio --db sqlite --annotators 32

Ratchet runs as tests/e2e/harness.py starts it: gunicorn (see WEB_* below
for the worker count and why) and a Celery worker with beat, on PostgreSQL +
Redis (`--db postgres`) or SQLite + the folder broker (`--db sqlite`), DEBUG
off. Each level gets a fresh campaign: overlap k = 3, `--comparisons`
comparisons made from the shipped human-preference pairs (data/, the same
texts Label Studio gets), seeded through the services an admin's import
uses; every annotator has an account, a token and a place in the pool.

Label Studio (`label-studio` from PyPI, in its own venv: bench/peers/
label_studio.sh) runs under uWSGI with the settings of its own image
(bench/peers/label_studio_uwsgi.ini), on its own database; a project per
level with a <Pairwise> labeling config, maximum_annotations = 3 and the
same tasks; annotators are organization members with legacy API tokens.

Both are driven by the same asyncio + aiohttp client (one process; its CPU
time is reported): closed loop = each annotator calls next, then submits a
rating of what it got, at once, again; open load = each annotator starts a
loop at Poisson times, mean gap annotators / open-rate seconds, whatever
the previous calls took (a late start is counted). Latency is per call,
for calls started in the measured window (after `--warmup`); a loop counts
when its submit was acknowledged inside the window.

Then, in SQL on each target's database: comparisons (tasks) with more than
k ratings, duplicate (comparison, annotator) ratings, acknowledged ratings
missing (or changed), comparisons given to more than k annotators (what the
clients saw; Ratchet's leases also in SQL), and Ratchet's rating_count
against the rows. The JSON goes to stdout and bench/out/load-*.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "finegrainedrlhf_qa_feedback_dev.jsonl"
OUT = ROOT / "bench" / "out"
OVERLAP = 3
DATA_PAIRS = sum(1 for _ in DATA.open(encoding="utf-8"))
PG_ADMIN = os.environ.get("RATCHET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

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

LS_VENV = ROOT / "bench" / ".peers" / "label-studio"
LS_INI = ROOT / "bench" / "peers" / "label_studio_uwsgi.ini"
LS_CONFIG = (
    '<View><Header value="$prompt"/>'
    '<Pairwise name="comparison" toName="answer_a,answer_b"/>'
    '<Text name="answer_a" value="$answer_a"/><Text name="answer_b" value="$answer_b"/></View>'
)


def pairs(n: int) -> list[dict]:
    """n (prompt, answer A, answer B) rows from the shipped human-preference
    pairs, cycling through them (with new ids) when n is larger; sides random."""
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    rng = random.Random(0)
    out = []
    for i in range(n):
        row = rows[i % len(rows)]
        a, b = (row["chosen"], row["rejected"]) if rng.random() < 0.5 else (row["rejected"], row["chosen"])
        out.append({"external_id": f"q{i:06d}", "prompt": row["prompt"], "a": a, "b": b})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, *, timeout: float, what: str, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not start; see {log}")


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def pids_cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by these processes (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes of these
    process groups, with the finished children their leaders waited for."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) in pgids:
            total += int(fields[11]) + int(fields[12])
            if int(entry.name) in pgids:
                total += int(fields[13]) + int(fields[14])
    return total / tick


# --- Ratchet ---------------------------------------------------------------------


def seed_ratchet(spec: dict) -> dict:
    """Run in a subprocess with the platform's environment (Django set up on
    its database): annotators with tokens, then one campaign per level."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from annotate.models import Campaign, PolicyVersion, Answer, Role
    from annotate.services.campaigns import campaign_create
    from annotate.services.memberships import memberships_add
    from annotate.services.prompts import prompts_import
    from annotate.services.rounds import round_open

    User = get_user_model()
    group = Group.objects.get_or_create(name=Role.ANNOTATOR)[0]
    # One hash for all: nobody logs in with a password here, the clients use tokens.
    password = make_password("annotator-password")
    names = [f"annotator{i:04d}" for i in range(spec["annotators"])]
    User.objects.bulk_create([User(username=name, password=password) for name in names])
    users = list(User.objects.filter(username__in=names).order_by("username"))
    User.groups.through.objects.bulk_create([User.groups.through(user_id=u.pk, group_id=group.pk) for u in users])
    tokens = Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
    campaigns = []
    for name in spec["campaigns"]:
        rows = pairs(spec["comparisons"])
        campaign = campaign_create(
            name=name, base_model="bench/load: answers are stored, no model runs", overlap=OVERLAP,
            comparisons_per_round=len(rows), auto_train=False,
        )
        jsonl = "\n".join(json.dumps({"external_id": r["external_id"], "prompt": r["prompt"]}) for r in rows)
        prompts_import(campaign=campaign, data=jsonl.encode())
        # What the bootstrap run's generate stage leaves: a base version and two answers per prompt.
        v0 = PolicyVersion.objects.create(campaign=campaign, version=0, path="bench/load", sha256="0" * 64)
        prompts = {p.external_id: p for p in campaign.prompts.all()}
        Answer.objects.bulk_create(
            [Answer(prompt=prompts[r["external_id"]], policy_version=v0, sample_index=s, text=r["a" if s == 0 else "b"])
             for r in rows for s in (0, 1)],
            batch_size=2000,
        )
        round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.ACTIVE)
        memberships_add(campaign=campaign, usernames=names)
        campaigns.append(campaign.pk)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh statistics, as a live database would have
    return {"annotators": [[t.user_id, t.key] for t in sorted(tokens, key=lambda t: t.user_id)], "campaigns": campaigns}


class Ratchet:
    name = "ratchet"
    warm_path = "/api/campaigns/"
    keepalive = True  # gunicorn's gthread worker keeps connections open

    def __init__(self, workdir: Path, db: str, web: dict | None = None):
        from tests.e2e.harness import Platform

        self.db = db
        backend = {"postgres": "services", "sqlite": "embedded"}[db]
        self.web = {**WEB[db], **(web or {})}
        self.platform = Platform(workdir, backend=backend, extra_env=WEB_ENV, **self.web)
        self.base = self.platform.base

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
        return [row[0] for row in self._query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]

    def stop(self) -> None:
        self.platform.stop()

    def seed(self, *, annotators: int, levels: list[str], comparisons: int) -> dict:
        spec = {"annotators": annotators, "campaigns": [f"load {name}" for name in levels], "comparisons": comparisons}
        out = subprocess.run(
            [sys.executable, "-m", "bench.load", "--seed-ratchet", json.dumps(spec)],
            cwd=ROOT, env={**self.platform.env, "DJANGO_SETTINGS_MODULE": "config.settings"},
            capture_output=True, text=True, timeout=1800,
        )
        if out.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    # the two calls of a loop
    def next_call(self, campaign: int):
        return "POST", f"/api/campaigns/{campaign}/next/", None

    @staticmethod
    def item_of(status, body):
        if status == 204:
            return "no work"
        return body["comparison"] if status == 200 else None

    @staticmethod
    def submit_call(campaign: int, item: int, rng: random.Random):
        key = str(uuid.uuid4())
        choice = rng.choice(["A", "A", "B", "B", "tie"])
        payload = {"comparison": item, "choice": choice, "idempotency_key": key,
                   "time_on_task_ms": rng.randint(2000, 30000)}
        if choice in ("A", "B"):
            payload["strength"] = rng.randint(1, 3)
        return "POST", "/api/ratings/", payload, key

    @staticmethod
    def acked_id(status, body):
        return body["id"] if status == 201 else None

    def _query(self, sql: str, params=()) -> list[tuple]:
        if self.db == "postgres":
            import psycopg

            with psycopg.connect(self.platform.env["DATABASE_URL"]) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        with sqlite3.connect(self.platform.workdir / "var" / "ratchet.sqlite3") as conn:
            return conn.execute(sql, params).fetchall()

    def check(self, campaign: int, acked: list[tuple], given: dict) -> dict:
        """The invariants, in SQL on the platform's database."""
        scope = ("SELECT c.id FROM annotate_comparison c JOIN annotate_round r ON r.id = c.round_id "
                 "WHERE r.campaign_id = ?")
        over_k = self._query(
            f"SELECT comparison_id, count(*) FROM annotate_rating WHERE comparison_id IN ({scope}) "
            f"GROUP BY comparison_id HAVING count(*) > ?", (campaign, OVERLAP))
        duplicates = self._query(
            f"SELECT comparison_id, annotator_id, count(*) FROM annotate_rating WHERE comparison_id IN ({scope}) "
            "GROUP BY comparison_id, annotator_id HAVING count(*) > 1", (campaign,))
        # Leases that still hold a slot (live or done): never more than k per comparison.
        leased_over_k = self._query(
            f"SELECT comparison_id, count(*) FROM annotate_lease WHERE comparison_id IN ({scope}) "
            "AND status IN ('leased', 'done') GROUP BY comparison_id HAVING count(*) > ?", (campaign, OVERLAP))
        count_drift = self._query(
            "SELECT c.id FROM annotate_comparison c JOIN annotate_round r ON r.id = c.round_id "
            "WHERE r.campaign_id = ? AND c.rating_count <> "
            "(SELECT count(*) FROM annotate_rating x WHERE x.comparison_id = c.id)", (campaign,))
        stored = {
            row[0]: (row[1], row[2], str(row[3]).replace("-", ""))
            for row in self._query(
                f"SELECT id, annotator_id, comparison_id, idempotency_key FROM annotate_rating "
                f"WHERE comparison_id IN ({scope})", (campaign,))
        }
        missing = [a for a in acked if stored.get(a[3]) != (a[0], a[1], a[2].replace("-", ""))]
        return {
            "ratings_in_db": len(stored),
            "acknowledged": len(acked),
            "acknowledged_missing": len(missing),
            "over_k": len(over_k),
            "duplicates": len(duplicates),
            "given_past_overlap_clients": sum(1 for who in given.values() if len(who) > OVERLAP),
            "leases_over_k_sql": len(leased_over_k),
            "rating_count_drift": len(count_drift),
        }


# --- Label Studio -----------------------------------------------------------------


class LabelStudio:
    name = "label-studio"
    warm_path = "/api/projects/"
    # uWSGI's HTTP router, as Label Studio configures it, closes each
    # connection after its response: the client must not reuse one.
    keepalive = False

    def __init__(self, workdir: Path, db: str, processes: int | None = None):
        if not (LS_VENV / "bin" / "uwsgi").exists():
            raise SystemExit("Label Studio is not installed: run bench/peers/label_studio.sh first.")
        self.workdir, self.db = Path(workdir), db
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.admin_token = uuid.uuid4().hex
        self.processes = processes
        ls_path = subprocess.run(
            [str(LS_VENV / "bin" / "python"), "-c", "import label_studio, os; print(os.path.dirname(label_studio.__file__))"],
            capture_output=True, text=True, check=True).stdout.strip()
        self.version = subprocess.run(
            [str(LS_VENV / "bin" / "python"), "-c", "import label_studio; print(label_studio.__version__)"],
            capture_output=True, text=True, check=True).stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "VIRTUAL_ENV"))}
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(self.workdir / "ls-data"),
            LS_PATH=ls_path, LS_HTTP=f"127.0.0.1:{self.port}",
            PATH=f"{LS_VENV / 'bin'}:{env.get('PATH', '')}",
            DEBUG="false", LOG_LEVEL="WARNING",
        )
        if processes:
            env["UWSGI_PROCESSES"] = str(processes)
        if db == "postgres":
            self.db_name = "bench_ls_" + uuid.uuid4().hex[:10]
            env.update(DJANGO_DB="default", POSTGRE_NAME=self.db_name, POSTGRE_USER="postgres", POSTGRE_PASSWORD="",
                       POSTGRE_HOST="127.0.0.1", POSTGRE_PORT="5432")
        else:
            self.db_name = None
            env.update(DJANGO_DB="sqlite", DATABASE_NAME=str(self.workdir / "ls-data" / "label_studio.sqlite3"))
        self.env = env

    def describe(self) -> dict:
        return {"version": self.version, "server": f"uWSGI, {self.processes or 'cores x 2 ='} "
                f"{'' if self.processes else os.cpu_count() * 2} processes x 1 thread (its image's uwsgi.ini)",
                "database": "PostgreSQL" if self.db == "postgres" else "SQLite"}

    def start(self) -> None:
        (self.workdir / "ls-data").mkdir(parents=True, exist_ok=True)
        if self.db_name:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
        # Migrations, the admin and the organization, legacy tokens on: its own CLI.
        out = subprocess.run(
            [str(LS_VENV / "bin" / "label-studio"), "init", "-q", "--no-browser", "--username", "admin@bench.local",
             "--password", "admin-password", "--user-token", self.admin_token, "--enable-legacy-api-token"],
            cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=1800,
        )
        if out.returncode != 0:
            raise RuntimeError(f"label-studio init failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        log = open(self.workdir / "uwsgi.log", "ab")
        self.proc = subprocess.Popen([str(LS_VENV / "bin" / "uwsgi"), "--ini", str(LS_INI)], cwd=self.workdir,
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, timeout=120, what="Label Studio (uWSGI)", log=self.workdir / "uwsgi.log")

    def server_pgids(self) -> dict[str, int]:
        return {"uwsgi": self.proc.pid}

    def db_pids(self) -> list[int]:
        return []  # a connection per request: its backends are gone before they can be read

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # uWSGI: INT stops at once, TERM reloads gracefully
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.db_name:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _api(self, method: str, path: str, body=None):
        import urllib.request

        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Authorization", f"Token {self.admin_token}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read() or b"null")

    def seed(self, *, annotators: int, levels: list[str], comparisons: int) -> dict:
        out = subprocess.run(
            [str(LS_VENV / "bin" / "python"), str(ROOT / "bench" / "peers" / "label_studio_seed.py"), str(annotators)],
            cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=1800,
        )
        if out.returncode != 0:
            raise RuntimeError(f"Label Studio users failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        users = json.loads(out.stdout.strip().splitlines()[-1])
        projects = []
        for name in levels:
            project = self._api("POST", "/api/projects/", {
                "title": f"load {name}", "label_config": LS_CONFIG, "maximum_annotations": OVERLAP,
            })
            tasks = [{"data": {"prompt": r["prompt"], "answer_a": r["a"], "answer_b": r["b"]}} for r in pairs(comparisons)]
            for start in range(0, len(tasks), 2000):
                self._api("POST", f"/api/projects/{project['id']}/import", tasks[start:start + 2000])
            projects.append(project["id"])
        if self.db == "postgres":
            self._query("ANALYZE", fetch=False)
        return {"annotators": users, "campaigns": projects}

    def next_call(self, project: int):
        return "GET", f"/api/projects/{project}/next/", None

    @staticmethod
    def item_of(status, body):
        if status == 404:
            return "no work"
        return body["id"] if status == 200 else None

    @staticmethod
    def submit_call(project: int, item: int, rng: random.Random):
        key = str(uuid.uuid4())  # Label Studio takes none; kept for the client's own record
        selected = rng.choice(["left", "left", "right", "right", "left"])
        payload = {"result": [{"from_name": "comparison", "to_name": "answer_a,answer_b", "type": "pairwise",
                               "value": {"selected": selected}}],
                   "lead_time": rng.randint(2000, 30000) / 1000}
        return "POST", f"/api/tasks/{item}/annotations/", payload, key

    @staticmethod
    def acked_id(status, body):
        return body["id"] if status == 201 else None

    def _query(self, sql: str, params=(), fetch=True) -> list[tuple]:
        if self.db == "postgres":
            import psycopg

            with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db_name, autocommit=True) as conn:
                cur = conn.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if fetch else []
        with sqlite3.connect(self.env["DATABASE_NAME"]) as conn:
            return conn.execute(sql, params).fetchall()

    def check(self, project: int, acked: list[tuple], given: dict) -> dict:
        live = "project_id = ? AND was_cancelled = ?"
        over_k = self._query(
            f"SELECT task_id, count(*) FROM task_completion WHERE {live} GROUP BY task_id HAVING count(*) > ?",
            (project, False, OVERLAP))
        duplicates = self._query(
            f"SELECT task_id, completed_by_id, count(*) FROM task_completion WHERE {live} "
            "GROUP BY task_id, completed_by_id HAVING count(*) > 1", (project, False))
        stored = {row[0]: (row[1], row[2]) for row in self._query(
            "SELECT id, completed_by_id, task_id FROM task_completion WHERE project_id = ?", (project,))}
        missing = [a for a in acked if stored.get(a[3]) != (a[0], a[1])]
        return {
            "ratings_in_db": len(stored),
            "acknowledged": len(acked),
            "acknowledged_missing": len(missing),
            "over_k": len(over_k),
            "duplicates": len(duplicates),
            "given_past_overlap_clients": sum(1 for who in given.values() if len(who) > OVERLAP),
        }


# --- the load -------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


async def drive(target, campaign: int, annotators: list[list], *, duration: float, warmup: float,
                open_rate: float | None, seed: int) -> dict:
    """Run the annotators against one campaign; returns figures, what the
    clients were given, and the ratings they saw acknowledged."""
    import aiohttp

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    start, stop = t0 + warmup, t0 + warmup + duration
    lat = {"next": [], "submit": []}
    statuses: Counter = Counter()
    samples: dict[str, str] = {}
    given: dict[int, set] = defaultdict(set)
    acked: list[tuple] = []
    counts = Counter()
    mean_gap = len(annotators) / open_rate if open_rate else 0.0
    timeout = aiohttp.ClientTimeout(total=120)
    # Idle connections are dropped before the server's keep-alive timeout
    # (gunicorn: 2 s) can close them under a request being sent.
    connector = (aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0) if target.keepalive
                 else aiohttp.TCPConnector(limit=0, force_close=True))

    async with aiohttp.ClientSession(base_url=target.base, connector=connector, timeout=timeout) as session:

        async def call(kind: str, method: str, path: str, payload, headers):
            began = loop.time()
            try:
                async with session.request(method, path, json=payload, headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raw, status = str(exc).encode(), type(exc).__name__
            ended = loop.time()
            if start <= began < stop:
                lat[kind].append(ended - began)
                statuses[f"{kind} {status}"] += 1
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if status not in (200, 201, 204) and f"{kind} {status}" not in samples:
                samples[f"{kind} {status}"] = raw[:300].decode(errors="replace")
            return status, body, ended

        async def annotator(i: int, user_id: int, token: str):
            rng = random.Random(seed * 1_000_003 + i)
            headers = {"Authorization": f"Token {token}"}
            due = t0 + (rng.expovariate(1 / mean_gap) if open_rate else 0.0)
            while True:
                if open_rate:
                    now = loop.time()
                    if due > now:
                        await asyncio.sleep(due - now)
                    elif now - due > 0.01 and start <= now < stop:
                        counts["late_starts"] += 1  # the previous loop ran past this one's arrival
                    due += rng.expovariate(1 / mean_gap)
                if loop.time() >= stop:
                    return
                method, path, payload = target.next_call(campaign)
                status, body, _ = await call("next", method, path, payload, headers)
                item = target.item_of(status, body) if isinstance(status, int) else None
                if item == "no work":
                    counts["no_work"] += 1
                    return
                if item is None:
                    await asyncio.sleep(0.1)  # as a page would, instead of hammering
                    continue
                given[item].add(user_id)
                method, path, payload, key = target.submit_call(campaign, item, rng)
                status, body, ended = await call("submit", method, path, payload, headers)
                rating = target.acked_id(status, body) if isinstance(status, int) else None
                if rating is not None:
                    acked.append((user_id, item, key, rating))
                    if start <= ended <= stop:
                        counts["loops"] += 1
                elif isinstance(status, int) and status < 500:
                    await asyncio.sleep(0.1)

        pgids = target.server_pgids()
        load_start = loadavg()
        tasks = [asyncio.create_task(annotator(i, uid, tok)) for i, (uid, tok) in enumerate(annotators)]
        await asyncio.sleep(max(0.0, start - loop.time()))
        busy1, total1 = cpu_times()
        rusage1 = resource.getrusage(resource.RUSAGE_SELF)
        server1 = {name: group_cpu_s([pg]) for name, pg in pgids.items()}
        db_pids = await loop.run_in_executor(None, target.db_pids)  # not on the loop: the calls go on
        db1 = pids_cpu_s(db_pids)
        await asyncio.sleep(max(0.0, stop - loop.time()))
        busy2, total2 = cpu_times()
        rusage2 = resource.getrusage(resource.RUSAGE_SELF)
        server2 = {name: group_cpu_s([pg]) for name, pg in pgids.items()}
        db2 = pids_cpu_s(db_pids)
        load_end = loadavg()
        await asyncio.gather(*tasks)  # calls in flight finish, so every acknowledgement is recorded

    def calls(kind: str) -> dict:
        values = sorted(lat[kind])
        return {"n": len(values), **{f"p{q}_ms": round(percentile(values, q) * 1000, 1) if values else None
                                     for q in (50, 95, 99)},
                "max_ms": round(values[-1] * 1000, 1) if values else None}

    client_cpu = (rusage2.ru_utime + rusage2.ru_stime) - (rusage1.ru_utime + rusage1.ru_stime)
    return {
        "figures": {
            "loops_per_s": round(counts["loops"] / duration, 2),
            "next": calls("next"),
            "submit": calls("submit"),
            "statuses": dict(sorted(statuses.items())),
            "errors": {k: v for k, v in statuses.items() if k.split()[1] not in ("200", "201", "204")},
            "error_samples": samples,
            "no_work_answers": counts["no_work"],
            "late_starts": counts["late_starts"],
            "load_average_1m": {"start": load_start, "end": load_end},
            "machine_cpu_busy": round((busy2 - busy1) / max(1.0, total2 - total1), 3),
            "client_cpu_s_per_s": round(client_cpu / duration, 3),
            # The web server's processes (and Ratchet's Celery worker), not
            # PostgreSQL's: CPU milliseconds per loop in the window.
            "server_cpu_ms_per_loop": {
                name: round((server2[name] - server1[name]) * 1000 / counts["loops"], 1) if counts["loops"] else None
                for name in pgids
            } | ({"postgres": round((db2 - db1) * 1000 / counts["loops"], 1) if counts["loops"] else None} if db_pids else {}),
        },
        "given": given,
        "acked": acked,
    }


async def warm_up(target, annotators: list[list], *, rounds: int = 5, width: int = 48) -> None:
    """Read requests until every server process and thread has loaded the
    application and opened its database connection, so that no level pays
    for that."""
    import aiohttp

    async with aiohttp.ClientSession(base_url=target.base, timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def get(i: int):
            token = annotators[i % len(annotators)][1]
            async with session.get(target.warm_path, headers={"Authorization": f"Token {token}"}) as resp:
                await resp.read()

        for _ in range(rounds):
            await asyncio.gather(*(get(i) for i in range(width)))


def run_target(kind: str, *, db: str, levels: list[tuple[str, int, float | None]], args) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-load-{kind}-"))
    web = {k: v for k, v in (("web_workers", args.web_workers), ("web_threads", args.web_threads)) if v}
    target = Ratchet(workdir, db, web) if kind == "ratchet" else LabelStudio(workdir, db, processes=args.ls_processes)
    results = []
    try:
        t = time.perf_counter()
        target.start()
        seeded = target.seed(annotators=max(n for _, n, _ in levels), levels=[name for name, _, _ in levels],
                             comparisons=args.comparisons)
        print(f"[{kind}/{db}] started and seeded in {time.perf_counter() - t:.0f} s "
              f"({args.comparisons} comparisons per level)", file=sys.stderr)
        asyncio.run(warm_up(target, seeded["annotators"]))
        for (name, n, rate), campaign in zip(levels, seeded["campaigns"]):
            time.sleep(args.settle)  # let the load from seeding die down
            out = asyncio.run(drive(target, campaign, seeded["annotators"][:n], duration=args.duration,
                                    warmup=args.warmup, open_rate=rate, seed=args.seed))
            invariants = target.check(campaign, out["acked"], out["given"])
            violations = sum(v for k, v in invariants.items() if k not in ("ratings_in_db", "acknowledged"))
            row = {"target": kind, "db": db, "level": name, "annotators": n, "open_rate": rate,
                   "duration_s": args.duration, "comparisons": args.comparisons, "overlap": OVERLAP,
                   **out["figures"], "invariants": invariants, "violations": violations}
            results.append(row)
            f = row
            print(f"[{kind}/{db}] {name}: {f['loops_per_s']} loops/s ({f['server_cpu_ms_per_loop']} ms server CPU/loop), next p50/p95/p99 "
                  f"{f['next']['p50_ms']}/{f['next']['p95_ms']}/{f['next']['p99_ms']} ms, submit "
                  f"{f['submit']['p50_ms']}/{f['submit']['p95_ms']}/{f['submit']['p99_ms']} ms, errors {f['errors']}, "
                  f"violations {violations}, load {f['load_average_1m']}", file=sys.stderr)
        for row in results:
            row["server"] = target.describe()
    finally:
        target.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-ratchet", help=argparse.SUPPRESS)
    parser.add_argument("--targets", nargs="+", choices=["ratchet", "label-studio"], default=["ratchet"])
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--annotators", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--open-rate", type=float, help="loops/s in all: open load (Poisson arrivals) instead of closed loops")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before measuring")
    parser.add_argument("--settle", type=float, default=5, help="seconds of quiet before each level")
    # 8,000: the round must outlast the measured minute. With the shipped
    # 2,616 pairs (7,848 ratings at k = 3) a server doing 100+ loops/s rated
    # nearly all of it, and the last free comparisons, scarce and contended,
    # slowed it: the figure measured the round's end, not the server.
    parser.add_argument("--comparisons", type=int, default=8000,
                        help=f"comparisons (tasks) per level, cycling through the {DATA_PAIRS} shipped pairs (default 8000)")
    parser.add_argument("--web-workers", type=int, help="gunicorn processes for Ratchet (default: see WEB)")
    parser.add_argument("--web-threads", type=int, help="threads per gunicorn process (default: see WEB)")
    parser.add_argument("--ls-processes", type=int, help="uWSGI processes for Label Studio (default: its own, cores x 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    args = parser.parse_args()
    if args.seed_ratchet:
        print(json.dumps(seed_ratchet(json.loads(args.seed_ratchet))))
        return

    if args.open_rate:
        levels = [(f"open {args.open_rate:g}/s, {n} annotators", n, args.open_rate) for n in args.annotators]
    else:
        levels = [(f"closed, {n} annotators", n, None) for n in args.annotators]
    results = []
    for kind in args.targets:
        results += run_target(kind, db=args.db, levels=levels, args=args)

    ratios = {}
    for row in results:
        if row["target"] != "ratchet":
            continue
        peer = next((r for r in results if r["target"] == "label-studio" and r["level"] == row["level"]), None)
        if peer and peer["loops_per_s"]:
            ratios[row["level"]] = round(row["loops_per_s"] / peer["loops_per_s"], 1)
    report = {"machine": {"cpus": os.cpu_count(), "load_average_1m_before": loadavg()},
              "results": results, "throughput_ratio_ratchet_to_label_studio": ratios}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written to {path}", file=sys.stderr)
    if ratios:
        for level, ratio in ratios.items():
            print(f"{level}: Ratchet / Label Studio = {ratio}x", file=sys.stderr)


if __name__ == "__main__":
    main()
