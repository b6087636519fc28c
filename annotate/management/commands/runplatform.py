"""Web and Celery workers together, for one machine (`make run`). Ctrl-C stops all."""
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from annotate.services.demo import DEMO_USERS
from config.celery import Queue
from config.platform import celery_worker_command


class Command(BaseCommand):
    help = "Serve the platform and run its workers in one terminal; Ctrl-C stops everything."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")

    def handle(self, *args, addr, **options):
        commands = {
            "web": [sys.executable, "manage.py", "runserver", addr, "--noreload"],
            # Short jobs (round changes) never wait behind a training stage;
            # generation jobs (endpoints) mostly wait on the network, so they
            # share this worker (one process each while they run).
            "worker": celery_worker_command(queues=[Queue.DEFAULT, Queue.ENDPOINTS], concurrency=2, name="default@%h",
                                            beat=True, loglevel="warning"),
            # One training stage at a time, as on a GPU.
            "gpu-worker": celery_worker_command(queues=[Queue.GPU], concurrency=1, name="gpu@%h", prefetch_multiplier=1),
        }
        procs = {name: subprocess.Popen(cmd, cwd=settings.BASE_DIR) for name, cmd in commands.items()}
        self.stdout.write(self.style.SUCCESS(f"\nRatchet is up: http://{addr}/"))
        self.stdout.write(f"  API docs: http://{addr}/api/docs/    database: {settings.DATABASES['default']['NAME']}")
        for kind, (username, _) in DEMO_USERS.items():
            self.stdout.write(f"  {kind:<9} login: {username} / password: {username}")
        self.stdout.write("Ctrl-C stops the web server and the workers.\n")

        def stop(*_):
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.time() + 20
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    proc.kill()
            sys.exit(0)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    self.stderr.write(f"{name} exited with code {proc.returncode}; stopping the others.")
                    stop()
            time.sleep(1)
