"""The Celery app. Workers: `celery -A config worker -Q default` and
`celery -A config worker -Q gpu --concurrency 1 --prefetch-multiplier 1`."""
import os
from enum import StrEnum

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class Queue(StrEnum):
    DEFAULT = "default"  # leases, round changes: short and cheap
    GPU = "gpu"  # snapshot, reward, policy, generate: one at a time per GPU


app = Celery("ratchet")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
