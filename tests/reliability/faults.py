"""The platform's Celery app with a fault injected into one training stage,
for worker processes started by fault tests:

    RATCHET_FAULT=kill:import celery -A tests.reliability.faults worker ...

`kill:<stage>`: the stage SIGKILLs its own process (after its attempt is
counted, like a segfault or the OOM killer would); `hang:<stage>`: the stage
works on and never reports to its Reporter (a long model load), touching
RATCHET_FAULT_MARKER with its pid every 0.2 s. Everything else is the real
worker: broker, database, acks, redelivery, beat."""
import os
import signal
import time
from pathlib import Path

from celery.signals import worker_process_init

from config.celery import app  # noqa: F401  (the app `celery -A` runs)


def _kill(run, reporter):
    os.kill(os.getpid(), signal.SIGKILL)


def _hang(run, reporter):
    marker = Path(os.environ["RATCHET_FAULT_MARKER"])
    while True:
        marker.write_text(f"{os.getpid()} {time.time()}")
        time.sleep(0.2)


@worker_process_init.connect
def _inject(**_):
    """In each pool process: swap the named stage's function for the fault."""
    kind, _, stage = os.environ["RATCHET_FAULT"].partition(":")
    from annotate.training import steps

    fault = {"kill": _kill, "hang": _hang}[kind]
    for key in list(steps.STAGE_FUNCTIONS):
        if key[1] == stage:
            steps.STAGE_FUNCTIONS[key] = fault
