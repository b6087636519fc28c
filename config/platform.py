"""The platform's processes started for real, for a test or a benchmark: web
(gunicorn) and a Celery worker with beat, on PostgreSQL + Redis or on the
embedded default (SQLite + the folder broker), spoken to over HTTP as a user
would (annotate/apis/client.py).

    platform = Platform(workdir, backend="services").start()
    admin = platform.user("alice", "campaign_admin", "ml_engineer")   # an ApiClient with alice's token
    ...
    platform.stop()

Used by tests/e2e, tests/reliability and bench/. The worker's command line
is the one `manage.py runplatform` starts its workers with (celery_worker_command).
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis

from annotate.apis.client import ApiClient

ROOT = Path(__file__).resolve().parents[1]


# --- the command lines ---------------------------------------------------------------


def celery_worker_command(*, queues: list[str], concurrency: int, name: str, beat: bool = False,
                          prefetch_multiplier: int | None = None, loglevel: str = "info",
                          app: str = "config") -> list[str]:
    """`celery worker` on these queues. `beat`: this worker also runs beat
    (one per deployment), which queues again the stage of a run whose worker
    died and finds complete rounds whose check was lost. `prefetch_multiplier`
    1: a worker takes one training stage at a time, as on a GPU. `app`: the
    Celery app module (a fault test's wrapper around config's,
    tests/reliability/faults.py)."""
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", ",".join(queues), "-c", str(concurrency),
           "-n", name, "-l", loglevel]
    if beat:
        cmd.append("-B")
    if prefetch_multiplier is not None:
        cmd += ["--prefetch-multiplier", str(prefetch_multiplier)]
    return cmd


# --- ports and Redis databases ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, *, timeout: float, what: str, log: Path) -> None:
    """Return once something listens on 127.0.0.1:port; RuntimeError naming the log after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not start; see {log}")


def claim_redis_db(server_url: str, owner: str) -> int:
    """A database number on the shared Redis (1..15; 0 is the plain suite's)
    that no other running Platform holds, emptied of what a crashed run left.
    A random number let two concurrent runs (CI beside a benchmark) share a
    queue and take each other's tasks. The claim is a key in database 0,
    set only if absent; it expires after a day should stop() never run."""
    client = redis.Redis.from_url(server_url.rsplit("/", 1)[0] + "/0")
    for n in range(1, 16):
        if client.set(f"ratchet-test:db-claim:{n}", owner, nx=True, ex=24 * 3600):
            redis.Redis.from_url(server_url.rsplit("/", 1)[0] + f"/{n}").flushdb()
            return n
    raise RuntimeError("Redis databases 1-15 are all claimed by running Platforms (keys ratchet-test:db-claim:*)")


def release_redis_db(server_url: str, owner: str, n: int) -> None:
    client = redis.Redis.from_url(server_url.rsplit("/", 1)[0] + "/0")
    key = f"ratchet-test:db-claim:{n}"
    if client.get(key) == owner.encode():
        redis.Redis.from_url(server_url.rsplit("/", 1)[0] + f"/{n}").flushdb()
        client.delete(key)


# --- the platform --------------------------------------------------------------------


