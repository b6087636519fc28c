"""Trigger training from a shell, as the console's "Train now" and
POST /api/campaigns/{id}/train/ do:

    python manage.py train 3 --method rloo --config '{"reward": {"epochs": 2}}' [--sft | --no-sft] --wait
"""
import argparse
import json
import time

from django.core.management.base import BaseCommand, CommandError

from annotate.errors import ServiceError
from annotate.models import Campaign, TrainingRun
from annotate.training.runs import training_run_start
from annotate.training.stages import FINISHED


class Command(BaseCommand):
    help = "Close the campaign's collecting round and train on every rating so far; print the run."

    def add_arguments(self, parser):
        parser.add_argument("campaign_id", type=int)
        # Not `choices=`: the service's message names the allowed methods and stays the one list.
        parser.add_argument(
            "--method", default=None, help=f"policy method ({', '.join(Campaign.Method.values)}); default: the campaign's"
        )
        parser.add_argument("--config", default="", help='JSON overrides, e.g. \'{"policy": {"beta": 0.05}}\'')
        parser.add_argument(
            "--sft", action=argparse.BooleanOptionalAction, default=None,
            help="--sft: run the sft stage now, whatever the campaign's sft_schedule; --no-sft: not this run",
        )
        parser.add_argument("--wait", action="store_true", help="poll until the run finishes; exit 1 unless it succeeded")
        parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls with --wait")

    def handle(self, *args, campaign_id, method, config, wait, poll, sft=None, **options):
        campaign = Campaign.objects.filter(pk=campaign_id).first()
        if campaign is None:
            raise CommandError(f"No campaign {campaign_id}: the console's campaigns page lists their ids.")
        try:
            overrides = json.loads(config) if config.strip() else {}
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not valid JSON: {exc}") from exc
        try:
            run = training_run_start(campaign=campaign, overrides=overrides, method=method, sft=sft)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"run {run.pk}: {run.status} at {run.stage} (method {run.config.get('method', campaign.method)})")
        if not wait:
            return
        seen = None
        while True:
            run = TrainingRun.objects.get(pk=run.pk)
            now = (run.stage, run.status, round(run.progress, 2))
            if now != seen:
                seen = now
                self.stdout.write(f"run {run.pk}: {run.stage} {run.status} {run.progress:.0%}")
            if run.status in FINISHED:
                break
            time.sleep(poll)
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}: {run.error}")
        self.stdout.write(json.dumps(run.metrics, sort_keys=True))
