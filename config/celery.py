"""The Celery app. Workers: `celery -A config worker -Q default,endpoints` and
`celery -A config worker -Q gpu --concurrency 1 --prefetch-multiplier 1`."""
import os
from enum import StrEnum

from celery import Celery, Task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class Queue(StrEnum):
    DEFAULT = "default"  # round checks, sweeps, simulated raters, statistics refreshes: no GPU
    GPU = "gpu"  # snapshot, reward, policy, generate: one at a time per GPU
    ENDPOINTS = "endpoints"  # generation jobs: asking OpenAI-compatible servers, mostly waiting on the network


app = Celery("ratchet")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def task_named(name: str) -> Task:
    """The task registered under `name`, for code that sends its messages.
    Senders name a task instead of importing it: annotate/tasks.py imports
    the services, so a service importing a task back would close a ring. The
    name is the message contract (<module>.<function>, as in
    CELERY_TASK_ROUTES). A process that has not loaded the installed apps'
    tasks.py modules (the web process) imports them the first time; only
    them: the worker's way (loader.import_default_modules) would also set
    Django up again, resetting its logging, and run the system checks."""
    if name not in app.tasks:
        app.autodiscover_tasks(force=True)
    return app.tasks[name]
