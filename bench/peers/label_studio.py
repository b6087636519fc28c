"""Label Studio, the peer of bench/load.py: installed in a venv of its own
(bench/peers/label_studio.sh), run under uWSGI with the settings of its own
image (label_studio_uwsgi.ini) on its own database, seeded with annotator
accounts through its ORM (label_studio_seed.py, run by its interpreter) and
with one project per level through its API: a <Pairwise> labeling config,
maximum_annotations = k and the tasks Ratchet gets."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import uuid
from pathlib import Path

import psycopg

from annotate.apis.client import ApiClient
from bench.load_target import OVERLAP, ROOT, LoadTarget, pairs
from config.platform import free_port, wait_port

PG_ADMIN = os.environ.get("RATCHET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
LS_VENV = ROOT / "bench" / ".peers" / "label-studio"
LS_INI = ROOT / "bench" / "peers" / "label_studio_uwsgi.ini"
LS_CONFIG = (
    '<View><Header value="$prompt"/>'
    '<Pairwise name="comparison" toName="answer_a,answer_b"/>'
    '<Text name="answer_a" value="$answer_a"/><Text name="answer_b" value="$answer_b"/></View>'
)


class LabelStudio(LoadTarget):
    name = "label-studio"
    warm_path = "/api/projects/"
    # uWSGI's HTTP router, as Label Studio configures it, closes each
    # connection after its response: the client must not reuse one.
    keepalive = False
    next_method, next_path, no_work_status, item_key = "GET", "/api/projects/{campaign}/next/", 404, "id"
    submit_path = "/api/tasks/{item}/annotations/"

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
            self.postgres_dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db_name
        else:
            self.db_name = None
            env.update(DJANGO_DB="sqlite", DATABASE_NAME=str(self.workdir / "ls-data" / "label_studio.sqlite3"))
            self.sqlite_path = env["DATABASE_NAME"]
        self.env = env
        self.admin = ApiClient(self.base, self.admin_token, timeout_s=600)

    def describe(self) -> dict:
        return {"version": self.version, "server": f"uWSGI, {self.processes or 'cores x 2 ='} "
                f"{'' if self.processes else os.cpu_count() * 2} processes x 1 thread (its image's uwsgi.ini)",
                "database": "PostgreSQL" if self.db == "postgres" else "SQLite"}

    def start(self) -> None:
        (self.workdir / "ls-data").mkdir(parents=True, exist_ok=True)
        if self.db_name:
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
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _api(self, method: str, path: str, body=None):
        """Label Studio's API as its admin; an answer other than 2xx is an error."""
        status, answer = self.admin.request(method, path, body)
        if not 200 <= status < 300:
            raise RuntimeError(f"Label Studio answered {method} {path} with {status}: {str(answer)[:500]}")
        return answer

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
            self.query("ANALYZE")
        return {"annotators": users, "campaigns": projects}

    def rating(self, item: int, rng: random.Random, key: str) -> dict:
        # Label Studio takes no idempotency key: `key` is only the client's own record.
        selected = rng.choice(["left", "left", "right", "right", "left"])
        return {"result": [{"from_name": "comparison", "to_name": "answer_a,answer_b", "type": "pairwise",
                            "value": {"selected": selected}}],
                "lead_time": rng.randint(2000, 30000) / 1000}

    def check(self, project: int, acked: list[tuple], given: dict) -> dict:
        live = "project_id = ? AND was_cancelled = ?"
        over_k = self.query(
            f"SELECT task_id, count(*) FROM task_completion WHERE {live} GROUP BY task_id HAVING count(*) > ?",
            (project, False, OVERLAP))
        duplicates = self.query(
            f"SELECT task_id, completed_by_id, count(*) FROM task_completion WHERE {live} "
            "GROUP BY task_id, completed_by_id HAVING count(*) > 1", (project, False))
        stored = {row[0]: (row[1], row[2]) for row in self.query(
            "SELECT id, completed_by_id, task_id FROM task_completion WHERE project_id = ?", (project,))}
        missing = [a for a in acked if stored.get(a[3]) != (a[0], a[1])]
        return self.invariants(stored=len(stored), acked=acked, missing=missing, over_k=over_k,
                               duplicates=duplicates, given=given)
