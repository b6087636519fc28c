"""Set up the demo that `make run` serves. Safe to run again: what exists is kept.

It prints its steps in order, one line each; the log lines and warnings of
the libraries it runs (Celery, transformers, the training stages) go to
var/log/setup.log, not to the terminal."""
import logging
import tempfile
import warnings
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from annotate.models import Round, TrainingRun
from annotate.services.demo import DEMO_NAME, DEMO_USERS, demo_campaign_create, demo_users_create

SMOLLM2_STORE_NAME = "base/smollm2-135m-instruct"


def _log_to_file(path: Path) -> None:
    """Send every log record and warning of this process to `path` (and none
    to the terminal): the root logger's handlers are replaced, Python's
    warnings become log records, and transformers' progress bars are off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries that set up their own handlers (Celery's, transformers') write through the root's instead.
    for name in ("celery", "kombu", "transformers", "huggingface_hub"):
        lib = logging.getLogger(name)
        for old in list(lib.handlers):
            lib.removeHandler(old)
        lib.propagate = True
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
    except ImportError:  # pragma: no cover - transformers is a requirement
        pass


class Command(BaseCommand):
    help = "Create the demo users, import SmolLM2 into the model store and open the demo campaign's round 0."

    def add_arguments(self, parser):
        parser.add_argument("--base-model", help="use this model folder instead of importing SmolLM2")

    def handle(self, *args, base_model=None, **options):
        from rlhf.store import ModelStore

        from annotate.selectors.rounds import campaign_round_summary
        from annotate.training.stages import STAGES

        log_path = Path(settings.DATA_DIR) / "log" / "setup.log"
        _log_to_file(log_path)
        out = self.stdout
        demo_users_create()
        out.write(f"Demo users: {', '.join(username for username, _ in DEMO_USERS.values())}")
        store = ModelStore(settings.MODEL_STORE)
        if base_model is None:
            target = Path(store.path_for(SMOLLM2_STORE_NAME))
            if not target.exists():
                from rlhf.smollm2 import import_smollm2

                out.write("Base model: importing SmolLM2-135M-Instruct into the model store (once)...")
                with tempfile.TemporaryDirectory(dir=store.root) as tmp:
                    folder = import_smollm2(Path(tmp) / "model", dtype="float32", progress=True)
                    store.publish(folder, SMOLLM2_STORE_NAME)
            base_model = str(target)
        out.write(f"Base model: {base_model}")

        # Run the bootstrap (base model answers round 0) here, in this process,
        # so the demo is ready to rate the moment the server is up. Its stages
        # run nested (each queues the next, eagerly): their lines are printed
        # after, in order, from the run's records.
        from config.celery import app

        app.conf.task_always_eager = True
        opened_before = Round.objects.filter(campaign__name=DEMO_NAME, index=0).exists()
        if not opened_before:
            out.write("Round 0: the base model answers the first questions (a minute or two on a laptop CPU)...")
        campaign = demo_campaign_create(base_model=base_model, admin_username=DEMO_USERS["admin"][0])
        run = campaign.training_runs.filter(kind=TrainingRun.Kind.BOOTSTRAP).order_by("-pk").first()
        if run is not None and not opened_before:
            for stage in STAGES[TrainingRun.Kind.BOOTSTRAP]:
                record = run.stages.get(stage, {})
                seconds = record.get("seconds")
                took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
                out.write(f"Round 0, {stage}: {record.get('status', 'not run')}{took}")
        if not Round.objects.filter(campaign=campaign, index=0).exists():
            self.stderr.write(f"Round 0 did not open: run {run.pk} is {run.status}: {run.error} (see {log_path})")
            raise SystemExit(1)
        out.write(f"Demo campaign '{campaign.name}': {campaign_round_summary(campaign=campaign)}.")
