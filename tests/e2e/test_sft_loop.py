"""Post-training's two halves on the real processes (gunicorn + a Celery
worker, PostgreSQL + Redis): a shortened bench/sft_loop.py with the tiny
model, one seed, 2 rounds. Simulated raters rate over HTTP and, on both bad,
write the question's reference answer with the rating; simulated reviewers
accept it; each round's training run fine-tunes on it (the sft stage) and
the DPO step starts from the SFT model. A DPO-alone campaign gets the same
number of human actions; both are judged on held-out questions."""
import json

import pytest

from bench.data import DATA
from bench.sft_loop import ARMS, parse_args, sft_loop, splits
from annotate.simulation.preference import references_load
from config.platform import Platform

pytestmark = pytest.mark.e2e

DUMP = """
import json
from annotate.models import Demonstration, PolicyVersion, Rating, SFTModelVersion
c = {cid}
print(json.dumps({{
    "sft": list(SFTModelVersion.objects.filter(campaign_id=c).order_by("version").values(
        "version", "start__version", "sha256", "dataset_sha256", "dataset_path", "demonstration_ids")),
    "policies": list(PolicyVersion.objects.filter(campaign_id=c).order_by("version").values(
        "version", "parent__version", "sft_model__version")),
    "demonstrations": list(Demonstration.objects.filter(comparison__round__campaign_id=c).order_by("id").values(
        "id", "text", "status", "origin", "rating__choice", "comparison__prompt__text", "annotator__username")),
    "both_bad": Rating.objects.filter(comparison__round__campaign_id=c, choice="both_bad").count(),
}}))
"""


def test_sft_and_dpo_train_on_what_simulated_raters_write_and_the_bench_compares_the_arms(
    services_platform: Platform, tmp_path
):
    # given: 2 rounds of 8 comparisons, 2 raters, 32 held-out questions, one seed
    args = parse_args(["--model", "tiny", "--rounds", "2", "--comparisons", "8", "--raters", "2", "--seeds", "1",
                       "--eval-prompts", "32"])
    # when
    report = sft_loop(args, tmp_path, platform=services_platform)
    # then: the sft+dpo campaign fine-tuned in the loop, from the base, and its policy step started from it
    seed = report["per_seed"][0]
    cid = seed["arms"]["sft+dpo"]["campaign"]
    db = json.loads(services_platform.manage("shell", "-c", DUMP.format(cid=cid)).splitlines()[-1])
    assert db["sft"], db
    first = db["sft"][0]
    assert first["version"] == 1 and first["start__version"] == 0
    assert len(first["sha256"]) == 64 and len(first["dataset_sha256"]) == 64 and first["dataset_path"]
    assert {"version": 1, "parent__version": 0, "sft_model__version": 1} in db["policies"]  # base -> sft -> policy
    # and what was accepted is exactly what the raters wrote: the reference of
    # each question they called both bad, written from nothing, one per both-bad rating
    references = references_load(DATA)
    demos = db["demonstrations"]
    assert len(demos) == db["both_bad"] == seed["arms"]["sft+dpo"]["demonstrations"] > 0
    assert all(d["status"] == "accepted" and d["origin"] == "" and d["rating__choice"] == "both_bad" for d in demos)
    assert all(d["text"] == references[d["comparison__prompt__text"]] for d in demos)
    assert all(d["annotator__username"].startswith(f"sim-c{cid}-r") for d in demos)
    # and every SFT model learned accepted demonstrations only, none twice
    trained = [i for v in db["sft"] for i in v["demonstration_ids"]]
    assert len(trained) == len(set(trained)) and set(trained) <= {d["id"] for d in demos}
    # the DPO-alone campaign wrote nothing, and cost the same actions up to rounding
    alone = seed["arms"]["dpo"]
    assert alone["demonstrations"] == 0 and all(r["sft"] is None for r in alone["rounds"])
    assert abs(alone["actions"] - seed["arms"]["sft+dpo"]["actions"]) <= args.rounds * args.raters / 2 or (
        alone["comparisons_per_round"] == args.comparisons)
    # and the figures are computed, on held-out questions never imported
    assert report["eval_prompts"] == 32 and not set(splits(32)["test"]) & set(splits(32)["train"])
    for arm in ARMS:
        pooled = report["arms"][arm]["pooled"]
        assert pooled["n"] == 32 and 0.0 <= pooled["win_rate"] <= 1.0
        assert 0.0 <= pooled["ci95"][0] <= pooled["win_rate"] <= pooled["ci95"][1] <= 1.0
    paired = report["difference"]["paired_questions"]
    assert paired["ci95"][0] <= paired["mean"] <= paired["ci95"][1]
    assert paired["mean"] == pytest.approx(seed["difference"])
