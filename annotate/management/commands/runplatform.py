"""Web and Celery workers together, for one machine (`make run`). Ctrl-C stops all.

The terminal shows what a person needs and nothing else: each process's own
output (Celery's banners, request lines, warnings, tracebacks) goes to
var/log/<process>.log, and the "Ratchet is up" banner comes last, once the
web server answers and both workers said they are ready, with the round the
demo campaign has open."""
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from annotate.services.demo import DEMO_NAME, DEMO_USERS
from config.celery import Queue
from config.platform import celery_worker_command

# How long the processes get to be ready before the command gives up and
# names the log to read (a cold start imports Django and Celery in three processes).
READY_TIMEOUT_S = 180
# What a Celery worker logs (at INFO) once it consumes: "celery@host ready."
WORKER_READY = " ready."


def log_dir() -> Path:
    return Path(settings.DATA_DIR) / "log"


class Command(BaseCommand):
    help = "Serve the platform and run its workers in one terminal; Ctrl-C stops everything."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")

    def handle(self, *args, addr, **options):
        from annotate.models import Campaign
        from annotate.selectors.rounds import campaign_round_summary

        host, _, port = addr.rpartition(":")
        commands = {
            "web": [sys.executable, "manage.py", "runserver", addr, "--noreload"],
            # Short jobs (round changes) never wait behind a training stage;
            # generation jobs (endpoints) mostly wait on the network, so they
            # share this worker (one process each while they run).
            "worker": celery_worker_command(queues=[Queue.DEFAULT, Queue.ENDPOINTS], concurrency=2, name="default@%h",
                                            beat=True, loglevel="info"),
            # One training stage at a time, as on a GPU.
            "gpu-worker": celery_worker_command(queues=[Queue.GPU], concurrency=1, name="gpu@%h", prefetch_multiplier=1,
                                                loglevel="info"),
        }
        logs = log_dir()
        logs.mkdir(parents=True, exist_ok=True)
        procs, files, starts = {}, {}, {}
        for name, cmd in commands.items():
            path = logs / f"{name}.log"
            files[name] = path.open("ab")
            starts[name] = files[name].tell()  # readiness is read from what this start writes
            files[name].write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            files[name].flush()
            procs[name] = subprocess.Popen(cmd, cwd=settings.BASE_DIR, stdout=files[name], stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)

        def stop(*_, code=0):
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.time() + 20
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    proc.kill()
            for f in files.values():
                f.close()
            sys.exit(code)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

        self.stdout.write(f"Starting the web server and two workers (their output: {logs}/)...")
        self._wait_ready(procs, starts, host or "127.0.0.1", int(port), stop)
        self.stdout.write(self.style.SUCCESS(f"\nRatchet is up: http://{addr}/"))
        self.stdout.write(f"  API docs: http://{addr}/api/docs/    database: {settings.DATABASES['default']['NAME']}")
        for kind, (username, _) in DEMO_USERS.items():
            self.stdout.write(f"  {kind:<9} login: {username} / password: {username}")
        demo = Campaign.objects.filter(name=DEMO_NAME).first()
        if demo is not None:
            self.stdout.write(f"  {demo.name}: {campaign_round_summary(campaign=demo)}")
        self.stdout.write(f"  logs: {logs}/web.log, worker.log, gpu-worker.log")
        self.stdout.write("Ctrl-C stops the web server and the workers.")
        self.stdout.flush()
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    self.stderr.write(f"{name} exited with code {proc.returncode} (see {logs}/{name}.log); "
                                      "stopping the others.")
                    stop(code=1)
            time.sleep(1)

    def _wait_ready(self, procs, starts, host, port, stop) -> None:
        """Until the web server accepts connections and each worker logged
        that it is ready; a process that exits first, or the timeout, ends
        the command with the tail of the log to read."""
        waiting = set(procs)
        deadline = time.time() + READY_TIMEOUT_S
        while waiting:
            for name in sorted(waiting):
                proc = procs[name]
                if proc.poll() is not None:
                    self.stderr.write(f"{name} exited with code {proc.returncode} while starting; "
                                      f"the end of {log_dir()}/{name}.log:\n{_tail(name, starts[name])}")
                    stop(code=1)
                if name == "web":
                    try:
                        with socket.create_connection((host, port), timeout=1):
                            waiting.discard(name)
                    except OSError:
                        pass
                elif WORKER_READY in _read_from(name, starts[name]):
                    waiting.discard(name)
            if time.time() > deadline:
                names = ", ".join(sorted(waiting))
                self.stderr.write(f"{names} not ready after {READY_TIMEOUT_S} s; see {log_dir()}/.")
                stop(code=1)
            time.sleep(0.3)


def _read_from(name: str, offset: int) -> str:
    with (log_dir() / f"{name}.log").open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def _tail(name: str, offset: int, lines: int = 20) -> str:
    return "\n".join(_read_from(name, offset).splitlines()[-lines:])

