"""Simulated raters from a shell: a pool of annotator accounts that rate the
campaign through the same API people use (annotate/services/simulation.py).

    python manage.py simulate_raters --campaign 3 --raters 3 --preference shorter --noise 0.1
    python manage.py simulate_raters --campaign 3 --preference keyword:because --rounds 3 --url http://127.0.0.1:8000
    python manage.py simulate_raters --campaign 3 --preference reward:7 --speed 20 --max-ratings 50
    python manage.py simulate_raters --campaign 3 --preference reference --references data/finegrainedrlhf_qa_feedback_dev.jsonl --review

Without --url the raters' calls go to the services the annotator API
calls, in this process; with it, over HTTP to that server (which must use
this database: the raters' accounts are made here). The default is
--until-round-closed: rate the round open now until nothing is left in it
for the pool.
"""
import json
import time

from django.core.management.base import BaseCommand, CommandError

from annotate.errors import ServiceError
from annotate.models import Campaign
from annotate.services.simulation import simulation_config_build, simulation_run, simulation_until_round
from annotate.simulation.raters import SimulationConfig


class Command(BaseCommand):
    help = "Let simulated annotators rate a campaign through the API; print progress and a summary."

    def add_arguments(self, parser):
        defaults = SimulationConfig()
        parser.add_argument("--campaign", type=int, required=True, help="campaign id")
        parser.add_argument("--raters", type=int, default=defaults.raters, help="simulated annotators in the pool")
        parser.add_argument("--preference", default=defaults.preference,
                            help="shorter | longer | keyword:<word> | reward:<reward model folder or RewardModelVersion id> | "
                                 "reference (closer to --references' answer)")
        parser.add_argument("--strength", type=float, default=defaults.strength,
                            help="logistic scale: P(A) = sigmoid(strength x margin); higher = more decisive")
        parser.add_argument("--noise", type=float, default=defaults.noise, help="probability of a random pick")
        parser.add_argument("--position-bias", type=float, default=defaults.position_bias,
                            help="probability of picking the left answer whatever it says")
        parser.add_argument("--speed", type=float, default=defaults.seconds_per_rating,
                            help="mean seconds per rating (each rater within ±25%%); 0 = as fast as the server answers")
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--label", default=defaults.label, help="names the pool: sim-c<campaign>-<label><i>")
        parser.add_argument("--url", default=None, help="base URL of the platform, e.g. http://127.0.0.1:8000; default: in-process")
        until = parser.add_mutually_exclusive_group()
        until.add_argument("--until-round-closed", action="store_true",
                           help="rate the round open now until nothing is left in it (the default)")
        until.add_argument("--rounds", type=int, default=None,
                           help="rate this many rounds from the one open now, waiting for training to open each")
        parser.add_argument("--max-ratings", type=int, default=None, help="stop after this many ratings in all")
        parser.add_argument("--wait-timeout", type=float, default=defaults.wait_timeout_s,
                            help="seconds to wait for the next round before giving up")
        parser.add_argument("--references", default=defaults.references,
                            help="JSONL of {prompt, reference} (or {prompt, chosen}: the first per question): "
                                 "what the raters write when both answers are bad; default: they never write")
        parser.add_argument("--both-bad-margin", type=float, default=defaults.both_bad_margin,
                            help="with --references: both bad when the reference beats the better answer by this "
                                 "much under the preference (log-odds; default 1.0)")
        parser.add_argument("--no-write", action="store_true",
                            help="with --references: judge by them (the reference preference) but never write")
        parser.add_argument("--review", action="store_true",
                            help="simulated reviewers accept what the raters write, so that it trains")
        parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    def handle(self, *args, **o):
        campaign = Campaign.objects.filter(pk=o["campaign"]).first()
        if campaign is None:
            raise CommandError(f"No campaign {o['campaign']}: the console's campaigns page lists their ids.")
        values = dict(
            preference=o["preference"], strength=o["strength"], noise=o["noise"], position_bias=o["position_bias"],
            seconds_per_rating=o["speed"], raters=o["raters"], seed=o["seed"], label=o["label"],
            max_ratings=o["max_ratings"], rounds=o["rounds"] if o["rounds"] is not None else 1,
            wait_timeout_s=o["wait_timeout"], references=o["references"], both_bad_margin=o["both_bad_margin"],
            review=o["review"], write=not o["no_write"],
        )
        try:
            config, reward_path = simulation_config_build(campaign=campaign, values=values)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        until_round = simulation_until_round(campaign=campaign, config=config)
        where = o["url"] or "in-process"
        self.stdout.write(
            f"campaign {campaign.pk}: {config.raters} simulated raters ({config.preference}, strength {config.strength:g}, "
            f"noise {config.noise:g}, position bias {config.position_bias:g}, {config.seconds_per_rating:g} s a rating) "
            f"through {where}, up to round {until_round}"
        )
        t0 = time.monotonic()
        last = {"printed": 0.0}

        def on_event(kind: str, result) -> None:
            now = time.monotonic()
            if kind != "rating":
                self.stdout.write(f"[{now - t0:7.1f} s] {kind}")
            elif now - last["printed"] >= 1.0:
                last["printed"] = now
                rounds = ",".join(str(r) for r in result.rounds)
                self.stdout.write(f"[{now - t0:7.1f} s] rated {result.ratings} (rounds {rounds}), "
                                  f"skipped {result.skips}, refused {result.lost}")

        try:
            result = simulation_run(campaign=campaign, config=config, reward_path=reward_path, url=o["url"],
                                    until_round=until_round, on_event=on_event,
                                    deadline=time.time() + config.wait_timeout_s)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        if o["json"]:
            self.stdout.write(json.dumps(result.as_dict(), sort_keys=True))
            return
        self.stdout.write(f"done in {result.seconds:.1f} s: {result.ended}")
        self.stdout.write(f"rated {result.ratings}, skipped {result.skips}, refused {result.lost}, "
                          f"rounds {result.rounds}")
        if config.references and config.write:
            self.stdout.write(f"wrote {result.demonstrations} answers on both bad, "
                              f"{result.reviewed} reviewed by the simulated reviewers")
        for name, r in result.raters.items():
            picks = ", ".join(f"{k} {v}" for k, v in sorted(r["choices"].items()))
            stopped = f"; stopped: {r['stopped']}" if r["stopped"] else ""
            self.stdout.write(f"  {name}: {r['ratings']} ({picks}){stopped}")
