"""Set up the demo that `make run` serves. Safe to run again: what exists is kept."""
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from annotate.models import Round
from annotate.services.demo import DEMO_USERS, demo_campaign_create, demo_users_create

SMOLLM2_STORE_NAME = "base/smollm2-135m-instruct"


class Command(BaseCommand):
    help = "Create the demo users, import SmolLM2 into the model store and open the demo campaign's round 0."

    def add_arguments(self, parser):
        parser.add_argument("--base-model", help="use this model folder instead of importing SmolLM2")

    def handle(self, *args, base_model=None, **options):
        from rlhf.store import ModelStore

        demo_users_create()
        store = ModelStore(settings.MODEL_STORE)
        if base_model is None:
            target = Path(store.path_for(SMOLLM2_STORE_NAME))
            if not target.exists():
                from rlhf.smollm2 import import_smollm2

                self.stdout.write("Importing SmolLM2-135M-Instruct into the model store (once)...")
                with tempfile.TemporaryDirectory(dir=store.root) as tmp:
                    folder = import_smollm2(Path(tmp) / "model", dtype="float32", progress=True)
                    store.publish(folder, SMOLLM2_STORE_NAME)
            base_model = str(target)

        # Run the bootstrap (base model answers round 0) here, in this process,
        # so the demo is ready to rate the moment the server is up.
        from config.celery import app

        app.conf.task_always_eager = True
        campaign = demo_campaign_create(base_model=base_model, admin_username=DEMO_USERS["admin"][0])
        round0 = Round.objects.filter(campaign=campaign, index=0).first()
        run = campaign.training_runs.order_by("-pk").first()
        if round0 is None:
            self.stderr.write(f"Round 0 did not open: run {run.pk} is {run.status}: {run.error}")
            raise SystemExit(1)
        self.stdout.write(f"Demo campaign '{campaign.name}' has round {round0.index} open "
                          f"({round0.comparisons.count()} comparisons).")