class Platform:
    """web (gunicorn) + one Celery worker on queues default, gpu and endpoints, on the
    database and broker given (PostgreSQL + Redis, or SQLite + folder)."""

    def __init__(self, workdir: Path, *, backend: str, web_workers: int = 2, web_threads: int = 1,
                 extra_env: dict | None = None):
        """`backend`: "services" (a fresh PostgreSQL database and a Redis
        database of its own, both removed by stop()) or "embedded";
        `web_workers` / `web_threads`: gunicorn's -w and --threads (more
        than one thread selects its gthread worker); `extra_env`: settings
        for every process, e.g. DATABASE_CONN_MAX_AGE (bench/load.py)."""
        self.workdir = Path(workdir)
        self.backend = backend
        self.web_workers, self.web_threads = web_workers, web_threads
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.db_name = None
        self.redis_db: int | None = None
        self.owner = uuid.uuid4().hex
        env = dict(os.environ)
        env.update(
            RATCHET_DATA_DIR=str(self.workdir / "var"),
            RATCHET_MODEL_STORE=str(self.workdir / "var" / "store"),
            HF_HUB_OFFLINE="1",
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY="e2e-" + uuid.uuid4().hex + uuid.uuid4().hex,  # 50+ chars: DEBUG off requires it
            DJANGO_SECURE_SSL="0",  # plain http on loopback: no HTTPS redirect, no secure-only cookies
            PYTHONUNBUFFERED="1",
            RATCHET_TRAINING_RETRY_DELAY="1",
            # Find a dead worker's stage within seconds, not minutes.
            RATCHET_HEARTBEAT_S="1",
            RATCHET_STALE_AFTER_S="8",
            RATCHET_REQUEUE_EVERY_S="2",
            # Find a complete round whose check was lost (broker down) within seconds.
            RATCHET_ROUND_SWEEP_EVERY_S="2",
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
        )
        if backend == "services":
            self.admin_dsn = os.environ.get("RATCHET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
            self.db_name = "ratchet_e2e_" + uuid.uuid4().hex[:10]
            env["DATABASE_URL"] = self.admin_dsn.rsplit("/", 1)[0] + "/" + self.db_name
            self.redis_url = os.environ.get("RATCHET_TEST_REDIS", "redis://127.0.0.1:6379/0")
            if "CELERY_BROKER_URL" not in (extra_env or {}):  # a fault test may bring its own server
                self.redis_db = claim_redis_db(self.redis_url, self.owner)
                env["CELERY_BROKER_URL"] = self.redis_url.rsplit("/", 1)[0] + f"/{self.redis_db}"
        elif backend == "embedded":
            env.pop("DATABASE_URL", None)
            env.pop("CELERY_BROKER_URL", None)
        else:
            raise ValueError(f"backend is 'services' or 'embedded', not {backend!r}")
        env.update(extra_env or {})
        self.env = env

    # -- lifecycle -----------------------------------------------------------
    def manage(self, *args: str, check=True) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout.strip()

    def start(self, worker_env: dict | None = None, worker_app: str = "config") -> "Platform":
        """`worker_app`: the Celery app module the worker runs (a fault test's
        wrapper around config's, tests/reliability/faults.py)."""
        if self.db_name:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.manage("migrate", "--no-input", "-v0")
        self._spawn(
            "web",
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{self.port}",
             "-w", str(self.web_workers), "--threads", str(self.web_threads), "--timeout", "120"],
        )
        self.start_worker(worker_env, app=worker_app)
        wait_port(self.port, timeout=60, what="web", log=self.workdir / "web.log")
        return self

    def start_worker(self, extra_env: dict | None = None, app: str = "config") -> subprocess.Popen:
        # Beat on: tests/reliability/test_worker_killed.py needs the stage of
        # a killed worker queued again.
        command = celery_worker_command(queues=["default", "gpu", "endpoints"], concurrency=1, name=f"e2e-{uuid.uuid4().hex[:6]}@%h",
                                        beat=True, prefetch_multiplier=1, app=app)
        return self._spawn("worker", command, extra_env)

    def _spawn(self, name: str, cmd: list[str], extra_env: dict | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.name = name
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}.log ---\n" + (self.workdir / f"{p.name}.log").read_text(errors="replace")[-6000:]
            for p in self.procs
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.db_name:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if self.redis_db is not None:
            release_redis_db(self.redis_url, self.owner, self.redis_db)
            self.redis_db = None

    # -- users ---------------------------------------------------------------
    def user(self, username: str, *roles: str) -> ApiClient:
        """Create (or reset) the user with these roles, password pw-<username>; a client with their token."""
        args = ["ratchet_user", username, "--password", "pw-" + username]
        for role in roles:
            args += ["--role", role]
        return ApiClient(self.base, self.manage(*args).splitlines()[-1])

    def wait_for(self, predicate, *, timeout: float, what: str, interval: float = 0.5):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")


def rate_everything(annotators: list[ApiClient], campaign_id: int, rng: random.Random) -> int:
    """Each annotator takes work until none is left; returns ratings made.
    Asserts every answer is the expected one, and that the next API never
    says which policy wrote a side (blind rating)."""
    made = 0
    active = list(annotators)
    while active:
        for client in list(active):
            status, body = client.post(f"/api/campaigns/{campaign_id}/next/")
            if status == 204:
                active.remove(client)
                continue
            assert status == 200, body
            assert "policy" not in str(body.keys()), "the annotator API must not reveal which model wrote a side"
            choice = rng.choice(["A", "A", "B", "tie"])
            payload = {
                "comparison": body["comparison"],
                "choice": choice,
                "idempotency_key": str(uuid.uuid4()),
                "time_on_task_ms": rng.randint(2000, 9000),
            }
            if choice in ("A", "B"):
                payload["strength"] = rng.randint(1, 3)
            status, rating = client.post("/api/ratings/", payload)
            assert status == 201, rating
            made += 1
    return made
